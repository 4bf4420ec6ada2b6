"""absl plumbing shared by the entry points: one-line errors for bad flags and input."""

import json
import os
import sys

from absl import app, flags


def keras_backend():
    """The backend Keras will load, read as Keras reads it (KERAS_BACKEND, then
    ~/.keras/keras.json), without importing Keras."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as file:
            return json.load(file).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def quiet_tensorflow_import():
    """Under the TensorFlow backend, import TensorFlow with its C++ start-up banner
    (oneDNN, CUDA stub notices) kept off stderr, so that an entry point's own messages are
    what the user reads. TensorFlow's C++ log level defaults to 3 (its harmless grappler
    and CUDA-probe errors hidden; Python exceptions still surface). Other backends never
    import TensorFlow."""
    if keras_backend() != "tensorflow":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def parse_flags(argv):
    """absl flag parsing whose errors are one line on stderr and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        first = (str(err).strip().splitlines() or [""])[0]  # absl may list several
        sys.stderr.write(f"{os.path.basename(argv[0])}: error: {first}\n")
        sys.exit(2)


def check_args(argv):
    """Stop with one line on positional arguments (required flags are absl's:
    `flags.mark_flags_as_required`, reported by `parse_flags`)."""
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")


def require_together(first, second):
    """absl validator: `--second` is required whenever `--first` is given."""
    flags.register_multi_flags_validator(
        [first, second], lambda values: not values[first] or bool(values[second]),
        message=f"--{second} is required with --{first}")


def call(function, *args, errors=(ValueError, OSError)):
    """`function(*args)`, a user's error in it (`errors`: bad flags, files, data) ending the
    program with one line and exit status 2 instead of a traceback."""
    try:
        return function(*args)
    except errors as err:
        fail(str(err))


def fail(message):
    """Stop with a one-line message and exit status 2."""
    sys.stderr.write(f"error: {message}\n")
    sys.exit(2)


def run(main):
    """`app.run(main)` with one-line flag errors."""
    app.run(main, flags_parser=parse_flags)

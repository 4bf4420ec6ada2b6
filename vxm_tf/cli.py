"""absl plumbing shared by the entry points: one-line errors for bad flags and input."""

import json
import os
import sys
import textwrap

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
            import tensorflow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    # retracing notices and deprecation chatter are for developers, not a command's log
    tensorflow.get_logger().setLevel("ERROR")


def fit_verbosity(verbose, stream=None):
    """Keras `fit`'s `verbose` for the flag value: 1 (a progress bar redrawn in place) only
    when `stream` (default stdout) is a terminal, else 2 (one line per epoch), so that logs
    written to files hold no escape codes or carriage returns."""
    stream = sys.stdout if stream is None else stream
    if verbose == 1 and not (hasattr(stream, "isatty") and stream.isatty()):
        return 2
    return verbose


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


HELP_FLAGS = ("-h", "--help", "-help", "--h", "-?")


def _flag_line(flag):
    """`  --name=DEFAULT  help` for one absl flag, wrapped at 88 columns."""
    default = flag.default_as_str.strip("'") if flag.default is not None else ""
    if isinstance(flag.default, bool):
        head = f"--[no]{flag.name}" + (" (default: on)" if flag.default else "")
    else:
        head = f"--{flag.name}" + (f"={default}" if default else "")
    return f"  {head}\n" + textwrap.fill(flag.help, 88, initial_indent=" " * 6,
                                         subsequent_indent=" " * 6)


def usage(doc, groups, flag_values=flags.FLAGS, hide=()):
    """A command's `--help`: its docstring, then its flags under the titles of `groups`
    (`[(title, [flag names])]`); flags of vxm_tf's own that no group names (nor `hide`:
    flags defined but without effect in this command) follow under "other", and absl's,
    TensorFlow's and the test framework's are left out (`--helpfull` lists those)."""
    lines, listed = [doc.strip(), ""], set(hide)
    for title, names in groups:
        names = [n for n in names if n in flag_values and n not in hide]
        if not names:
            continue
        lines.append(f"{title}:")
        lines.extend(_flag_line(flag_values[n]) for n in names)
        lines.append("")
        listed.update(names)
    own = [f.name for module, defined in flag_values.flags_by_module_dict().items()
           if module.startswith("vxm_tf") or module in (sys.argv[0], "__main__")
           for f in defined if f.name not in listed]
    if own:
        lines.append("other:")
        lines.extend(_flag_line(flag_values[n]) for n in dict.fromkeys(own))
        lines.append("")
    lines.append("--flagfile=FILE reads flags from a file; --helpfull lists every flag, "
                 "including absl's and TensorFlow's.")
    return "\n".join(lines)


def run(main, doc="", groups=(), hide=()):
    """`app.run(main)` with one-line flag errors; `--help` prints `usage(doc, groups)`."""
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        print(usage(doc, groups, hide=hide))
        sys.exit(0)
    app.run(main, flags_parser=parse_flags)

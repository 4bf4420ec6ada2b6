"""Atomic file writing: the one way vxm_tf writes an output.

Every file is written under a temporary name in its own folder and renamed over the final
name, so an interrupted write never leaves half a file and a reader sees the old file or the
new one. The final file gets the permissions a newly created file gets under the process's
umask (the temporary file's 0600 is not kept).
"""

import contextlib
import csv
import hashlib
import json
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# the open `all_or_nothing` groups: each a list of (temporary, final) renames it holds back
_GROUPS = []


@contextlib.contextmanager
def all_or_nothing():
    """Files written inside (through `atomic_path`) appear together when the block ends
    without an error, and none of them when it raises: a command that writes several
    outputs leaves all of them or none."""
    group = []
    _GROUPS.append(group)
    try:
        yield
    except BaseException:
        for tmp, _ in group:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise
    finally:
        _GROUPS.remove(group)
    try:  # renames within a folder checked beforehand: the step that can hardly fail
        for tmp, path in group:
            os.replace(tmp, path)
    except OSError as err:
        for tmp, _ in group:
            if os.path.exists(tmp):
                os.remove(tmp)
        raise OSError(f"{path}: cannot write ({err.strerror or err})") from None


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffixes, for writers that choose the
    format by name) to write to; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-",
                                   suffix="".join(path.suffixes))
    except OSError as err:
        raise OSError(f"{path}: cannot write ({err.strerror})") from None
    os.close(fd)
    held = False
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        if _GROUPS:  # renamed with the rest of its group
            _GROUPS[-1].append((tmp, path))
            held = True
        else:
            os.replace(tmp, path)
    except OSError as err:  # a full disk, a folder in the way: the user's path, not ours
        raise OSError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if not held and os.path.exists(tmp):
            os.remove(tmp)


def check_output_folder(path, flag="--out_dir"):
    """`path` can receive a run's files: an existing writable folder, or a new folder whose
    parent exists and is writable. `ValueError` naming the flag otherwise, before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag}={path}: a file, not a folder")
    folder = path if path.is_dir() else path.parent
    if not folder.is_dir():
        raise ValueError(f"{flag}={path}: parent folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}={path}: folder {folder} is not writable")


def same_file(a, b):
    """Whether paths `a` and `b` name one file: the same resolved path (symbolic links,
    `..`), or, both existing, the same file under two names (a hard link)."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_not_inputs(output, inputs, flag):
    """`ValueError` when `output` is the same file as one of `inputs` (a flag value naming
    an input would be overwritten)."""
    for name, path in inputs.items():
        if path and same_file(path, output):
            raise ValueError(f"{flag}={output} would overwrite the input {name}")


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as file:
        file.write(text)


def write_json(path, payload):
    """`payload` as indented JSON (values JSON cannot hold written with `str`)."""
    write_text(path, json.dumps(payload, indent=1, default=str) + "\n")


def write_csv(path, fields, rows):
    """`rows` (dicts) under a header of `fields`."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def save_figure(fig, path, **kwargs):
    """A matplotlib figure as PNG (`savefig` keyword arguments passed on)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **kwargs)


def sha256(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

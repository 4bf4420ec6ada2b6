"""Atomic file writing: the one way vxm_tf writes an output.

Every file is written under a temporary name in its own folder and renamed over the final
name, so an interrupted write never leaves half a file and a reader sees the old file or the
new one. The final file gets the permissions a newly created file gets under the process's
umask (the temporary file's 0600 is not kept).
"""

import contextlib
import csv
import json
import os
import tempfile
from pathlib import Path


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same suffixes, for writers that choose the
    format by name) to write to; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix="".join(path.suffixes))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as file:
        file.write(text)


def write_bytes(path, payload):
    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        file.write(payload)


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

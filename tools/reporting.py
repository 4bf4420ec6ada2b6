"""One way for the report tools to build and write a markdown report: tables, figures and the
command that made it, written atomically.

    lines = [f"# {title}", "", intro, ""]
    lines += reporting.table(["model", "Dice"], [[name, f"{dice:.3f}"] for ...])
    lines += ["", *reporting.figures(["dice.png"]), ""]
    lines += reporting.command_block([reporting.command_line("my_report.py", argv)])
    reporting.write(out, lines)

Cells are formatted by the caller (each report chooses its precision); an empty cell is
written `| |`.
"""

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from vxm_tf import files


def row(cells: Sequence) -> str:
    """One table row: `| a | b |` (an empty cell: `| |`)."""
    return "|" + "|".join(f" {c} " if str(c) else " " for c in cells) + "|"


def table(header: Sequence, rows: Iterable[Sequence] = ()) -> list[str]:
    """A markdown table's lines: the header, its `|---|` rule, then one line per row."""
    return [row(header), "|---" * len(header) + "|", *(row(r) for r in rows)]


def figures(paths: Iterable[str]) -> list[str]:
    """Image lines `![path](path)`, one per figure (paths relative to the report)."""
    return [f"![{p}]({p})" for p in paths]


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """How a report tool was run (`argv`: its arguments, default the program's)."""
    return f"python tools/{script} " + " ".join(sys.argv[1:] if argv is None else argv)


def command_block(commands: Iterable[str], intro: str = "Command:") -> list[str]:
    """The report's last section: `intro`, then the commands in a shell code block."""
    return [intro, "", "```sh", *commands, "```"]


def write(path: str | Path, lines: Sequence[str] | str) -> str:
    """Write the report to `path` atomically: `lines` joined by newlines and ended by one
    (or a text as it is); returns the text."""
    text = lines if isinstance(lines, str) else "\n".join(lines) + "\n"
    files.write_text(str(path), text)
    return text


def at_least(minimum: float, kind: type = int):
    """An argparse `type`: a finite number of `kind` no smaller than `minimum`, or argparse's
    one-line error naming the flag, before any work."""
    import argparse
    import math

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number of at least {minimum:g}, "
                                             f"got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def markdown_path(text: str) -> Path:
    """An argparse `type` for a report's `--out`: a `.md` file in an existing folder, not a
    folder (so it cannot name a model, an image or any other input of the tool)."""
    import argparse

    path = Path(text)
    if path.suffix != ".md":
        raise argparse.ArgumentTypeError(f"{text}: a report is a markdown file ending in .md")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: a folder stands there")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: folder {path.parent} does not exist")
    return path

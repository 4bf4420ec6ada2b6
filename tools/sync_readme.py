"""Copy result tables from the generated reports into the README and reports/README.md
(`make readme`), so that no figure in them is typed by hand or drifts from its report.

A block in the README

    <!-- table: reports/oasis2d_training.md 1 -->
    ...
    <!-- end table -->

is replaced by the first markdown table of that report (the number counts its tables).
`--check` changes nothing and exits 1 when a block differs from its report (what the test
suite runs).
"""

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- table: (\S+) (\d+) -->\n)(.*?)(<!-- end table -->)", re.S)


def tables(text):
    """The markdown tables of `text`, in order, each as its lines joined."""
    found, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            found.append("\n".join(current))
            current = []
    if current:
        found.append("\n".join(current))
    return found


def synced(readme, root=ROOT):
    """`readme` with every block replaced by its report's table; `ValueError` naming a
    missing report or table."""
    def replace(match):
        head, report, index = match.group(1), match.group(2), int(match.group(3))
        path = root / report
        if not path.is_file():
            raise ValueError(f"README block names {report}, which does not exist")
        found = tables(path.read_text())
        if not 1 <= index <= len(found):
            raise ValueError(f"{report} has {len(found)} tables, the README asks for {index}")
        return f"{head}{found[index - 1]}\n{match.group(5)}"
    return BLOCK.sub(replace, readme)


# the documents whose blocks `make readme` fills (a block's report path is relative to the
# document's folder)
DOCUMENTS = (ROOT / "README.md", ROOT / "reports" / "README.md")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", nargs="*", default=[str(p) for p in DOCUMENTS])
    parser.add_argument("--check", action="store_true", help="report drift, change nothing")
    args = parser.parse_args(argv)
    for path in args.readme:
        readme = Path(path)
        text = readme.read_text()
        try:
            new = synced(text, readme.parent)
        except ValueError as err:
            sys.exit(f"error: {readme}: {err}")
        if args.check:
            if new != text:
                sys.exit(f"error: {readme} differs from the reports; run `make readme`")
            continue
        if new != text:
            from vxm_tf import files

            files.write_text(readme, new)


if __name__ == "__main__":
    main()

"""The one-epoch selection runs behind flags/ncc.cfg and flags/mse.cfg, and their table
(`make selection-report`): each variant trains one epoch of neurite-OASIS 2D from the
blog's plain settings and is scored on validation subjects only (never the test ones).

    python tools/report_selection.py --runs_dir=runs/selection \
        --out=reports/oasis2d_selection.md

A variant whose run folder already holds a finished epoch is not trained again, so the
report regenerates from the run folders; missing ones are trained (about 2.5 minutes each
on the 2-core CPU machine).
"""

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import reporting

# Common to every selection run: the 2D protocol for one epoch, 30 pairs of 6 validation
# subjects (more than the final runs' 12, for a steadier comparison).
COMMON = ["--flagfile=flags/oasis2d.cfg", "--epochs=1", "--val=6", "--val_pairs=30"]
COSINE = ["--lr=1e-3", "--schedule=cosine", "--final_lr_fraction=0.01"]

# (table, name, description, flags). The last row of each table is the flagfile kept.
VARIANTS = [
    ("NCC", "ncc-blog", "blog: lambda 1, Adam 1e-4 constant, int_resolution 2",
     ["--flagfile=flags/blog_ncc.cfg"]),
    ("NCC", "ncc-lr1e-3", "Adam 1e-3 constant",
     ["--flagfile=flags/blog_ncc.cfg", "--lr=1e-3"]),
    ("NCC", "ncc-cosine", "Adam 1e-3 cosine", ["--flagfile=flags/blog_ncc.cfg", *COSINE]),
    ("NCC", "ncc-window5", "Adam 1e-3 cosine, NCC window 5",
     ["--flagfile=flags/blog_ncc.cfg", *COSINE, "--window=5"]),
    ("NCC", "ncc-lambda0.5", "Adam 1e-3 cosine, lambda 0.5",
     ["--flagfile=flags/blog_ncc.cfg", *COSINE, "--lambda=0.5"]),
    ("NCC", "ncc-int1", "Adam 1e-3 cosine, int_resolution 1",
     ["--flagfile=flags/blog_ncc.cfg", *COSINE, "--int_resolution=1"]),
    ("NCC", "ncc-int1-lambda0.5", "Adam 1e-3 cosine, int_resolution 1, lambda 0.5",
     ["--flagfile=flags/blog_ncc.cfg", *COSINE, "--int_resolution=1", "--lambda=0.5"]),
    ("NCC", "ncc-lr2e-3-int1", "Adam 2e-3 cosine, int_resolution 1",
     ["--flagfile=flags/blog_ncc.cfg", *COSINE, "--int_resolution=1", "--lr=2e-3"]),
    ("NCC", "ncc-kept", "Adam 2e-3 cosine, int_resolution 1, lambda 0.5 (`flags/ncc.cfg`)",
     ["--flagfile=flags/ncc.cfg"]),
    ("MSE", "mse-blog", "blog: Adam 1e-4 constant, int_resolution 2",
     ["--flagfile=flags/blog_mse.cfg"]),
    ("MSE", "mse-kept", "Adam 1e-3 cosine, int_resolution 1 (`flags/mse.cfg`)",
     ["--flagfile=flags/mse.cfg"]),
]

HEADERS = {"NCC": "NCC run (one epoch)", "MSE": "MSE run (one epoch), lambda 0.01"}


def command(name, flags, runs_dir, python="python"):
    return [python, "-m", "vxm_tf.train", *COMMON, *flags, f"--model_dir={runs_dir}/{name}"]


def finished(run_dir):
    """The run's first epoch as (validation Dice, seconds per step), or None."""
    try:
        with open(Path(run_dir) / "history.csv", newline="") as file:
            history = list(csv.DictReader(file))
        timing = json.loads((Path(run_dir) / "timing.json").read_text())
        return float(history[0]["val_dice"]), float(timing["seconds_per_step"])
    except (OSError, IndexError, KeyError, ValueError):
        return None


def train_missing(runs_dir):
    for _, name, _, flags in VARIANTS:
        run_dir = Path(runs_dir) / name
        if finished(run_dir) is not None:
            continue
        if run_dir.exists():
            sys.exit(f"error: {run_dir}: an unfinished selection run; remove it to retrain")
        print(" ".join(command(name, flags, runs_dir)), flush=True)
        subprocess.run(command(name, flags, runs_dir, sys.executable), check=True)


def report(runs_dir):
    lines = []
    for table in HEADERS:
        rows = [(v[2], finished(Path(runs_dir) / v[1])) for v in VARIANTS if v[0] == table]
        missing = [d for d, r in rows if r is None]
        if missing:
            raise ValueError(f"{runs_dir}: no finished run for {', '.join(missing)}")
        best = max(dice for _, (dice, _) in rows)
        last = len(rows) - 1  # the kept settings, in bold
        lines += reporting.table(
            [HEADERS[table], "validation Dice", "train s / step"],
            [[f"**{description}**" if i == last else description,
              f"**{dice:.3f}**" if i == last else f"{dice:.3f}", f"{step:.3f}"]
             for i, (description, (dice, step)) in enumerate(rows)])
        kept_dice = rows[-1][1][0]
        if kept_dice < best:
            lines.append(f"\n(The kept settings are not this table's best, {best:.3f}: the "
                         "final choice weighed folding and the full-epoch runs too.)")
        lines.append("")
    commands = [" ".join(command(name, flags, runs_dir)) for _, name, _, flags in VARIANTS]
    lines += reporting.command_block(commands, "Commands (one per row; `make selection-report` "
                                     "runs the missing ones and writes this file):")
    return "\n".join(lines) + "\n"


PREAMBLE = """# neurite-OASIS 2D: choosing the training settings on validation subjects

Each row trains one epoch (2,256 steps) of the blog's protocol from the blog's plain
settings with the changes named, and is scored on 30 pairs of 6 validation subjects that
are neither training nor test subjects. The settings kept are `flags/ncc.cfg` and
`flags/mse.cfg` (last row of each table); the full 5-epoch runs and their test scores are in
`reports/oasis2d_training.md`. Step times are this machine's, with whatever else ran
beside each run.

"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs_dir", default="runs/selection")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="the report (markdown)")
    parser.add_argument("--no_train", action="store_true",
                        help="only write the report from the finished runs")
    args = parser.parse_args(argv)
    try:
        if not args.no_train:
            train_missing(args.runs_dir)
        text = PREAMBLE + report(args.runs_dir)
    except subprocess.CalledProcessError as err:
        sys.exit(f"error: a selection run failed (exit {err.returncode})")
    except ValueError as err:
        sys.exit(f"error: {err}")
    reporting.write(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

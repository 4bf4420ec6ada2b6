"""A lambda sweep's report from its trials.csv (`make sweep-report`): table, best value and
plot, so that no figure in it is typed by hand.

    python tools/report_sweep.py --trials=runs/tune-oasis2d-ncc/trials.csv \
        --out=reports/lambda_sweep_oasis2d_ncc/README.md
"""

import argparse
import csv
import shutil
import sys
from pathlib import Path

import reporting

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import figures, files  # noqa: E402

PREAMBLE = """# Lambda sweep, NCC, neurite-OASIS 2D

Keras Tuner grid of {n} log-spaced values of lambda ({low:g} to {high:g}); each trial trains
the `flags/ncc.cfg` model on the training subjects less the held-out ones and is scored on
pairs of the held-out subjects (never the test subjects). Highest held-out Dice: lambda
{best_lambda:.3g} ({best_dice:.4f}, folding {best_folding:.4f}% of voxels); the smallest lambda with
no folding is {no_fold}. `flags/ncc.cfg` uses 0.5, chosen by full-epoch runs.
"""


def read_trials(path):
    with open(path, newline="") as file:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
    if not rows:
        raise ValueError(f"{path}: no trials")
    return sorted(rows, key=lambda r: r["lambda"])


def report(rows):
    best = max(rows, key=lambda r: r["val_dice"])
    no_fold = next((f"{r['lambda']:.3g}" for r in rows if r["val_folding"] == 0), "none")
    lines = [PREAMBLE.format(n=len(rows), low=rows[0]["lambda"], high=rows[-1]["lambda"],
                             best_lambda=best["lambda"], best_dice=best["val_dice"],
                             best_folding=best["val_folding"], no_fold=no_fold),
             *reporting.table(["lambda", "held-out Dice", "folding (% voxels)", "final loss",
                               "seconds"],
                              [[f"{r['lambda']:.4g}", f"{r['val_dice']:.4f}",
                                f"{r['val_folding']:.4f}", f"{r['loss']:.4f}",
                                f"{r['seconds']:.0f}"] for r in rows])]
    lines += ["", "![lambda sweep](lambda_sweep.png)", "",
              *reporting.command_block(["make tune DATA=oasis2d LOSS=ncc", "make sweep-report"],
                                       "Commands (the sweep, then this report):")]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", required=True, help="a sweep's trials.csv")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="report (markdown); plot and trials "
                        "beside it")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        rows = read_trials(args.trials)
    except (OSError, ValueError, KeyError) as err:
        sys.exit(f"error: {args.trials}: not a readable sweep ({err})")
    out.parent.mkdir(parents=True, exist_ok=True)
    figures.sweep_plot(rows, out.parent / "lambda_sweep.png")
    if Path(args.trials).resolve() != (out.parent / "trials.csv").resolve():
        with files.atomic_path(out.parent / "trials.csv") as tmp:
            shutil.copyfile(args.trials, tmp)
    reporting.write(out, report(rows))


if __name__ == "__main__":
    main()

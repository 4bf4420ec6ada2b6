"""Summarise trained runs and their test evaluations as one markdown results file.

    python tools/report_training.py --runs vxm-tf-oasis2d-ncc runs/oasis2d-mse \
        --out reports/oasis2d_training.md

Each of `--runs` is a run folder or a shipped model's name (its folder in the package,
which holds its run's files). Reads its config.json, history.csv, timing.json (training
seconds per step) and the test evaluation `python -m vxm_tf.evaluate` wrote: a run's
`eval-test/summary.json`, a name's `EVALS/NAME/summary.json` (`--evals`).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

import reporting

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vxm_tf import models  # noqa: E402


def run_row(run, evals="runs/eval"):
    """A run folder's (or a shipped model's) row: config, history, timing, test summary."""
    if models.is_name(str(run)):
        run_dir, summary_path = models.card(run).folder, Path(evals) / run / "summary.json"
    else:
        run_dir = Path(run)
        summary_path = run_dir / "eval-test" / "summary.json"
    config = json.loads((run_dir / "config.json").read_text())
    with open(run_dir / "history.csv") as f:
        history = list(csv.DictReader(f))
    summary = json.loads(summary_path.read_text())
    timing_path = run_dir / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {}
    return {"run": run_dir.name, "config": config, "history": history, "summary": summary,
            "timing": timing}


def markdown(rows, commands):
    def step(t):
        return f"{t['seconds_per_step']:.4f}" if "seconds_per_step" in t else "n/a"
    epochs = max(len(r["history"]) for r in rows)
    lines = reporting.table(
        ["run", "loss", "lambda", "lr / schedule", "int_resolution", "epochs",
         "test Dice (identity)", "test Dice", "HD95 mm", "folding %", "SDlogJ", "s / pair",
         "train s / step"],
        [[r["run"], c["loss"]["similarity"], c["loss"]["reg_weight"],
          f"{c['train']['lr']} {c['train']['schedule']}", c["model"]["int_resolution"],
          len(r["history"]), f"{s['dice_before']:.3f}",
          f"**{s['dice_after']:.3f}** ({s['dice_after_std']:.3f})", f"{s['hd95_after']:.2f}",
          f"{s['folding_percent']:.4f}", f"{s['sd_log_jacobian']:.3f}", f"{s['seconds']:.4f}",
          step(t)]
         for r in rows for c, s, t in [(r["config"], r["summary"], r["timing"])]])
    lines += ["", "Validation Dice per epoch (validation subjects, not the test ones):", "",
              *reporting.table(["run", *(f"epoch {i + 1}" for i in range(epochs))],
                               [[r["run"], *(f"{float(h['val_dice']):.4f}"
                                             for h in r["history"])] for r in rows])]
    lines += ["", "Per structure (test pairs, mean Dice after registration):", "",
              *reporting.table(
                  ["structure", *(r["run"] for r in rows)],
                  [[entry["name"], *(f"{r['summary']['labels'][label]['dice_after']:.3f}"
                                     for r in rows)]
                   for label, entry in rows[0]["summary"]["labels"].items()])]
    if commands:
        lines += ["", *reporting.command_block(commands, "Commands:")]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="run folders or shipped models' names")
    parser.add_argument("--evals", default="runs/eval",
                        help="folder of the names' evaluations (NAME/summary.json)")
    parser.add_argument("--out", type=reporting.markdown_path, required=True)
    parser.add_argument("--title", default="Training results")
    parser.add_argument("--preamble", default="", help="markdown file put before the table")
    parser.add_argument("--command", action="append", default=[],
                        help="a command that made these runs (repeatable)")
    args = parser.parse_args()
    if args.preamble and Path(args.preamble).resolve() == Path(args.out).resolve():
        parser.error(f"--out={args.out} would overwrite --preamble")
    rows = [run_row(r, args.evals) for r in args.runs]
    preamble = Path(args.preamble).read_text() if args.preamble else ""
    text = f"# {args.title}\n\n{preamble}\n{markdown(rows, args.command)}"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    reporting.write(out, text)
    print(text)


if __name__ == "__main__":
    main()

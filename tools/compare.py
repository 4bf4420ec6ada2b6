"""Compare registration models on the same test pairs: the SSD-vs-NCC report (`make compare`).

    python tools/compare.py --models SSD=runs/oasis2d-mse/best.keras \
        NCC=runs/oasis2d-ncc/best.keras --out reports/ssd_vs_ncc.md

Evaluates every model on the test pairs of the data the first one was trained on (its
run's config.json), and writes the markdown report with the metrics table (identity and
each model), per-structure Dice, a per-structure box plot (left and right merged) and
example pairs with every model side by side, the figures in a folder beside the report.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import reporting

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import evaluation, figures  # noqa: E402


def report(names, summaries, figure_names, command):
    first = summaries[0]
    lines = [f"{first['pairs']} test pairs; mean (standard deviation) over pairs.", ""]
    rows = [["identity", f"{first['dice_before']:.3f} ({first['dice_before_std']:.3f})",
             f"{first['hd95_before']:.2f}", "0", "0", ""]]
    rows += [[name, f"{s['dice_after']:.3f} ({s['dice_after_std']:.3f})",
              f"{s['hd95_after']:.2f}", f"{s['folding_percent']:.4f}",
              f"{s['sd_log_jacobian']:.3f}", f"{s['seconds']:.4f}"]
             for name, s in zip(names, summaries)]
    lines += reporting.table(["method", "Dice", "HD95 (mm)", "folding (% voxels)",
                              "SD log det J", "s / pair"], rows)
    lines += ["", *reporting.table(
        ["label", "structure", "identity", *names],
        [[label, entry["name"], f"{entry['dice_before']:.3f}",
          *(f"{s['labels'][label]['dice_after']:.3f}" for s in summaries)]
         for label, entry in first["labels"].items()])]
    lines += ["", *reporting.figures(figure_names), "",
              *reporting.command_block([command])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=PATH ...")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    parser.add_argument("--title", default="SSD (MSE) against NCC")
    parser.add_argument("--figures", type=reporting.at_least(0), default=3,
                        help="example pairs drawn")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        sys.exit(f"error: {out}: folder {out.parent} does not exist")
    try:
        models, volumes, pairs = evaluation.models_and_test_pairs(args.models)
    except ValueError as err:
        sys.exit(f"error: {err}")
    names, loaded = list(models), list(models.values())
    results = []
    for name, model in zip(names, loaded):
        print(f"evaluating {name} on {len(pairs)} pairs", flush=True)
        rows = evaluation.evaluate_pairs(model, volumes, pairs)
        results.append((evaluation.summarise(*rows), rows[1]))
    figure_dir = out.with_suffix("")
    figure_dir.mkdir(exist_ok=True)
    rel = figure_dir.name
    figures.dice_boxplot({"identity": results[0][1],
                          **{n: rows for n, (_, rows) in zip(names, results)}},
                         figure_dir / "dice_per_structure.png")
    figure_names = [f"{rel}/dice_per_structure.png"]
    rng = np.random.default_rng(args.seed)
    for n in sorted(rng.choice(len(pairs), min(args.figures, len(pairs)), replace=False)):
        i, j = pairs[n]
        inputs = [volumes.images[i][None, ..., None], volumes.images[j][None, ..., None]]
        moved = [m.predict_on_batch(inputs)[0][0, ..., 0] for m in loaded]
        warps = [m.register(*inputs)[0] for m in loaded]
        name = f"pair_{volumes.names[i]}_{volumes.names[j]}.png"
        figures.pair_figure(volumes.images[i], volumes.images[j], moved, warps,
                            figure_dir / name, titles=names,
                            title=f"{volumes.names[i]} -> {volumes.names[j]}")
        figure_names.append(f"{rel}/{name}")
    command = reporting.command_line("compare.py", argv)
    text = f"# {args.title}\n\n" + report(names, [s for s, _ in results], figure_names,
                                          command)
    reporting.write(out, text)
    print(text)


if __name__ == "__main__":
    main()

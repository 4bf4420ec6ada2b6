"""Brightness robustness: Dice of each model as the moving images' intensities are perturbed.

    python tools/robustness.py --models SSD=runs/oasis2d-mse/best.keras \
        NCC=runs/oasis2d-ncc/best.keras --out reports/brightness_robustness.md

Every model registers the same test pairs (of the data the first model was trained on)
with the moving image perturbed (`vxm_tf.perturb`, seeded per subject) over a grid of
strengths per perturbation; segmentations are untouched, so Dice measures alignment
alone. Writes the markdown table, a plot of Dice and folding against strength, and one
pair registered by every model under the strongest bias field.
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import reporting

from vxm_tf import cli

cli.quiet_tensorflow_import()
import matplotlib.pyplot as plt  # noqa: E402

from vxm_tf import configs, evaluation, figures, models, perturb  # noqa: E402

DEFAULT_GRID = ("brightness:-0.4,-0.2,0.2,0.4;offset:-0.2,0.2;gamma:-1,-0.5,0.5,1;"
                "bias:0.25,0.5,0.75,1;noise:0.02,0.05,0.1")


def parse_grid(text):
    """'name:s1,s2;name:...' -> {name: [0, s1, s2, ...]} (0 is always included)."""
    grid = {}
    for part in filter(None, text.split(";")):
        name, _, values = part.partition(":")
        perturb.parse_perturbations(f"{name}:0")  # checks the name
        grid[name] = sorted({0.0, *(float(v) for v in values.split(","))})
    return grid


def score(model, volumes, pairs, perturbations, seed):
    moving = np.stack([perturb.perturb(image, perturbations, seed + k)
                       for k, image in enumerate(volumes.images)])
    rows, _ = evaluation.evaluate_pairs(model, volumes, pairs, surface=False,
                                        moving_images=moving)
    return (float(np.mean([r["dice_after"] for r in rows])),
            float(np.mean([r["folding_percent"] for r in rows])),
            float(np.mean([r["dice_before"] for r in rows])))


def plot(results, identity, grid, path):
    """Dice (top) and folding (bottom) against strength; one colour per loss, "NAME+..."
    variants (e.g. intensity-augmented models) in their base model's colour, dashed (one
    "+") or dash-dotted (more)."""
    bases = list(dict.fromkeys(model.split("+")[0] for model in results))
    fig, axes = plt.subplots(2, len(grid), figsize=(4 * len(grid), 7), squeeze=False)
    for c, name in enumerate(grid):
        strengths = grid[name]
        for model, curves in results.items():
            style = dict(color=f"C{bases.index(model.split('+')[0])}", label=model,
                         linestyle=("-", "--", "-.")[min(model.count("+"), 2)])
            axes[0, c].plot(strengths, [curves[name][s][0] for s in strengths], marker="o",
                            **style)
            axes[1, c].plot(strengths, [curves[name][s][1] for s in strengths], marker="s",
                            **style)
        axes[0, c].axhline(identity, color="gray", linestyle=":", label="no registration")
        axes[0, c].set_title(name)
        axes[1, c].set_xlabel("strength")
    axes[0, 0].set_ylabel("mean Dice")
    axes[1, 0].set_ylabel("folding (% voxels)")
    axes[0, 0].legend(fontsize=8)
    figures.save_figure(fig, path)


def data_source(spec):
    """Where the test data come from, per the first model's run config (a folder named
    relative to the repository)."""
    config = configs.run_data_config(spec.split("=", 1)[-1])
    if config is None:
        return "data of unknown origin"
    where = config.data_dir and os.path.relpath(config.data_dir, models.REPOSITORY)
    return f"dataset {config.dataset}" + (f", `{where}`" if where else "")


def describe(path):
    """One line on how the model at `path` (or a registered name) was trained, from its
    run's config.json."""
    config_path = Path(models.resolve(path)).parent / "config.json"
    if not config_path.exists():
        return "(no config.json beside it)"
    config = json.loads(config_path.read_text())
    loss = config["loss"]
    text = f"{loss['similarity']}, lambda {loss['reg_weight']:g}"
    augmentation = {k: v for k, v in config["data"].get("augmentation", {}).items()
                    if v and k != "flip_axis"}
    if augmentation:
        text += "; augmentation " + ", ".join(
            k if v is True else f"{k} {v:g}" for k, v in augmentation.items())
    return text


def overall(curves, grid):
    """(mean, worst) Dice over every perturbed setting (strength 0 left out)."""
    scores = [curves[p][s][0] for p, strengths in grid.items() for s in strengths if s != 0]
    return float(np.mean(scores)), float(np.min(scores))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=PATH ...")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    parser.add_argument("--grid", default=DEFAULT_GRID)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out)
    if not out.parent.is_dir():
        sys.exit(f"error: {out}: folder {out.parent} does not exist")
    try:
        loaded, volumes, pairs = evaluation.models_and_test_pairs(args.models)
    except ValueError as err:
        sys.exit(f"error: {err}")
    results, identity = {}, None
    for name, model in loaded.items():
        clean = score(model, volumes, pairs, [], args.seed)
        identity = clean[2]
        results[name] = {p: {s: clean if s == 0 else score(model, volumes, pairs, [(p, s)],
                                                           args.seed)
                             for s in strengths} for p, strengths in grid.items()}
        print(f"{name} done", flush=True)
    figure_dir = out.with_suffix("")
    figure_dir.mkdir(exist_ok=True)
    plot(results, identity, grid, figure_dir / "dice_vs_strength.png")
    strongest = max(grid.get("bias", [1.0]))
    i, j = pairs[0]
    moving = perturb.perturb(volumes.images[i], [("bias", strongest)], args.seed + i)
    inputs = [moving[None, ..., None], volumes.images[j][None, ..., None]]
    figures.pair_figure(moving, volumes.images[j],
                        [m.predict_on_batch(inputs)[0][0, ..., 0] for m in loaded.values()],
                        [m.register(*inputs)[0] for m in loaded.values()],
                        figure_dir / "strong_bias_pair.png", titles=list(loaded),
                        title=f"bias field {strongest}: {volumes.names[i]} -> "
                              f"{volumes.names[j]}")
    lines = [f"{len(pairs)} test pairs of {len(volumes)} test subjects "
             f"({data_source(args.models[0])}); mean Dice after registration (mean folding, % "
             f"voxels); no registration: {identity:.3f}. Perturbations of the moving image "
             "only (`vxm_tf/perturb.py`; strength 0 is the clean image).", "",
             "Models (training flags from each run's config.json):", "",
             *[f"- {name}: `{path}` ({describe(path)})" for name, path in
               (spec.split("=", 1) for spec in args.models)], "",
             *reporting.table(
                 ["perturbation", "strength", *loaded],
                 [[p, f"{s:g}", *(f"{results[n][p][s][0]:.3f} ({results[n][p][s][1]:.3f})"
                                  for n in loaded)]
                  for p, strengths in grid.items() for s in strengths])]
    lines += ["", "Over every perturbed setting above (strength 0 left out):", ""]
    summary = []
    for n in loaded:
        mean, worst = overall(results[n], grid)
        clean = results[n][next(iter(grid))][0.0][0]
        summary.append([n, f"{clean:.3f}", f"{mean:.3f}", f"{worst:.3f}"])
    lines += reporting.table(["model", "clean Dice", "mean Dice", "worst Dice"], summary)
    rel = figure_dir.name
    lines += ["", f"![Dice and folding against strength]({rel}/dice_vs_strength.png)", "",
              f"![one pair under a strong bias field]({rel}/strong_bias_pair.png)", "",
              *reporting.command_block([reporting.command_line("robustness.py", argv)],
                                       "Command (what `make robustness` runs):")]
    reporting.write(out, ["# Brightness robustness", "", *lines])
    print("\n".join(lines))


if __name__ == "__main__":
    main()

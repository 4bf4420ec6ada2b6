"""HyperMorph against a sweep of per-lambda models (`make hypermorph-report` ->
reports/hypermorph.md).

    python tools/report_hypermorph.py --hyper runs/hypermorph/hyper-*/model.keras \
        --sweep runs/hypermorph/lambda-*/model.keras --out=reports/hypermorph.md

Each sweep model was trained at one `--lambda`; each HyperMorph model once, for every
weight (several models: several training budgets). All are scored by the same code as
`vxm-evaluate` on the test pairs of the first HyperMorph run (its config.json), a
HyperMorph model at `h = lambda / (1 + lambda)`, the weight whose loss `(1 - h) sim + h
Grad` has the minimum of `sim + lambda Grad`. The weight to use is then chosen on the
validation subjects alone (`vxm-choose-lambda`'s code, on `--grid`) and scored on the test
pairs, as is the sweep model of the best validation Dice.
"""

import argparse
import json
import sys
from pathlib import Path

from vxm_tf import cli

cli.quiet_tensorflow_import()
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import reporting  # noqa: E402

from vxm_tf import configs, evaluation, experiment, hypermorph, models, networks  # noqa: E402
from vxm_tf.lambda_choice import parse_grid  # noqa: E402


def run_facts(model_path):
    """`(config, steps, seconds, best validation Dice)` of a model's run folder (a
    registered name: its folder in the package)."""
    run = Path(models.resolve(model_path)).parent
    config = json.loads((run / "config.json").read_text())
    timing = json.loads((run / "timing.json").read_text())
    steps = config["steps_per_epoch"] * len(timing["epoch_seconds"])
    history = (run / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    column = header.index("val_dice") if "val_dice" in header else None
    best = (max(float(line.split(",")[column]) for line in history[1:])
            if column is not None else float("nan"))
    return config, steps, float(sum(timing["epoch_seconds"])), best


def scores(model, volumes, pairs):
    return evaluation.summarise(*evaluation.evaluate_pairs(model, volumes, pairs))


def plot(rows, labels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vxm_tf import files

    lambdas = [r["lambda"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, title, ax in (("dice_after", "test Dice", axes[0]),
                           ("folding_percent", "folding (% voxels)", axes[1])):
        ax.plot(lambdas, [r["sweep"][key] for r in rows], "o-", label="one model per lambda")
        for label, marker in zip(labels, ("s--", "^--", "v--")):
            ax.plot(lambdas, [r[label][key] for r in rows], marker, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("lambda (sim + lambda x Grad)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    files.save_figure(fig, path)
    plt.close(fig)


def load_hyper(path):
    model = networks.VxmDense.load(path)
    if not isinstance(model, hypermorph.HyperVxmDense):
        raise ValueError(f"--hyper {path} is not a HyperMorph model")
    return model.at_lambda(None) if model.hyper_lambda is not None else model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hyper", nargs="+", required=True,
                        help="HyperMorph models (their run folders' model.keras)")
    parser.add_argument("--sweep", nargs="+", required=True,
                        help="the per-lambda models (their run folders' model.keras)")
    parser.add_argument("--grid", default=",".join(f"{h:g}" for h in np.linspace(0, 0.95, 20)),
                        help="weights h scored on the validation subjects to choose one")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    parser.add_argument("--title", default="HyperMorph against one model per lambda "
                        "(neurite-OASIS 2D, NCC)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if not out.parent.is_dir():
            raise ValueError(f"{out}: folder {out.parent} does not exist")
        grid = parse_grid(args.grid)
        hypers = {}
        for path in args.hyper:
            facts = run_facts(path)
            hypers[f"HyperMorph, {facts[1]} steps"] = (load_hyper(path), facts, path)
        sweep = sorted((run_facts(p)[0]["loss"]["reg_weight"], p) for p in args.sweep)
        splits = experiment.build_splits(configs.run_data_config(args.hyper[0]))
    except (ValueError, OSError, KeyError) as err:
        sys.exit(f"error: {err}")
    test, val = splits["test"], splits["val"]
    pairs, val_pairs = experiment.split_pairs(test), experiment.split_pairs(val)
    labels = list(hypers)
    rows, costs = [], []
    for reg_weight, path in sweep:
        h = float(hypermorph.hyper_of_lambda(reg_weight))
        print(f"lambda {reg_weight:g} (h {h:.4f}): {len(pairs)} test pairs", flush=True)
        _, steps, seconds, best_val = run_facts(path)
        costs.append((steps, seconds))
        row = {"lambda": reg_weight, "h": h, "path": path, "val_dice": best_val,
               "sweep": scores(networks.VxmDense.load(path), test, pairs)}
        for label, (model, _, _) in hypers.items():
            row[label] = scores(model.at_lambda(h), test, pairs)
        rows.append(row)
    choices = {}
    for label, (model, _, _) in hypers.items():
        print(f"{label}: choosing h on {len(val_pairs)} validation pairs", flush=True)
        grid_rows = hypermorph.score_grid(model, val, val_pairs, grid)
        chosen = hypermorph.choose(grid_rows)
        choices[label] = (grid_rows, chosen,
                          scores(model.at_lambda(chosen["hyper_lambda"]), test, pairs))
    by_val = max(rows, key=lambda r: r["val_dice"])
    best_test = max(rows, key=lambda r: r["sweep"]["dice_after"])

    figure_dir = out.with_suffix("")
    figure_dir.mkdir(exist_ok=True)
    plot(rows, labels, figure_dir / "dice_folding_by_lambda.png")
    sweep_steps, sweep_seconds = sum(c[0] for c in costs), sum(c[1] for c in costs)
    first = rows[0]["sweep"]
    last = labels[-1]
    lo = hypers[last][1][0]["loss"]
    lines = [
        f"# {args.title}", "",
        f"Test pairs: every ordered pair of the test subjects of the HyperMorph runs "
        f"({len(test)} subjects, {len(pairs)} pairs, {len(test.labels)} labels; no "
        f"registration: Dice {first['dice_before']:.3f}). Similarity "
        f"{lo['similarity']} (window {lo['window']}), Grad {lo['grad_penalty']}. A "
        "HyperMorph model is scored at h = lambda / (1 + lambda), where its loss "
        "(1 - h) sim + h Grad has the minimum of the sweep's sim + lambda Grad.", "",
        "## Training cost", "",
        *reporting.table(["", "models", "steps", "seconds"], [
            ["one model per lambda", len(rows), sweep_steps, f"{sweep_seconds:.0f}"],
            *[[label, 1, facts[1], f"{facts[2]:.0f}"]
              for label, (_, facts, _) in hypers.items()]]), "",
        "Seconds: training epochs on this machine's CPU, from each run's timing.json. "
        "HyperMorph models:", "",
        *[f"- {label}: {m.nb_hyp_layers} x {m.nb_hyp_units} hypernetwork units, learning "
          f"rate {facts[0]['train']['lr']} ({facts[0]['train']['schedule']}); its "
          "hypernetwork " + ("responds to h." if m.responds_to_lambda() else
                             "does NOT respond to h (dead ReLU units): it registers alike "
                             "at every weight.")
          for label, (m, facts, _) in hypers.items()], "",
        "## Test Dice per lambda", "",
        *reporting.table(["lambda", "h", "per-lambda model", *labels], [
            [f"{r['lambda']:.4g}", f"{r['h']:.4f}", f"{r['sweep']['dice_after']:.4f}",
             *(f"{r[label]['dice_after']:.4f} "
               f"({r[label]['dice_after'] - r['sweep']['dice_after']:+.4f})"
               for label in labels)] for r in rows])]
    lines.append("")
    for label, (_, facts, _) in hypers.items():
        gap = [r[label]["dice_after"] - r["sweep"]["dice_after"] for r in rows]
        lines.append(f"- {label} ({facts[1] / sweep_steps:.2g} of the sweep's steps): at most "
                     f"0.01 Dice below the per-lambda model at "
                     f"{sum(d >= -0.01 for d in gap)} of {len(rows)} values of lambda, above "
                     f"it at {sum(d > 0 for d in gap)} (differences {min(gap):+.4f} to "
                     f"{max(gap):+.4f}).")
    lines += ["", f"Each per-lambda model had {sweep_steps // len(rows)} steps: a HyperMorph "
              "model of more steps than that has also had more training than any one of "
              "them, so where it does better, part of it is the longer training."]
    lines += [
        "", f"![Dice and folding by lambda]({figure_dir.name}/dice_folding_by_lambda.png)", "",
        f"HD95, folding and SD log det J per lambda (per-lambda model / {last}):", "",
        *reporting.table(["lambda", "HD95 (mm)", "folding %", "SD log det J"], [
            [f"{r['lambda']:.4g}",
             f"{r['sweep']['hd95_after']:.2f} / {r[last]['hd95_after']:.2f}",
             f"{r['sweep']['folding_percent']:.4f} / {r[last]['folding_percent']:.4f}",
             f"{r['sweep']['sd_log_jacobian']:.3f} / {r[last]['sd_log_jacobian']:.3f}"]
            for r in rows]), "",
        "## The weight chosen on validation subjects", "",
        f"`vxm-choose-lambda`'s choice over h in {{{', '.join(f'{h:g}' for h in grid)}}} on "
        f"{len(val_pairs)} validation pairs ({len(val)} subjects, never the test ones), and "
        "the sweep's model of the best validation Dice:", "",
        *reporting.table(["model", "chosen on", "test Dice", "HD95 (mm)", "folding %"], [
            *[[f"{label} at h = {c[1]['hyper_lambda']:g} (lambda {c[1]['lambda']:.4g})",
               f"validation Dice over the grid ({c[1]['dice']:.4f})",
               f"{c[2]['dice_after']:.4f}", f"{c[2]['hd95_after']:.2f}",
               f"{c[2]['folding_percent']:.4f}"] for label, c in choices.items()],
            *[[f"per-lambda model, lambda {r['lambda']:.4g}", chosen_on,
               f"{r['sweep']['dice_after']:.4f}", f"{r['sweep']['hd95_after']:.2f}",
               f"{r['sweep']['folding_percent']:.4f}"] for r, chosen_on in (
                (by_val, f"best validation Dice of its run ({by_val['val_dice']:.4f})"),
                (best_test, "the test pairs (an upper bound, not a fair choice)"))]]), "",
        "Validation Dice by h:", "",
        *reporting.table(["h", "lambda", *labels], [
            [f"{g['hyper_lambda']:g}", f"{g['lambda']:.4g}",
             *(f"{choices[label][0][k]['dice']:.4f}" for label in labels)]
            for k, g in enumerate(next(iter(choices.values()))[0])])]
    lines += [
        "", "## Runs", "",
        *[f"- {label}: `{path}`" for label, (_, _, path) in hypers.items()],
        *[f"- lambda {r['lambda']:.4g}: `{r['path']}`" for r in rows], "",
        *reporting.command_block([reporting.command_line("report_hypermorph.py", argv)])]
    print(reporting.write(out, lines), end="")


if __name__ == "__main__":
    main()

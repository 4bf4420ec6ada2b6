"""Beyond the original: test-time instance optimisation and segmentation-supervised
training, side by side on the test pairs (`make beyond-report` ->
reports/beyond_original.md).

    python tools/report_beyond.py --models unsupervised=runs/oasis2d-ncc/best.keras \
        semi-supervised=runs/oasis2d-ncc-seg/best.keras --instance_steps=10,25,50,100 \
        --instance_settings semi-supervised=reports/instance_sweep_oasis2d_seg.json \
        --out=reports/beyond_original.md

Each model is scored alone and with each number of instance-optimisation steps, with the
settings chosen on its own validation pairs (`--instance_settings NAME=JSON`, written by
tools/tune_instance.py; `make tune-instance`), or else `vxm_tf.instance.InstanceConfig`'s
defaults, never on the test pairs, by the same code as `vxm_tf.evaluate`: Dice over
the labels, HD95, folding, SD log det J, seconds per pair (batch 1, this machine). The test
data are those of the first model's run (its config.json).
"""

import argparse
import csv
import json
import sys
from pathlib import Path

from vxm_tf import cli

cli.quiet_tensorflow_import()
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402
import reporting  # noqa: E402

from vxm_tf import evaluation, figures, instance, models  # noqa: E402


def training_line(name, model_path):
    """How a model was trained, from its card (a registered name) or run folder (nothing
    when it has neither)."""
    if models.is_name(model_path):
        return f"- {name}: `{model_path}`: {models.card(model_path).training}"
    run = Path(model_path).parent
    try:
        config = json.loads((run / "config.json").read_text())
        with open(run / "history.csv", newline="") as file:
            history = list(csv.DictReader(file))
    except (OSError, ValueError):
        return f"- {name}: `{model_path}`."
    lo, t = config["loss"], config["train"]
    best = max(float(h["val_dice"]) for h in history)
    epochs = f"{len(history)} epoch{'s' if len(history) != 1 else ''}"
    start = f" from `{t['init_model']}`" if t.get("init_model") else ""
    return (f"- {name}: `{model_path}`: {lo['similarity']} + {lo['reg_weight']} x Grad"
            f" + {lo.get('seg_weight', 0)} x soft Dice of the training subjects' labels, "
            f"{epochs}{start}, lr {t['lr']} {t['schedule']}; best validation Dice "
            f"{best:.4f} (validation subjects, kept as best.keras).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="NAME=PATH ...")
    parser.add_argument("--instance_steps", default="10,25,50,100",
                        help="comma-separated instance-optimisation step counts")
    parser.add_argument("--instance_settings", nargs="*", default=[],
                        help="NAME=JSON ...: a model's own instance settings "
                        "(tools/tune_instance.py's choice on its validation pairs)")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    parser.add_argument("--title", default="Beyond the original: instance optimisation and "
                        "segmentation-supervised training (neurite-OASIS 2D)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        sys.exit(f"error: {out}: folder {out.parent} does not exist")
    try:
        try:
            steps = [int(s) for s in args.instance_steps.split(",") if s.strip() and int(s)]
        except ValueError:
            raise ValueError("--instance_steps takes comma-separated integers, got "
                             f"{args.instance_steps!r}") from None
        settings = dict(spec.split("=", 1) for spec in args.instance_settings if "=" in spec)
        if len(settings) != len(args.instance_settings):
            raise ValueError("--instance_settings takes NAME=JSON, got "
                             f"{' '.join(args.instance_settings)}")
        loaded, volumes, pairs = evaluation.models_and_test_pairs(args.models)
        unknown = set(settings) - set(loaded)
        if unknown:
            raise ValueError(f"--instance_settings names {', '.join(sorted(unknown))}, not "
                             f"among --models ({', '.join(loaded)})")
        paths = dict(spec.split("=", 1) for spec in args.models)
        io_configs = {name: [instance.load_settings(settings[name], n, paths[name])
                             if name in settings else instance.InstanceConfig(steps=n)
                             for n in steps]
                      for name in loaded}
    except ValueError as err:
        sys.exit(f"error: {err}")
    names, summaries, label_rows = [], [], {}
    for name, model in loaded.items():
        for config in [None, *io_configs[name]]:
            label = name if config is None else f"{name} + {config.steps} instance steps"
            print(f"{label}: {len(pairs)} pairs", flush=True)
            pair_rows, rows = evaluation.evaluate_pairs(model, volumes, pairs,
                                                        instance_config=config)
            names.append(label)
            summaries.append(evaluation.summarise(pair_rows, rows))
            label_rows[label] = rows
    figure_dir = out.with_suffix("")
    figure_dir.mkdir(exist_ok=True)
    figures.dice_boxplot({"identity": next(iter(label_rows.values())), **label_rows},
                         figure_dir / "dice_per_structure.png")
    command = reporting.command_line("report_beyond.py", argv)

    def origin(name):
        return (f"`{settings[name]}`" if name in settings else
                "vxm_tf's defaults, chosen by `make tune-instance`: "
                "reports/instance_sweep_oasis2d.md")
    text = "\n".join([
        f"# {args.title}", "",
        f"Test pairs: every ordered pair of the test subjects of the first model's run "
        f"({len(volumes)} subjects, {len(pairs)} pairs, {len(volumes.labels)} labels). "
        "Instance optimisation, from the network's field at its integration grid, with "
        "settings chosen on each model's validation pairs (never the test pairs):", "",
        *[f"- {name}: {configs[0].describe()} "
          f"({origin(name)})." for name, configs in io_configs.items() if configs], "",
        *[training_line(name, path) for name, path in
          (spec.split("=", 1) for spec in args.models)], "",
        compare.report(names, summaries, [f"{figure_dir.name}/dice_per_structure.png"],
                       command).rstrip("\n")]) + "\n"
    print(reporting.write(out, text), end="")


if __name__ == "__main__":
    main()

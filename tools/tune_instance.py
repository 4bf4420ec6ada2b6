"""Choose the instance-optimisation settings on validation subjects (`make tune-instance`).

    python tools/tune_instance.py --model vxm-tf-oasis2d-ncc --instance_steps 10 \
        --instance_space composition,velocity --instance_lr 0.3,1 \
        --instance_lambda 0.25,1 --instance_smoothing 3 --out reports/instance_sweep_oasis2d.md

Registers every ordered pair of the validation split of the data the model was trained on
(its run's config.json; never the test split; for a model without a run, such as the
authors' 3D .h5, the validation subjects of `--data_dir`: `make tune-instance-3d`) with
each combination of settings, all pairs in one batch (or `--batch_size` at a time), and
writes a table of validation Dice, folding and seconds for all pairs (the registrations
alone, after a warm-up call that compiles). The chosen setting is the highest Dice
among those above the network alone's, with folding under `--max_folding` percent (and,
with `--max_seconds`, registering a pair in at most that many seconds: a sweep over step
counts then chooses the best within a time budget), also written beside the table as JSON
(`--out` with .json), which `--instance_settings` of register, evaluate,
tools/report_oasis3d.py and tools/report_beyond.py reads. When no setting beats the network
alone, none is chosen and no JSON is left: the model registers better without.
"""

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from vxm_tf import cli

cli.quiet_tensorflow_import()
sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402

from vxm_tf import (  # noqa: E402
    configs,
    experiment,
    hypermorph,
    instance,
    metrics,
    models,
    registration,
)


def floats(text, flag):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{flag} takes comma-separated numbers, got {text!r}") from None


def ints(text, flag):
    values = floats(text, flag)
    if any(v != int(v) for v in values):
        raise ValueError(f"--{flag} takes comma-separated integers, got {text!r}")
    return [int(v) for v in values]


def words(text):
    return [v.strip() for v in text.split(",") if v.strip()]


# settings shown only when a sweep varies them: (column, InstanceConfig field and flag)
OPTIONAL = (("window", "window"), ("grid", "resolution"), ("gradient", "gradient"),
            ("steps", "steps"))


def training_state(model_path):
    """'N epochs, validation Dice D' from the run's state.json (the card's training for a
    registered name), or '' when absent."""
    if models.is_name(model_path):
        return f" ({models.card(model_path).training})"
    path = Path(model_path).parent / "state.json"
    if not path.exists():
        return ""
    state = json.loads(path.read_text())
    epochs = f"{state['epoch']} epoch{'s' if state['epoch'] != 1 else ''}"
    return (f" (its run: {epochs} trained, best validation Dice "
            f"{state['best_val_dice']:.4f})")


def score(model, volumes, pairs, config, batch_size=0):
    batch_size = batch_size or len(pairs)
    # warm-up: the first call of a shape and setting compiles (one step is enough)
    list(registration.register_pairs(model, volumes, pairs[:batch_size], batch_size=batch_size,
                                     instance_config=config and dataclasses.replace(
                                         config, steps=min(config.steps, 1))))
    seconds = []
    results = list(registration.register_pairs(model, volumes, pairs, batch_size=batch_size,
                                               instance_config=config, seconds=seconds))
    dice = [metrics.mean_dice(moved, volumes.segs[j], volumes.labels)
            for (_, j), _, moved in results]
    folding = [metrics.folding_percent(warp) for _, warp, _ in results]
    return float(np.mean(dice)), float(np.mean(folding)), float(np.sum(seconds))


# the swept settings' former names: an old command line fails with the new name
RENAMED = {f"--{n}" for n in ("steps", "space", "lr", "lambda", "smoothing", "window",
                               "resolution", "gradient", "similarity")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run's best.keras (with config.json)")
    # the swept settings carry the names of register's flags, comma-separated
    parser.add_argument("--instance_steps", dest="steps", default="10",
                        help="comma-separated step counts")
    parser.add_argument("--instance_space", dest="space", default="composition,velocity",
                        help=f"comma-separated, of {instance.SPACES}")
    parser.add_argument("--instance_lr", dest="lr", default="0.3,1")
    parser.add_argument("--instance_lambda", dest="reg_weight", default="0.25,1")
    parser.add_argument("--instance_smoothing", dest="smoothing", default="3")
    parser.add_argument("--instance_window", dest="window", default="9",
                        help="NCC windows (voxels of the images)")
    parser.add_argument("--instance_resolution", dest="resolution", default="1",
                        help="optimisation grids, times coarser than the network's field")
    parser.add_argument("--instance_gradient", dest="gradient", default="exact",
                        help=f"comma-separated, of {instance.GRADIENTS}")
    parser.add_argument("--instance_similarity", dest="similarity", default="ncc")
    parser.add_argument("--max_folding", type=reporting.at_least(0, float), default=0.1)
    parser.add_argument("--max_seconds", type=reporting.at_least(0, float), default=0.0,
                        help="choose only settings that register a pair in at most this "
                        "many seconds (the time column over the pairs; 0: any)")
    parser.add_argument("--batch_size", type=reporting.at_least(0), default=0,
                        help="pairs registered together (0: all in one batch)")
    parser.add_argument("--data_dir", help="validation data for a model without a run "
                        "(e.g. the authors' .h5): its --dataset layout, the first --train "
                        "subjects skipped, the next --val validate")
    parser.add_argument("--dataset", default="cache")
    parser.add_argument("--train", type=int, default=0)
    parser.add_argument("--val", type=int, default=0)
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    renamed = [a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv)
               if a.split("=")[0] in RENAMED]
    if renamed:
        parser.error(f"{renamed[0]} is now --instance_{renamed[0][2:]} (the names of "
                     "register's flags)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        sys.exit(f"error: {out}: folder {out.parent} does not exist")
    try:
        grid = [instance.InstanceConfig(steps, lr, args.similarity, lam, sm, space, win,
                                        res, gradient)
                for space, gradient, lr, lam, sm, win, res, steps in itertools.product(
                    words(args.space), words(args.gradient),
                    floats(args.lr, "instance_lr"), floats(args.reg_weight, "instance_lambda"),
                    ints(args.smoothing, "instance_smoothing"),
                    ints(args.window, "instance_window"),
                    ints(args.resolution, "instance_resolution"),
                    ints(args.steps, "instance_steps"))
                if gradient == "exact" or space == "composition"]  # (the others refuse it)
        if not grid:
            raise ValueError("the sweep is empty: give --instance_space, "
                             "--instance_gradient, --instance_lr, --instance_lambda, "
                             "--instance_smoothing, --instance_window, "
                             "--instance_resolution and --instance_steps values "
                             "(--instance_gradient=straight-through needs "
                             "--instance_space=composition)")
        if args.max_seconds < 0:
            raise ValueError(f"--max_seconds must be non-negative, got {args.max_seconds}")
        if args.batch_size < 0:
            raise ValueError(f"--batch_size must be non-negative, got {args.batch_size}")
        data_config = (configs.DataConfig(dataset=args.dataset, data_dir=args.data_dir,
                                          train=args.train, val=args.val, test=0)
                       if args.data_dir else configs.run_data_config(args.model))
        if data_config is None:
            raise ValueError(f"{args.model}: no config.json beside it to find the validation "
                             "subjects (give --data_dir, --train and --val)")
        volumes = experiment.build_splits(data_config)["val"]
        if volumes is None or len(volumes) < 2:
            raise ValueError(f"--data_dir={args.data_dir}: --val={args.val} gives fewer than "
                             "2 validation subjects" if args.data_dir else
                             f"{args.model}: its run has fewer than 2 validation subjects")
        model = hypermorph.load(args.model, source=f"--model={args.model}")
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    pairs = experiment.split_pairs(volumes)
    base = score(model, volumes, pairs, None, args.batch_size)
    rows = []
    for config in grid:
        rows.append((config, *score(model, volumes, pairs, config, args.batch_size)))
        print(f"{config.space} {config.gradient} lr {config.lr} lambda {config.reg_weight} "
              f"smoothing {config.smoothing} window {config.window} resolution "
              f"{config.resolution} steps {config.steps}: Dice {rows[-1][1]:.4f} folding "
              f"{rows[-1][2]:.3f}% {rows[-1][3] / len(pairs):.2f} s per pair", flush=True)
    # a setting must beat the network alone: otherwise this model registers better without
    allowed = [r for r in rows if r[2] < args.max_folding and r[1] > base[0]
               and (not args.max_seconds or r[3] / len(pairs) <= args.max_seconds)]
    best = max(allowed, key=lambda r: r[1]) if allowed else None
    rule = f"folding < {args.max_folding}%" + (
        f" and at most {args.max_seconds:g} s per pair, {args.max_seconds * len(pairs):g} s "
        "for all pairs" if args.max_seconds else "") + f", above the network alone's {base[0]:.4f}"
    command = reporting.command_line("tune_instance.py", argv)
    # the NCC window, the grid and the gradient get columns (and flags in the choice) when
    # a sweep sets them, the steps when it varies them
    default = instance.InstanceConfig()
    optional = [(head, field) for head, field in OPTIONAL
                if (len({c.steps for c in grid}) > 1 if field == "steps" else
                    any(getattr(c, field) != getattr(default, field) for c in grid))]
    step_counts = sorted({c.steps for c in grid})
    extra = len(optional)
    lines = [f"# Instance optimisation settings on validation pairs ({args.similarity}, "
             f"{'/'.join(map(str, step_counts))} steps)", "",
             f"Model `{args.model}`{training_state(args.model)}; its validation split: "
             f"{len(volumes)} subjects, "
             f"{len(pairs)} ordered pairs, "
             + (f"{args.batch_size} per batch" if args.batch_size else "all in one batch")
             + ".", "",
             *reporting.table(
                 ["space", "lr", "lambda", "smoothing", *(head for head, _ in optional),
                  "val Dice", "folding (%)", "s (all pairs)"],
                 [["network alone", "", "", "", *[""] * extra, f"{base[0]:.4f}",
                   f"{base[1]:.3f}", f"{base[2]:.2f}"],
                  *[[config.space, f"{config.lr:g}", f"{config.reg_weight:g}",
                     config.smoothing, *(getattr(config, field) for _, field in optional),
                     f"{dice:.4f}" + (" **chosen**" if best is not None
                                      and config == best[0] else ""),
                     f"{folding:.3f}", f"{seconds:.2f}"]
                    for config, dice, folding, seconds in rows]])]
    lines += ["", (f"Chosen (highest Dice with {rule}): "
                   f"`--instance_space={best[0].space} --instance_lr={best[0].lr:g} "
                   f"--instance_lambda={best[0].reg_weight:g} "
                   f"--instance_smoothing={best[0].smoothing}"
                   + "".join(f" --instance_{field}={getattr(best[0], field)}"
                             for _, field in optional) + "`"
                   if best else
                   f"No setting kept {rule}: register with this model alone "
                   "(`--instance_steps=0`)."),
              "", *reporting.command_block([command])]
    reporting.write(out, lines)
    if best is not None:
        instance.save_settings(out.with_suffix(".json"), best[0], model=args.model,
                               chosen_with_steps=best[0].steps, val_dice=round(best[1], 4),
                               folding_percent=round(best[2], 4))
    else:  # an earlier sweep's choice must not outlive this one
        out.with_suffix(".json").unlink(missing_ok=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

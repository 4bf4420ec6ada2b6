"""The 3D report on real scans (`make oasis3d-report` -> reports/oasis3d.md).

    python tools/report_oasis3d.py --model ../shared/models/vxm_dense_brain_T1_3D_mse.h5 \
        --data_dir ../shared/data/neurite-oasis-3d --instance_steps 10,25,50 \
        --out reports/oasis3d.md

Registers every ordered pair of the neurite-OASIS 3D subjects at full resolution with:
the original VoxelMorph code (voxelmorph 0.2, when the `reference` extra is installed) on
the model file; ANTs SyN (antspyx defaults, 2 threads, `--ants_python` of `make
baselines`); vxm_tf with the same weights; and vxm_tf plus test-time instance
optimisation for each number of steps (`--instance_*` settings, fixed beforehand, never
chosen on these scans); and each `--extra` model (e.g. the authors' model fine-tuned on
synthetic subjects by make finetune-3d), alone and with instance optimisation (the step
count the settings were chosen with, else the largest) (a model of another input size,
e.g. one trained from scratch at 128^3, through a resize).
Every method is scored by the same code (`vxm_tf.evaluation`):
Dice over the 35 structures, HD95 in mm, folding, SD log det J and seconds per pair on
this machine. Figures go to a folder beside the report.
"""

import argparse
import csv
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vxm_tf import cli

cli.quiet_tensorflow_import()
import compare  # noqa: E402
import reporting  # noqa: E402

from vxm_tf import (  # noqa: E402
    configs,
    evaluation,
    experiment,
    figures,
    hypermorph,
    instance,
    models,
)
from vxm_tf import ops as vxm_ops  # noqa: E402

HAVE_ORIGINAL = all(importlib.util.find_spec(m) for m in ("voxelmorph", "neurite", "tf_keras"))


def external_rows(what, command, volumes, pairs, env):
    """Score registrations made in another process: `command + [IN.npz, OUT.npz]` reads the
    pairs' `moving` / `fixed` arrays and writes `warps` and `seconds` (what: its name)."""
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "in.npz", moving=volumes.images[[i for i, _ in pairs]],
                 fixed=volumes.images[[j for _, j in pairs]])
        run = subprocess.run([*command, f"{tmp}/in.npz", f"{tmp}/out.npz"],
                             capture_output=True, text=True, env=env)
        if run.returncode:
            raise RuntimeError(f"{what} failed: {run.stderr.strip()[-2000:]}")
        out = np.load(f"{tmp}/out.npz")
        warps, seconds = out["warps"], out["seconds"]
    pair_rows, label_rows = [], []
    for (i, j), warp, sec in zip(pairs, warps, seconds):
        row, rows = evaluation.score_pair(volumes, i, j, warp)
        pair_rows.append({**row, "seconds": float(sec)})
        label_rows.extend(rows)
    return pair_rows, label_rows


def original_rows(model_path, volumes, pairs):
    """Score voxelmorph 0.2's own registrations (tools/original_vxm.py, its own process)."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    return external_rows("voxelmorph 0.2", [sys.executable, str(Path(__file__).with_name(
        "original_vxm.py")), str(model_path)], volumes, pairs, env)


def ants_rows(python, volumes, pairs, threads=2):
    """Score ANTs SyN (tools/ants_register.py, run by the `baselines` environment's
    `python`, `threads` ITK threads) on `pairs`."""
    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(threads)}
    return external_rows("ANTs", [python, str(Path(__file__).with_name("ants_register.py"))],
                         volumes, pairs, env)


def per_direction(names, rows_by_method):
    first = rows_by_method[0]
    return ["", "Dice per direction:", "", *reporting.table(
        ["method", *(f"{r['moving']} -> {r['fixed']}" for r in first)],
        [["identity", *(f"{r['dice_before']:.4f}" for r in first)],
         *[[name, *(f"{r['dice_after']:.4f}" for r in rows)]
           for name, rows in zip(names, rows_by_method)]])]


def training_section(run_dir, trained_on=None):
    """The run's settings, validation Dice per epoch and training speed, from its files;
    first those of the run it started from (`--init_model` in a run folder), if any. A run
    folder that kept only its config (its history or timing lost) says so and goes on."""
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    history = []
    if (run_dir / "history.csv").is_file():
        with open(run_dir / "history.csv") as file:
            history = list(csv.DictReader(file))
    timing = (json.loads((run_dir / "timing.json").read_text())
              if (run_dir / "timing.json").is_file() else None)
    d, m, lo, t = config["data"], config["model"], config["loss"], config["train"]
    start = Path(t.get("init_model") or "")
    earlier = (training_section(start.parent, trained_on)
               if (start.parent / "config.json").is_file() else [])
    if timing:
        epochs = timing["epoch_seconds"]
        device = timing.get("device") or trained_on or "the machine that trained it (not recorded)"
        speed = (f"Training speed on {device}: {timing['seconds_per_step']:.3f} s per step (the "
                 f"{len(epochs)} epochs of the last session, {sum(epochs) / 60:.0f} minutes).")
    else:
        speed = "Its timing was not kept."
    curve = (reporting.table(["epoch", *(int(h["epoch"]) + 1 for h in history)],
                             [["validation Dice (synthetic)",
                               *(f"{float(h['val_dice']):.4f}" for h in history)]])
             if history else ["Its per-epoch history was not kept."])
    return [
        *earlier, "", f"## Training (`{run_dir}`)", "",
        (f"Started from `{start}`. " if t.get("init_model") else "")
        + f"Data `{d['data_dir']}` ({d['train']} training, {d['val']} validation subjects), "
        f"{lo['similarity']} + {lo['reg_weight']} x Grad + {lo.get('seg_weight', 0)} x Dice "
        f"on the labels, "
        # a run that starts from a model keeps that model's layers, whatever its model flags
        + ("the architecture of the model it started from" if t.get("init_model") else
           f"int_resolution {m['int_resolution']}, svf_resolution "
           f"{m.get('svf_resolution', 1)}") + f", lr {t['lr']} {t['schedule']}, "
        # a run stopped by its deadline, to be resumed: the epochs it has had so far
        + (f"{len(history)} of {t['epochs']} epochs so far" if 0 < len(history) < t["epochs"]
           else f"{t['epochs']} epochs")
        + f" x {config['steps_per_epoch']} steps, batch {t['batch_size']}, "
        f"precision {config['resolved_precision']}. {speed}", "", *curve]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="VxmDense .h5 or .keras")
    parser.add_argument("--data_dir", required=True, help="neurite-OASIS 3D folder")
    parser.add_argument("--subjects", type=reporting.at_least(2), default=2,
                        help="subjects (all ordered pairs)")
    parser.add_argument("--target_shape", default="", help="resize the scans to this shape "
                        "(e.g. 64,64,64 for a model trained at that size); default: as they are")
    parser.add_argument("--title", default="The authors' pretrained 3D model on real OASIS "
                        "scans")
    parser.add_argument("--instance_steps", default="10,25,50",
                        help="comma-separated step counts (0 or empty: none)")
    parser.add_argument("--instance_settings", help="JSON of instance settings "
                        "(tools/tune_instance.py's choice); default: vxm_tf's defaults, "
                        "chosen on the 2D validation subjects")
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME=PATH",
                        help="more models scored alike (e.g. a fine-tuned run's best.keras), "
                        "alone and with instance optimisation (the settings' chosen step count, "
                        "else the largest); one of another input "
                        "size registers through a resize to it")
    parser.add_argument("--ants_python", help="python of the baselines environment (make "
                        "baselines): adds ANTs SyN, antspyx defaults, 2 threads")
    parser.add_argument("--no_original", action="store_true",
                        help="leave out the voxelmorph 0.2 run")
    parser.add_argument("--run", help="the model's run folder: adds its training history")
    parser.add_argument("--trained_on", help="the training device, where the run's "
                        "timing.json does not name it (runs before vxm_tf recorded it)")
    parser.add_argument("--name", default="vxm_tf, same weights",
                        help="the model's row in the tables")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if not out.parent.is_dir():
        sys.exit(f"error: {out}: folder {out.parent} does not exist")
    try:
        try:
            steps = [int(s) for s in args.instance_steps.split(",") if s.strip() and int(s)]
        except ValueError:
            raise ValueError(f"--instance_steps takes comma-separated integers, got "
                             f"{args.instance_steps!r}") from None
        settings = (instance.load_settings(args.instance_settings, 0)
                    if args.instance_settings else instance.InstanceConfig())
        io_configs = [dataclasses.replace(settings, steps=n) for n in steps]
        # the extra models get the step count the settings were chosen with, if recorded
        extra_config = io_configs[-1] if io_configs else None
        if args.instance_settings and io_configs:
            try:
                extra_config = instance.load_settings(args.instance_settings, None)
            except ValueError:  # no step count recorded: the largest
                pass
        model = hypermorph.load(args.model, source=f"--model={args.model}")
        extras = []
        for spec in args.extra:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ValueError(f"--extra takes NAME=PATH, got {spec!r}")
            extras.append((name, hypermorph.load(path, source=f"--extra {spec}"), path))
        try:
            shape = tuple(int(n) for n in args.target_shape.split(",") if n.strip())
        except ValueError:
            raise ValueError(f"--target_shape takes comma-separated integers, got "
                             f"{args.target_shape!r}") from None
        config = configs.DataConfig(dataset="oasis", data_dir=args.data_dir, train=0,
                                    val=0, test=args.subjects, target_shape=shape)
        volumes = experiment.build_splits(config)["test"]
        if volumes is None or volumes.shape != tuple(model.inshape):
            raise ValueError(f"{args.data_dir}: volumes of shape "
                             f"{None if volumes is None else volumes.shape}, the model "
                             f"takes {tuple(model.inshape)}")
    except (ValueError, OSError) as err:
        sys.exit(f"error: {err}")
    pairs = experiment.split_pairs(volumes)
    names, results = [], []
    model_file = models.resolve(args.model)  # a registered name: its file
    if HAVE_ORIGINAL and not args.no_original and model_file.endswith(".h5"):
        print("voxelmorph 0.2", flush=True)
        names.append("voxelmorph 0.2 (original code)")
        results.append(original_rows(model_file, volumes, pairs))
    if args.ants_python:
        print("ANTs SyN", flush=True)
        names.append("ANTs SyN (antspyx defaults, 2 threads)")
        results.append(ants_rows(args.ants_python, volumes, pairs))
    for label, ic in [(args.name, None)] + [
            (f"{args.name} + instance optimisation, {c.steps} steps", c) for c in io_configs]:
        print(label, flush=True)
        start = time.perf_counter()
        results.append(evaluation.evaluate_pairs(model, volumes, pairs, instance_config=ic))
        names.append(label)
        print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    for name, extra, _ in extras:
        for label, ic in [(name, None)] + ([(f"{name} + instance optimisation, "
                                             f"{extra_config.steps} steps", extra_config)]
                                           if extra_config else []):
            print(label, flush=True)
            results.append(evaluation.evaluate_pairs(extra, volumes, pairs,
                                                     instance_config=ic))
            names.append(label)
    summaries = [evaluation.summarise(*rows) for rows in results]

    figure_dir = out.with_suffix("")
    figure_dir.mkdir(exist_ok=True)
    figures.dice_boxplot({"identity": results[0][1],
                          **{n: rows[1] for n, rows in zip(names, results)}},
                         figure_dir / "dice_per_structure.png")
    i, j = pairs[0]
    inputs = (volumes.images[i][None, ..., None], volumes.images[j][None, ..., None])
    shown = [("vxm_tf", None)] + ([(f"+{io_configs[-1].steps} steps", io_configs[-1])]
                                  if io_configs else [])
    warps = [instance.optimise(model, *inputs, c or instance.InstanceConfig()) for _, c in shown]
    moved = [np.asarray(vxm_ops.transform(inputs[0], w))[0, ..., 0] for w in warps]
    pair_name = f"pair_{volumes.names[i]}_{volumes.names[j]}.png"
    figures.pair_figure(volumes.images[i], volumes.images[j], moved, [w[0] for w in warps],
                        figure_dir / pair_name, titles=[n for n, _ in shown],
                        title=f"{volumes.names[i]} -> {volumes.names[j]}")
    rel = figure_dir.name
    command = reporting.command_line("report_oasis3d.py", argv)
    text = "\n".join([
        f"# {args.title}", "",
        f"Model: `{args.model}`; data: `{args.data_dir}` ({len(volumes)} subjects, all "
        f"{len(pairs)} ordered pairs, {'x'.join(map(str, volumes.shape))} voxels, "
        f"{len(volumes.labels)} structures). Instance optimisation: "
        f"{settings.describe()}, at the model's integration grid: "
        + (f"the settings in `{args.instance_settings}` (chosen on validation subjects by "
           "tools/tune_instance.py)" if args.instance_settings else
           "vxm_tf's defaults, chosen on the 2D validation subjects "
           "(reports/instance_sweep_oasis2d.md)")
        + ", not on these scans. Seconds per pair on this machine (batch 1, after a warm-up "
        "call).", *[f"\n{name}: `{path}`"
                    + ("" if tuple(m.inshape) == volumes.shape else
                       f" (its input is {'x'.join(map(str, m.inshape))}: the scans are "
                       "resized to it, and its displacements back)") + "."
                    for name, m, path in extras], "",
        compare.report(names, summaries, [f"{rel}/dice_per_structure.png",
                                          f"{rel}/{pair_name}"], command).rstrip("\n"),
        *per_direction(names, [rows[0] for rows in results]),
        *(training_section(args.run, args.trained_on) if args.run else []),
        *[line for _, _, path in extras
          if (Path(models.resolve(path)).parent / "config.json").is_file()
          for line in training_section(Path(os.path.relpath(models.resolve(path))).parent)]
    ]) + "\n"
    print(reporting.write(out, text), end="")


if __name__ == "__main__":
    main()

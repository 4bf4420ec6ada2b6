"""Evaluate a trained model: `python -m vxm_tf.evaluate --model=runs/x/best.keras`.

Registers every test pair (by default the test split of the data the model was trained on,
read from the run directory's config.json; data flags given here override it), warps the
moving segmentation with nearest interpolation and writes per-pair and per-label Dice,
Hausdorff distance (max and HD95, mm), folding and seconds per pair, before and after
registration, to --out_dir (per_pair.csv, per_label.csv, summary.json, summary.md), with
figures: --figures example pairs (moving / fixed / moved / difference / deformed grid /
Jacobian determinant) and a per-structure Dice box plot (left and right merged).
"""

import dataclasses
import sys
from pathlib import Path

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()
import numpy as np  # noqa: E402

from vxm_tf import (  # noqa: E402
    configs,
    data,
    evaluation,
    experiment,
    figures,
    files,
    hypermorph,
    instance,
    models,
    perturb,
    registration,
)
from vxm_tf import ops as vxm_ops  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    configs.define_flags()
    instance.define_flags()
    hypermorph.define_flags()
    flags.DEFINE_string("model", None, "model file (.keras, or an original voxelmorph .h5) or "
                        "registered name (vxm-models list)")
    flags.DEFINE_string("out_dir", "", "report folder (default: eval-<split>/ beside a model "
                        "file; eval-<name>-<split>/ in the working folder for a registered "
                        "model)")
    flags.DEFINE_string("pairs", "", "optional file of 'moving fixed' subject names per line")
    flags.DEFINE_enum("split", "test", ("test", "val", "train"), "split whose pairs to score")
    flags.DEFINE_bool("surface", True, "compute Hausdorff distances")
    flags.DEFINE_integer("figures", 5, "example pairs drawn (chosen with --seed)")
    flags.DEFINE_string("perturb", "", "intensity perturbation of the moving images only, "
                        "e.g. 'bias:0.5' or 'gamma:0.5,noise:0.02' (names: "
                        f"{', '.join(perturb.PERTURBATIONS)}); seeded by --seed")
    flags.mark_flags_as_required(["model"])


def data_config(model_path, fl):
    """The run's data configuration, with any data flag given on the command line applied;
    a registered model's data folder that is not here is a `DatasetError` saying how to
    point at it."""
    config = configs.config_from_flags(fl, training=False).data
    saved = configs.run_data_config(model_path)
    if saved is None:
        return config
    given = {f.name for f in dataclasses.fields(config)
             if f.name in fl and fl[f.name].present}
    merged = dataclasses.replace(saved, **{k: getattr(config, k) for k in given})
    name = models.name_of(model_path)
    if name and merged.data_dir and not Path(merged.data_dir).is_dir():
        raise data.DatasetError(
            f"{name} was trained and scored on {Path(merged.data_dir).name}, which is not at "
            f"{merged.data_dir}: give its folder with --data_dir (the neurite-OASIS archives: "
            "tools/fetch_oasis.py in the repository)")
    return merged


def read_pairs(path, volumes):
    index = {name: k for k, name in enumerate(volumes.names)}
    pairs = []
    for number, line in enumerate(data.datasets.read_list(path), 1):
        names = line.replace(",", " ").split()
        if len(names) != 2 or any(n not in index for n in names):
            raise data.DatasetError(f"{path}:{number}: expected two subject names of the "
                                    f"{FLAGS.split} split, got {line!r}")
        pairs.append((index[names[0]], index[names[1]]))
    if not pairs:
        raise data.DatasetError(f"--pairs={path}: no pairs listed")
    return pairs


def draw_figures(model, volumes, moving_images, pairs, label_rows, out_dir,
                 instance_config=None):
    """Example pairs (chosen with --seed) and the per-structure Dice box plot."""
    rng = np.random.default_rng(FLAGS.seed)
    chosen = rng.choice(len(pairs), min(FLAGS.figures, len(pairs)), replace=False)
    for n in sorted(chosen):
        i, j = pairs[n]
        moving, fixed = moving_images[i], volumes.images[j]
        warp = registration.displacements(model, moving[None, ..., None],
                                          fixed[None, ..., None], instance_config)
        moved = np.asarray(vxm_ops.transform(moving[None, ..., None], warp))[0, ..., 0]
        figures.pair_figure(moving, fixed, moved, warp[0],
                            Path(out_dir) / f"pair_{volumes.names[i]}_{volumes.names[j]}.png",
                            title=f"{volumes.names[i]} -> {volumes.names[j]}")
    figures.dice_boxplot({"identity": label_rows, Path(FLAGS.model).stem: label_rows},
                         Path(out_dir) / "dice_per_structure.png")


def main(argv):
    cli.check_args(argv)
    registered = models.name_of(FLAGS.model)  # never write into the package or the cache
    # a HyperMorph model's weight names its own folder (each weight scored apart)
    at = "" if FLAGS.hyper_lambda is None else f"-h{FLAGS.hyper_lambda:g}"
    out_dir = FLAGS.out_dir or (f"eval-{registered}-{FLAGS.split}{at}" if registered
                                else str(Path(FLAGS.model).parent / f"eval-{FLAGS.split}{at}"))
    if FLAGS.figures < 0:
        cli.fail(f"--figures must be 0 or more, got {FLAGS.figures}")
    cli.call(files.check_output_folder, out_dir)
    try:
        model = hypermorph.load(FLAGS.model, FLAGS.hyper_lambda)
        instance_config = instance.config_from_flags(FLAGS)
        instance.check_for_model(instance_config, model)
        config = data_config(FLAGS.model, FLAGS)
        volumes = experiment.build_splits(config)[FLAGS.split]
        if volumes is None:
            raise data.DatasetError(f"the {FLAGS.split} split is empty")
        if len(volumes) < 2 and not FLAGS.pairs:
            raise data.DatasetError(f"--{FLAGS.split}={len(volumes)}: scoring needs pairs, "
                                    "so at least 2 subjects")
        if len(volumes.shape) != len(model.inshape):
            raise ValueError(f"the model registers {len(model.inshape)}D images, the data are "
                             f"{len(volumes.shape)}D {volumes.shape}")
        if volumes.shape != model.inshape:
            raise ValueError(f"the model takes {len(model.inshape)}D images of shape "
                             f"{model.inshape}, the data are {volumes.shape}; set "
                             "--target_shape")
        pairs = (read_pairs(FLAGS.pairs, volumes) if FLAGS.pairs
                 else experiment.split_pairs(volumes, atlas=bool(config.atlas)))
        perturbations = perturb.parse_perturbations(FLAGS.perturb)
        moving_images = np.stack([perturb.perturb(image, perturbations, FLAGS.seed + k)
                                  for k, image in enumerate(volumes.images)])

        def progress(done, total):  # redrawn in place on a terminal only
            if sys.stderr.isatty():
                sys.stderr.write(f"\rregistered {done}/{total} pairs")
                if done == total:
                    sys.stderr.write("\n")
        rows = evaluation.evaluate_pairs(model, volumes, pairs, FLAGS.surface, progress,
                                         moving_images, instance_config)
        summary = evaluation.summarise(*rows)
        title = f"{Path(FLAGS.model).name} on {len(pairs)} pairs"
        hyper = getattr(model, "hyper_lambda", None)
        if hyper is not None:  # the HyperMorph weight it registered at
            summary["hyper_lambda"] = hyper[0] if len(hyper) == 1 else list(hyper)
            title += f", h = {', '.join(f'{h:g}' for h in hyper)}"
        with files.all_or_nothing():  # the tables and figures together, or none
            evaluation.write_report(out_dir, *rows, summary, title=title)
            draw_figures(model, volumes, moving_images, pairs, rows[1], out_dir,
                         instance_config)
    except (configs.ConfigError, data.DatasetError, ValueError, OSError) as err:
        cli.fail(str(err))
    hd95 = (f"HD95 {summary['hd95_before']:.2f} -> {summary['hd95_after']:.2f} mm"
            if FLAGS.surface else "HD95 not computed (--nosurface)")
    print(f"Dice {summary['dice_before']:.3f} -> {summary['dice_after']:.3f}, {hd95}, folding "
          f"{summary['folding_percent']:.3f}%, {summary['seconds']:.4f} s per pair; {out_dir}")


def console():
    """The `vxm-evaluate` command (also `python -m vxm_tf.evaluate`)."""
    define_flags()
    groups = dict(configs.flag_groups())
    shown = [("model", ["model", "hyper_lambda"]),
             ("evaluation", ["split", "pairs", "out_dir", "surface", "figures", "perturb",
                             "seed"]),
             ("data (default: the model's training run)", groups["data"]),
             ("instance optimisation", list(instance.FLAG_NAMES))]
    hidden = [n for title in ("augmentation", "model", "loss", "training")
              for n in groups[title] if n != "seed"]
    cli.run(main, __doc__, shown, hide=hidden)


if __name__ == "__main__":
    console()

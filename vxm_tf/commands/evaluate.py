"""Evaluate a trained model: `vxm-evaluate --model=runs/x/best.keras`.

Registers every test pair (by default the test split of the data the model was trained on,
read from the run directory's config.json; data flags given here override it), warps the
moving segmentation with nearest interpolation and writes per-pair and per-label Dice,
Hausdorff distance (max and HD95, mm), folding and seconds per pair, before and after
registration, to --out_dir (per_pair.csv, per_label.csv, summary.json, summary.md), with
figures: --figures example pairs (moving / fixed / moved / difference / deformed grid /
Jacobian determinant) and a per-structure Dice box plot (left and right merged).
"""

import sys

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

from vxm_tf import configs, data, evaluation, hypermorph, instance, perturb  # noqa: E402

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


def main(argv):
    cli.check_args(argv)
    try:
        instance_config = instance.config_from_flags(FLAGS)
    except (configs.ConfigError, ValueError, OSError) as err:
        cli.fail(str(err))
    out_dir = FLAGS.out_dir or evaluation.default_out_dir(
        FLAGS.model, FLAGS.split, FLAGS.hyper_lambda, instance_config.steps, FLAGS.perturb)

    def progress(done, total):  # redrawn in place on a terminal only
        if sys.stderr.isatty():
            sys.stderr.write(f"\rregistered {done}/{total} pairs")
            if done == total:
                sys.stderr.write("\n")
    try:
        summary = evaluation.evaluate_model(
            FLAGS.model, evaluation.data_config(FLAGS.model, FLAGS), out_dir, FLAGS.split,
            FLAGS.pairs, FLAGS.surface, FLAGS.figures, FLAGS.perturb, FLAGS.seed,
            instance_config, FLAGS.hyper_lambda, progress)
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


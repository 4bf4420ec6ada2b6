"""Choose a HyperMorph model's smoothness weight on validation subjects, in seconds.

    vxm-choose-lambda --model=runs/hyper/model.keras     # writes runs/hyper/chosen.keras

Registers the validation pairs of the model's training run (or the data flags given) at
each weight `h` of `--grid`, prints Dice and folding per weight, and writes the model at
the chosen weight as `--out` (default: `chosen.keras` beside the model, where its run's
config.json names the data): `vxm-register --model=<out>` and `vxm-evaluate --model=<out>`
then need no `--hyper_lambda`. The highest Dice wins, or with `--min_dice`
the least folding among the weights that reach it.
"""

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

from vxm_tf import configs, data, evaluation, lambda_choice  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    configs.define_flags()
    flags.DEFINE_string("model", None, "a HyperMorph model (.keras, or a registered name)")
    flags.DEFINE_string("out", "", "output: the model at the chosen weight (.keras; default "
                        "chosen.keras beside a model file)")
    flags.DEFINE_string("grid", lambda_choice.DEFAULT_GRID, "weights h in [0, 1] to score")
    flags.DEFINE_enum("split", "val", ("val", "train"), "split whose pairs score the weights "
                      "(never the test subjects)")
    flags.DEFINE_float("min_dice", None, "choose the least folding among the weights of at "
                       "least this Dice (default: the highest Dice)")
    flags.DEFINE_integer("max_pairs", 0, "score at most this many pairs (drawn with --seed; "
                         "0: all)")
    flags.mark_flags_as_required(["model"])


def main(argv):
    cli.check_args(argv)
    try:
        grid = lambda_choice.parse_grid(FLAGS.grid)
        out = FLAGS.out or lambda_choice.default_out(FLAGS.model)
        if configs.run_data_config(FLAGS.model) is None and not any(
                FLAGS[name].present for name in configs.flags_of(configs.DataConfig)):
            raise ValueError(f"--model={FLAGS.model}: no run config.json beside it to name "
                             "its data: give the data flags (--dataset, --data_dir, ...)")
        chosen, _, pairs = lambda_choice.choose_lambda_on_split(
            FLAGS.model, out, grid, evaluation.data_config(FLAGS.model, FLAGS), FLAGS.split,
            FLAGS.max_pairs, FLAGS.seed, FLAGS.min_dice, default_out=not FLAGS.out)
    except (configs.ConfigError, data.DatasetError, ValueError, OSError) as err:
        cli.fail(str(err))
    print(f"chose h={chosen['hyper_lambda']:g} (lambda {chosen['lambda']:.4g}): Dice "
          f"{chosen['dice']:.4f}, folding {chosen['folding_percent']:.4f}% on "
          f"{len(pairs)} {FLAGS.split} pairs; wrote {out}")


def console():
    """The `vxm-choose-lambda` command (also `python -m vxm_tf.choose_lambda`)."""
    define_flags()
    groups = dict(configs.flag_groups())
    shown = [("model", ["model", "out"]),
             ("choice", ["grid", "split", "min_dice", "max_pairs", "seed"]),
             ("data (default: the model's training run)", groups["data"])]
    hidden = [n for title in ("augmentation", "model", "loss", "training")
              for n in groups[title] if n != "seed"]
    cli.run(main, __doc__, shown, hide=hidden)


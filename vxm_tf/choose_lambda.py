"""Choose a HyperMorph model's smoothness weight on validation subjects, in seconds.

    vxm-choose-lambda --model=runs/hyper/model.keras     # writes runs/hyper/chosen.keras

Registers the validation pairs of the model's training run (or the data flags given) at
each weight `h` of `--grid`, prints Dice and folding per weight, and writes the model at
the chosen weight as `--out` (default: `chosen.keras` beside the model, where its run's
config.json names the data): `vxm-register --model=<out>` and `vxm-evaluate --model=<out>`
then need no `--hyper_lambda`. The highest Dice wins, or with `--min_dice`
the least folding among the weights that reach it.
"""

from pathlib import Path

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

import numpy as np  # noqa: E402

from vxm_tf import configs, data, experiment, files, hypermorph, models, networks  # noqa: E402
from vxm_tf.evaluate import data_config  # noqa: E402

FLAGS = flags.FLAGS
DEFAULT_GRID = ",".join(f"{h:g}" for h in np.round(np.linspace(0, 1, 21), 2))


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    configs.define_flags()
    flags.DEFINE_string("model", None, "a HyperMorph model (.keras, or a registered name)")
    flags.DEFINE_string("out", "", "output: the model at the chosen weight (.keras; default "
                        "chosen.keras beside a model file)")
    flags.DEFINE_string("grid", DEFAULT_GRID, "weights h in [0, 1] to score")
    flags.DEFINE_enum("split", "val", ("val", "train"), "split whose pairs score the weights "
                      "(never the test subjects)")
    flags.DEFINE_float("min_dice", None, "choose the least folding among the weights of at "
                       "least this Dice (default: the highest Dice)")
    flags.DEFINE_integer("max_pairs", 0, "score at most this many pairs (drawn with --seed; "
                         "0: all)")
    flags.mark_flags_as_required(["model"])


def parse_grid(text):
    """`--grid` as sorted floats in [0, 1]; `ValueError` naming the flag otherwise."""
    try:
        grid = sorted({float(v) for v in text.replace(" ", "").split(",") if v})
    except ValueError:
        raise ValueError(f"--grid={text}: expected comma-separated numbers") from None
    if not grid:
        raise ValueError("--grid is empty: give the weights to score, e.g. 0,0.1,0.2")
    if not all(0 <= h <= 1 for h in grid):
        raise ValueError(f"--grid={text}: weights lie in [0, 1]")
    return grid


def default_out(model):
    """`chosen.keras` beside a model file; a registered model needs `--out` (its folder is
    the package's or the cache's)."""
    if models.name_of(model):
        raise ValueError(f"--model={model} is a registered model: give --out")
    return str(Path(model).parent / "chosen.keras")


# a run folder's training files, which --out must not replace (--resume reads them)
RUN_FILES = ("last.keras", "best.keras", "model.keras")


def check_out(out, model, default=False):
    """`--out` a new-or-replaceable `.keras` file in a writable folder, not the model nor a
    run's checkpoint (`default`: the value is the default, not the user's)."""
    path = Path(out)
    if default and path.resolve() == Path(str(models.resolve(model))).resolve():
        raise ValueError(f"--model={model} is the default output ({out}) itself: give --out")
    if path.name in RUN_FILES and (path.parent / "config.json").is_file():
        raise ValueError(f"--out={out}: a checkpoint of the run in {path.parent} "
                         "(--resume reads it); give another name")
    if path.suffix != ".keras":
        raise ValueError(f"--out={out}: a Keras model file ending in .keras")
    if path.is_dir():
        raise ValueError(f"--out={out}: a folder stands there; give a file name")
    if not path.parent.is_dir():
        raise ValueError(f"--out={out}: folder {path.parent} does not exist")
    files.check_output_folder(str(path.parent), "--out")
    files.check_not_inputs(out, {"--model": str(models.resolve(model))}, "--out")


def choose_lambda(model_path, out, grid, volumes, pairs, min_dice=None, log=print):
    """Score `grid` on `pairs` of `volumes`, log a table, save the model at the chosen
    weight to `out`; returns `(chosen row, rows)` (`hypermorph.score_grid`'s)."""
    model = networks.VxmDense.load(model_path)
    if not isinstance(model, hypermorph.HyperVxmDense):
        raise ValueError(f"--model={model_path} is not a HyperMorph model (train one with "
                         "--hyper)")
    model = model.at_lambda(None) if model.hyper_lambda is not None else model
    if not model.responds_to_lambda():
        raise ValueError(f"--model={model_path}: {hypermorph.DEAD_HYPERNET}")
    if tuple(volumes.shape) != tuple(model.inshape):
        raise ValueError(f"the model takes images of shape {tuple(model.inshape)}, the data "
                         f"are {tuple(volumes.shape)}; set --target_shape")
    rows = hypermorph.score_grid(model, volumes, pairs, grid)
    chosen = hypermorph.choose(rows, min_dice)
    log(f"{'h':>6} {'lambda':>9} {'Dice':>7} {'folding %':>10}")
    for row in rows:
        mark = "  <- chosen" if row is chosen else ""
        log(f"{row['hyper_lambda']:6.3f} {row['lambda']:9.4g} {row['dice']:7.4f} "
            f"{row['folding_percent']:10.4f}{mark}")
    networks.save_model(model.at_lambda(chosen["hyper_lambda"]), out)
    return chosen, rows


def main(argv):
    cli.check_args(argv)
    try:
        grid = parse_grid(FLAGS.grid)
        if FLAGS.max_pairs < 0:
            raise ValueError(f"--max_pairs must be 0 (all) or more, got {FLAGS.max_pairs}")
        out = FLAGS.out or default_out(FLAGS.model)
        check_out(out, str(FLAGS.model), default=not FLAGS.out)
        if FLAGS.min_dice is not None and not 0 <= FLAGS.min_dice <= 1:
            raise ValueError(f"--min_dice is a Dice in [0, 1], got {FLAGS.min_dice}")
        if configs.run_data_config(FLAGS.model) is None and not any(
                FLAGS[name].present for name in configs.flags_of(configs.DataConfig)):
            raise ValueError(f"--model={FLAGS.model}: no run config.json beside it to name "
                             "its data: give the data flags (--dataset, --data_dir, ...)")
        config = data_config(FLAGS.model, FLAGS)
        volumes = experiment.build_splits(config)[FLAGS.split]
        if volumes is None or len(volumes) < 2:
            raise data.DatasetError(f"the {FLAGS.split} split needs at least 2 subjects")
        pairs = experiment.split_pairs(volumes, limit=FLAGS.max_pairs, seed=FLAGS.seed,
                                       atlas=bool(config.atlas))
        chosen, _ = choose_lambda(FLAGS.model, out, grid, volumes, pairs, FLAGS.min_dice)
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


if __name__ == "__main__":
    console()

"""Choose a HyperMorph model's smoothness weight `h` on validation subjects and write the
model at that weight (`vxm-choose-lambda`), so that registering and evaluating it need no
`--hyper_lambda`."""

from pathlib import Path

import numpy as np

from vxm_tf import files, hypermorph, models, networks

# the weights `vxm-choose-lambda` scores by default: 0, 0.05, ..., 1
DEFAULT_GRID = ",".join(f"{h:g}" for h in np.round(np.linspace(0, 1, 21), 2))


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
    files.check_not_inputs(out, {"--model": str(models.resolve(model))}, "--out")
    if models.HERE.resolve() in path.resolve().parents:
        raise ValueError(f"--out={out}: inside vxm_tf's registered models "
                         f"({models.HERE}); write it elsewhere")
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


def check_choice(out, model_path, min_dice=None, default_out=False):
    """The choice's own arguments, before any work: `min_dice` a Dice in [0, 1] (or None),
    `out` as `check_out` wants it (`default_out`: it is the default, not the user's)."""
    if min_dice is not None and not 0 <= min_dice <= 1:
        raise ValueError(f"--min_dice is a Dice in [0, 1], got {min_dice}")
    check_out(out, str(model_path), default=default_out)


def hyper_model(model_path):
    """The HyperMorph model of `model_path` (file or registered name) taking `h` as an
    input; `ValueError` naming `--model` for any other model, or a dead hypernetwork."""
    model = networks.VxmDense.load(model_path)
    if not isinstance(model, hypermorph.HyperVxmDense):
        raise ValueError(f"--model={model_path} is not a HyperMorph model (train one with "
                         "--hyper)")
    model = model.at_lambda(None) if model.hyper_lambda is not None else model
    if not model.responds_to_lambda():
        raise ValueError(f"--model={model_path}: {hypermorph.DEAD_HYPERNET}")
    return model


def choose_lambda(model_path, out, grid, volumes, pairs, min_dice=None, log=print,
                  model=None):
    """Register `pairs` (`[(i, j)]` into `volumes`, a `Volumes` of the model's input
    shape) at each weight `h` of `grid` (floats in [0, 1]), log a table through `log`, and
    save the model at the chosen weight to `out` (`.keras`): the highest Dice, or with
    `min_dice` the least folding among the weights that reach it. `model`: the loaded
    `hyper_model(model_path)`, if at hand. Returns `(chosen row, rows)`
    (`hypermorph.score_grid`'s rows: hyper_lambda, lambda, dice, folding_percent)."""
    check_choice(out, model_path, min_dice)
    model = hyper_model(model_path) if model is None else model
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


def choose_lambda_on_split(model_path, out, grid, config, split="val", max_pairs=0, seed=0,
                           min_dice=None, log=print, default_out=False):
    """`choose_lambda` on the pairs of `split` of the data `config` (`DataConfig`)
    describes (at most `max_pairs` of them, drawn with `seed`; 0: all), every argument and
    the model checked before the data are read. Returns `(chosen row, rows, pairs)`."""
    from vxm_tf import data, experiment
    check_choice(out, model_path, min_dice, default_out)
    if int(max_pairs) != max_pairs or max_pairs < 0:
        raise ValueError(f"--max_pairs must be 0 (all) or more, got {max_pairs}")
    model = hyper_model(model_path)
    if split == "train":
        log("warning: choosing h on the training pairs the model learned from; the "
            "validation pairs (--split=val) measure how it registers others")
    volumes = experiment.build_splits(config)[split]
    if volumes is None or len(volumes) < 2:
        raise data.DatasetError(f"the {split} split needs at least 2 subjects")
    pairs = experiment.split_pairs(volumes, limit=max_pairs, seed=seed,
                                   atlas=bool(config.atlas))
    chosen, rows = choose_lambda(model_path, out, grid, volumes, pairs, min_dice, log, model)
    return chosen, rows, pairs

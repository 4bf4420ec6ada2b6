"""Keras Tuner search of the smoothness weight lambda (optionally the learning rate and the
NCC window), scored by Dice on held-out pairs of training subjects.

The model, losses and optimiser come from `vxm_tf.experiment`, as for training, so a
flag means the same thing in both. Trials are resumable (the tuner's folder holds the
oracle state) and run distributed with Keras Tuner's chief / worker protocol
(`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT`).
"""

import copy
import dataclasses
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_tuner
import numpy as np

from vxm_tf import cli, configs, data, experiment, figures, files, metrics, registration

TUNERS = ("random", "bayesian", "hyperband", "grid")
OBJECTIVES = ("dice", "dice_minus_folding")


@dataclass
class TuneConfig:
    """What to search and how.

    lambda_min, lambda_max: log-uniform range of lambda.
    tune_lr, tune_window: also search the learning rate (1e-4 to 1e-2, log) and the NCC
        window (5 to 11, odd).
    holdout: training subjects held out to score trials (never the test subjects).
    objective: 'dice', or 'dice_minus_folding' (Dice minus folding_weight * folding %).
    """

    tuner: str = configs.option("random", "search algorithm (grid: log-spaced lambda "
                                "values)", choices=TUNERS)
    trials: int = configs.option(6, "trials (random and bayesian)")
    epochs: int = configs.option(1, "epochs per trial", flag="tune_epochs")
    lambda_min: float = configs.option(1e-3, "lambda range, lower end (log-uniform)")
    lambda_max: float = configs.option(10.0, "lambda range, upper end")
    tune_lr: bool = configs.option(False, "also search the learning rate")
    tune_window: bool = configs.option(False, "also search the NCC window")
    holdout: int = configs.option(4, "training subjects held out to score trials")
    holdout_pairs: int = configs.option(12, "held-out pairs scored")
    objective: str = configs.option("dice", "what trials maximise", choices=OBJECTIVES)
    folding_weight: float = configs.option(0.1, "dice_minus_folding: Dice points lost per % "
                                           "of folded voxels")
    directory: str = configs.option("runs/tune", "tuning folder (resumable)",
                                    flag="tune_dir")
    seed: int = 0  # the training flag --seed


def check_tune_config(tune):
    if not 0 < tune.lambda_min <= tune.lambda_max:
        raise configs.ConfigError(
            f"--lambda_min and --lambda_max must satisfy 0 < min <= max, got "
            f"{tune.lambda_min} and {tune.lambda_max}")
    if tune.tuner not in TUNERS:
        raise configs.ConfigError(f"--tuner must be one of {TUNERS}, got {tune.tuner!r}")
    if tune.objective not in OBJECTIVES:
        raise configs.ConfigError(f"--objective must be one of {OBJECTIVES}, got "
                                     f"{tune.objective!r}")
    if tune.trials < 1 or tune.epochs < 1 or tune.holdout < 2:
        raise configs.ConfigError(
            f"--trials and --tune_epochs must be positive and --holdout at least 2, got "
            f"{tune.trials}, {tune.epochs}, {tune.holdout}")


class HoldoutScores(keras.callbacks.Callback):
    """Adds val_dice, val_folding (% voxels) and val_score to each epoch's logs."""

    def __init__(self, volumes, pairs, objective, folding_weight):
        super().__init__()
        self.volumes, self.pairs = volumes, pairs
        self.objective, self.folding_weight = objective, folding_weight
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        dice, folding = [], []
        for (_, j), warp, moved in registration.register_pairs(self.model, self.volumes,
                                                                self.pairs):
            dice.append(metrics.mean_dice(moved, self.volumes.segs[j], self.volumes.labels))
            folding.append(metrics.folding_percent(warp))
        logs["val_dice"] = float(np.mean(dice))
        logs["val_folding"] = float(np.mean(folding))
        penalty = self.folding_weight * logs["val_folding"]
        logs["val_score"] = logs["val_dice"] - (penalty if self.objective != "dice" else 0)
        logs["seconds"] = time.perf_counter() - self.start


class VxmHyperModel(keras_tuner.HyperModel):
    """Builds and compiles VxmDense with lambda (and optionally lr, window) drawn by `hp`."""

    def __init__(self, config, tune, train, holdout, steps_per_epoch):
        super().__init__(name="vxm_dense")
        self.config, self.tune = config, tune
        self.train, self.holdout, self.steps = train, holdout, steps_per_epoch

    def trial_config(self, hp):
        config = copy.deepcopy(self.config)
        step = None
        if self.tune.tuner == "grid" and self.tune.lambda_max > self.tune.lambda_min:
            # trials values spaced evenly on a log axis, both ends included
            step = (self.tune.lambda_max / self.tune.lambda_min) ** (
                1 / max(self.tune.trials - 1, 1))
        config.loss.reg_weight = hp.Float("lambda", self.tune.lambda_min, self.tune.lambda_max,
                                          sampling="log", step=step)
        if self.tune.tune_lr:
            config.train.lr = hp.Float("lr", 1e-4, 1e-2, sampling="log")
        if self.tune.tune_window:
            config.loss.window = hp.Int("window", 5, 11, step=2)
        return config

    def build(self, hp):
        config = self.trial_config(hp)
        model = experiment.build_model(config.model, self.train.shape)
        return experiment.compile_model(model, config, self.steps * self.tune.epochs)

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        config = self.trial_config(hp)
        flow_shape = tuple(model.outputs[-1].shape[1:])
        pairs = experiment.split_pairs(self.train)
        train_ds = data.fit_data(data.PairSource(
            self.train, pairs, batch_size=config.train.batch_size, seed=config.train.seed,
            flow_shape=flow_shape, bidir=config.model.bidir, repeat=True,
            augmentation=config.data.augmentation), self.steps)
        holdout_pairs = experiment.split_pairs(self.holdout, self.tune.holdout_pairs,
                                               seed=self.tune.seed)
        scores = HoldoutScores(self.holdout, holdout_pairs, self.tune.objective,
                               self.tune.folding_weight)
        experiment.build_for_fit(model, train_ds)
        return model.fit(train_ds, epochs=kwargs.get("epochs", self.tune.epochs),
                         initial_epoch=kwargs.get("initial_epoch", 0),
                         steps_per_epoch=self.steps, callbacks=[scores, *callbacks],
                         verbose=cli.fit_verbosity(config.train.verbose), shuffle=False)


def split_holdout(volumes, count):
    """Training volumes split into (train, holdout): the last `count` subjects held out."""
    if count >= len(volumes) - 1:
        raise configs.ConfigError(f"--holdout {count} leaves fewer than 2 of the "
                                     f"{len(volumes)} training subjects to train on")

    def part(index):
        return data.Volumes([volumes.names[k] for k in index], volumes.images[index],
                            volumes.segs[index], volumes.label_names,
                            volumes.voxel_sizes[index])
    n = len(volumes) - count
    return part(np.arange(n)), part(np.arange(n, len(volumes)))


def make_tuner(tune, hypermodel):
    objective = keras_tuner.Objective("val_score", direction="max")
    common = dict(objective=objective, directory=tune.directory, project_name="trials",
                  overwrite=False, seed=tune.seed)
    if tune.tuner == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=tune.epochs,
                                     hyperband_iterations=1, **common)
    cls = {"random": keras_tuner.RandomSearch, "grid": keras_tuner.GridSearch,
           "bayesian": keras_tuner.BayesianOptimization}[tune.tuner]
    return cls(hypermodel, max_trials=tune.trials, **common)


def trial_rows(tuner):
    """One dict per finished trial: hyperparameters and the best epoch's scores."""
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED":
            continue
        best = trial.best_step
        row = {"trial": trial.trial_id, **trial.hyperparameters.values}
        for name in ("val_dice", "val_folding", "val_score", "loss", "seconds"):
            history = trial.metrics.get_history(name) if trial.metrics.exists(name) else []
            values = [h.value[0] if hasattr(h.value, "__len__") else h.value for h in history
                      if h.step == best] or [np.nan]
            row[name] = float(np.mean(values))
        rows.append(row)
    return sorted(rows, key=lambda r: r["lambda"])


def write_outputs(tuner, directory):
    """trials.csv, trials.md, lambda_sweep.png and best.keras in `directory` (chief)."""
    directory = Path(directory)
    rows = trial_rows(tuner)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    files.write_csv(directory / "trials.csv", fields, rows)
    figures.sweep_plot(rows, directory / "lambda_sweep.png")
    lines = ["| lambda | held-out Dice | folding (% voxels) | final loss | seconds |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['lambda']:.4g} | {r['val_dice']:.4f} | {r['val_folding']:.4f} | "
              f"{r['loss']:.4f} | {r['seconds']:.0f} |" for r in rows]
    files.write_text(directory / "trials.md",
                     "\n".join(lines) + "\n\n![lambda sweep](lambda_sweep.png)\n")
    with warnings.catch_warnings():  # the trial checkpoint holds no optimizer state to skip
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        best = tuner.get_best_models(1)[0]
    with files.atomic_path(directory / "best.keras") as tmp:
        best.save(tmp)
    return rows


# settings that change how a search is shown, not what it searches
_UNSEARCHED = {("train", "verbose"), ("train", "model_dir"), ("train", "resume"),
               ("train", "time_limit")}


def search_settings(config, tune):
    """What a search is, as `{"section.name": value}` (JSON values): the run's settings and
    the search's, the folder excepted."""
    flat = {}
    for section, values in (*dataclasses.asdict(config).items(),
                            ("tune", dataclasses.asdict(tune))):
        for name, value in values.items():
            if (section, name) in _UNSEARCHED or (section, name) == ("tune", "directory"):
                continue
            if isinstance(value, dict):
                flat.update({f"{section}.{name}.{k}": v for k, v in value.items()})
            else:
                flat[f"{section}.{name}"] = value
    return json.loads(json.dumps(flat, default=str))


def check_search_folder(config, tune, chief=True):
    """A `--tune_dir` that already holds a search resumes it only when it was started with
    the same settings (`search.json`); one with other settings, or an older search without
    that record, is a `ConfigError` naming the differences, before any trial runs. The
    chief records the settings of a new search; a worker checks them once recorded."""
    record = Path(tune.directory) / "search.json"
    settings = search_settings(config, tune)
    if record.is_file():
        saved = json.loads(record.read_text())
        changed = [f"{k} {saved.get(k)!r} -> {settings.get(k)!r}"
                   for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)]
        if changed:
            raise configs.ConfigError(
                f"--tune_dir={tune.directory} holds a search with other settings "
                f"({'; '.join(changed[:4])}{'; ...' if len(changed) > 4 else ''}): choose "
                "another --tune_dir, or remove that folder to start again")
    elif chief and any((Path(tune.directory) / "trials").glob("*")):
        # (workers started first create an empty trials/ folder: a new search, not an old one)
        raise configs.ConfigError(f"--tune_dir={tune.directory} holds a search whose settings "
                                  "were not recorded: choose another --tune_dir, or remove "
                                  "that folder to start again")
    elif chief:
        files.write_json(record, settings)


def run_search(config, tune, log=print):
    """Search as configured; on the chief (or alone) write the outputs. Returns the rows."""
    check_tune_config(tune)
    if config.loss.seg_weight or config.train.init_model:
        raise configs.ConfigError("--seg_weight and --init_model are for training runs, "
                                     "not tuning")
    if config.data.augmentation.clean_targets:
        raise configs.ConfigError("--aug_clean_targets is for training runs; tuning "
                                     "trains plain models")
    if config.model.hyper:
        raise configs.ConfigError("--hyper: a HyperMorph model learns every lambda in one "
                                  "training; choose its weight with vxm-choose-lambda, not "
                                  "a sweep")
    keras.utils.set_random_seed(tune.seed)
    Path(tune.directory).mkdir(parents=True, exist_ok=True)
    check_search_folder(config, tune, os.environ.get("KERASTUNER_TUNER_ID", "chief") == "chief")
    volumes = experiment.build_splits(config.data)["train"]
    if volumes.segs is None:
        raise configs.ConfigError("tuning scores trials by Dice and needs segmentations")
    train, holdout = split_holdout(volumes, tune.holdout)
    steps = config.train.steps_per_epoch or len(experiment.split_pairs(train))
    tuner = make_tuner(tune, VxmHyperModel(config, tune, train, holdout, steps))
    log(f"{tune.tuner} search of lambda in [{tune.lambda_min}, {tune.lambda_max}] on "
        f"{len(train)} training subjects, scored on {tune.holdout_pairs} pairs of "
        f"{len(holdout)} held-out ones; {tune.directory}")
    tuner.search(epochs=tune.epochs)
    if os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief":
        return []
    return write_outputs(tuner, tune.directory)

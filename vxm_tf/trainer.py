"""Training: a `Config` and a run directory in, a trained `VxmDense` out.

The run directory holds:
    config.json      the resolved configuration       versions.json  package versions
    last.keras       model + optimizer after the last completed epoch
    last_optimizer.npz  the optimiser's variables, when training runs through a view of
                     the model (--seg_weight, --aug_clean_targets), so those resume too
    state.json       {"epoch": completed epochs} written after the checkpoint
    best.keras       the model with the best validation Dice so far
    model.keras      the final model            history.csv / tensorboard/   the logs
                                                (tensorboard/: TensorFlow backend)
    timing.json      training seconds per step
Checkpoints are written to a temporary name and renamed, so an interrupted run always
leaves the previous complete checkpoint; `resume` continues from it to the same total
number of epochs. A run that `time_limit` ends early writes no model.keras.
"""

import math
import os
import time
from pathlib import Path

import keras
import numpy as np

from vxm_tf import cli, data, experiment, files, hypermorph
from vxm_tf.training import TrainingError
from vxm_tf.training import template as template_training
from vxm_tf.training.callbacks import (
    Checkpoints,
    StepTimer,
    StopOnNonFinite,
    TimeLimit,
    ValidationDice,
    restore_optimizer,
    save_model,
)
from vxm_tf.training.devices import make_strategy, process_shard, resolve_precision
from vxm_tf.training.memory import check_memory
from vxm_tf.training.rundir import (
    check_resumed_config,
    lock_run_dir,
    recorded,
    start_epoch,
    truncate_history,
    versions,
)

__all__ = ["TrainingError", "check_memory", "train_and_evaluate"]



def train_and_evaluate(config, log=print):
    """Train `VxmDense` as configured; returns `{'history': ..., 'model': model, ...}`.

    The run directory is locked for the duration (`lock_run_dir`). With `time_limit` the
    run may end before its epochs (`'stopped_after'`: the last completed epoch, else None);
    it then writes no model.keras, and `resume` continues it."""
    start = time.monotonic()
    scope = make_strategy(config.train.strategy)  # first: collectives set up at start
    run_dir = Path(config.train.model_dir)
    index, count = process_shard()
    if count > 1 and config.train.batch_size % count:
        raise TrainingError(f"--batch_size={config.train.batch_size} must be a multiple of "
                            f"the {count} processes: each feeds an equal part of a batch")
    if index:  # the chief (process 0) writes --model_dir; the others a folder inside it
        run_dir = run_dir / f"worker-{index}"
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainingError(f"--model_dir={run_dir}: a file, not a folder")
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(run_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "not writable")
    except OSError as err:
        raise TrainingError(f"--model_dir={run_dir}: cannot write there "
                            f"({err.strerror or err})") from None
    lock = lock_run_dir(run_dir)
    try:
        return _train(config, log, scope, run_dir, start)
    finally:
        lock.unlink(missing_ok=True)
        if created and not any(run_dir.iterdir()):  # refused before writing anything
            run_dir.rmdir()


def _train(config, log, scope, run_dir, start):
    t = config.train
    initial_epoch, best = start_epoch(run_dir, t.resume)
    if initial_epoch >= t.epochs:
        raise TrainingError(f"{run_dir} already finished {initial_epoch} of {t.epochs} epochs")
    if initial_epoch:
        check_resumed_config(run_dir, config)

    keras.utils.set_random_seed(t.seed)
    precision = resolve_precision(t.precision)
    keras.config.set_dtype_policy(precision)
    splits = experiment.build_splits(config.data)
    train, val = splits["train"], splits["val"]
    atlas = bool(config.data.atlas)
    template = config.model.template != "none"  # batches of scans, not of pairs
    pairs = experiment.split_pairs(train, atlas=atlas)
    steps = t.steps_per_epoch or math.ceil((len(train) if template else len(pairs))
                                           / t.batch_size)
    labels = train.labels if config.loss.seg_weight else []
    if config.loss.seg_weight and not labels:
        raise TrainingError("--seg_weight: the training subjects have no segmentations")
    lo = config.loss
    if lo.similarity in ("ncc", "hybrid") and lo.window > min(train.shape):
        raise TrainingError(f"--window={lo.window} is larger than the images "
                            f"{tuple(train.shape)}; choose at most {min(train.shape)}")
    log(f"{len(train)} training subjects, "
        f"{f'{config.model.template} template' if template else f'{len(pairs)} pairs'}, "
        f"{steps} steps per epoch, shape {train.shape}, precision {precision}")

    with scope:
        if initial_epoch:
            model = experiment.with_remat(
                lambda: keras.saving.load_model(run_dir / "last.keras"), t.remat)
            if t.init_model:
                config = experiment.adopt_architecture(config, model, log)
            fitted = experiment.training_model(model, config, labels)
            if fitted is not model:  # a view: compile it and set its optimiser's state
                experiment.compile_model(fitted, config, steps * t.epochs, labels)
                restore_optimizer(fitted, run_dir / "last_optimizer.npz")
            else:  # the schedule spans this run's epochs (--epochs may have changed)
                if getattr(model, "optimizer", None) is None:
                    raise TrainingError(f"{run_dir}/last.keras holds no optimiser state: not "
                                        "this run's checkpoint (was it replaced?); start a "
                                        "new run, from it with --init_model")
                rate = experiment.learning_rate(t, steps * t.epochs)
                if not isinstance(rate, float):
                    model.optimizer.learning_rate = rate
            log(f"resuming {run_dir} after epoch {initial_epoch}")
        else:
            model = experiment.initial_model(config, train.shape)
            if t.init_model:  # the losses and config.json follow the model's architecture
                config = experiment.adopt_architecture(config, model, log)
            fitted = experiment.training_model(model, config, labels)
            experiment.compile_model(fitted, config, steps * t.epochs, labels)
    if template:  # its settings and starting template, recorded beside the checkpoints
        template_settings, base = template_training.start(
            config, run_dir, train, bool(initial_epoch), [val] if val is not None else [])
        if not initial_epoch and config.model.template == "unconditional":
            model.set_atlas(base)  # as the original's script: the mean training scan
    # the model's own widths (an --init_model's, not the flags'), before any step runs
    check_memory(train.shape, config)
    # recorded once everything checked out and the model exists
    files.write_json(run_dir / "config.json", {**recorded(config),
                                           "resolved_precision": precision,
                                           "steps_per_epoch": steps})
    files.write_json(run_dir / "versions.json", versions())
    flow_shape = tuple(model.outputs[-1].shape[1:])
    seg_targets = bool(config.loss.seg_weight)
    shard = process_shard()
    # HyperMorph: each pair draws its smoothness weight h; validation Dice at one h
    hyper = config.loss.hyper_oversample if config.model.hyper else None
    registrar = hypermorph.AtLambda(model, t.hyper_val_lambda) if hyper is not None else model
    if template:
        train_source = template_training.source(
            config, template_settings, base, train, batch_size=t.batch_size, seed=t.seed,
            repeat=True, shard=shard)
    else:
        train_source = data.PairSource(
            train, pairs, batch_size=t.batch_size, seed=t.seed,
            augmentation=config.data.augmentation, flow_shape=flow_shape,
            bidir=config.model.bidir, repeat=True, seg_targets=seg_targets, shard=shard,
            hyper_oversample=hyper)
    train_ds = data.fit_data(train_source, steps, initial_epoch)

    callbacks, val_ds = [], None
    if template:  # the validation scans' loss: no pairs to score by Dice
        if val is not None and shard[1] == 1:
            val_ds = data.fit_data(template_training.source(
                config, template_settings, base, val, batch_size=t.batch_size,
                shuffle=False))
    elif shard[1] > 1 and val is not None and val.segs is not None:
        # validation Dice only (each process scores the same pairs; no val_loss)
        val_pairs = experiment.split_pairs(val, limit=t.val_pairs, seed=t.seed, atlas=atlas)
        callbacks.append(ValidationDice(val, val_pairs, registrar))
    elif val is not None and len(val) > 1 and (val.segs is not None or not seg_targets):
        val_pairs = experiment.split_pairs(val, limit=t.val_pairs, seed=t.seed, atlas=atlas)
        val_ds = data.fit_data(data.PairSource(
            val, val_pairs, batch_size=t.batch_size, shuffle=False, flow_shape=flow_shape,
            bidir=config.model.bidir, seg_targets=seg_targets, hyper_oversample=hyper,
            augmentation=data.Augmentation(
                clean_targets=config.data.augmentation.clean_targets)))
        if val.segs is not None:
            callbacks.append(ValidationDice(val, val_pairs, registrar))
    truncate_history(run_dir / "history.csv", initial_epoch)
    callbacks += [
        StopOnNonFinite(steps, run_dir),
        StepTimer(run_dir / "timing.json", steps),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=initial_epoch > 0),
        Checkpoints(run_dir, model, best if best is not None else -np.inf, trainer=fitted),
    ]
    if keras.backend.backend() == "tensorflow":  # TensorBoard's writer is TensorFlow's
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard"),
                                                     write_graph=False))
    if t.schedule == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss" if val_ds is not None else "loss", factor=0.5, patience=1,
            min_lr=t.lr * t.final_lr_fraction))
    limit = None  # every process of a multi-process run takes part in the decision
    if t.time_limit or shard[1] > 1:
        limit = TimeLimit(t.time_limit or math.inf, start)
        callbacks.append(limit)  # last: the checkpoint's time counts
    experiment.build_for_fit(fitted, train_ds)
    history = fitted.fit(train_ds, epochs=t.epochs, initial_epoch=initial_epoch,
                        steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                        verbose=cli.fit_verbosity(t.verbose), shuffle=False)
    stopped = limit.stopped_after if limit else None
    if stopped and stopped < t.epochs:
        log(f"stopped by --time_limit after epoch {stopped} of "
            f"{t.epochs}; continue with --resume")
    else:
        stopped = None
        save_model(model, run_dir / "model.keras")
        if hyper is not None and not model.responds_to_lambda():
            log(f"warning: {run_dir}/model.keras: {hypermorph.DEAD_HYPERNET}")
        if template:
            template_training.finish(model, template_settings, run_dir)
    return {"history": history.history, "model": model, "run_dir": str(run_dir),
            "steps_per_epoch": steps, "splits": splits, "stopped_after": stopped}


"""Keras callbacks of a training run: validation Dice, checkpoints, a non-finite loss,
step timing and the time limit."""

import math
import time
from pathlib import Path

import keras
import numpy as np

from vxm_tf import files, metrics, networks, registration
from vxm_tf.training import TrainingError
from vxm_tf.training.devices import chief_decides, device_description


def save_model(model, path):
    networks.save_model(model, path)


class ValidationDice(keras.callbacks.Callback):
    """Adds `val_dice` of `registrar` (a VxmDense; mean over labels and validation pairs)
    to the epoch logs, and stops training (`TrainingError`) when it falls below
    `DIVERGED` x the pairs' Dice without registration: the fields destroy the anatomy, as
    a too-high --lr does while the loss stays finite (its smoothness term exploding)."""

    DIVERGED = 0.5

    def __init__(self, volumes, pairs, registrar):
        super().__init__()
        self.volumes, self.pairs, self.registrar = volumes, pairs, registrar
        labels = volumes.labels
        self.unregistered = float(np.mean([
            metrics.mean_dice(volumes.segs[i], volumes.segs[j], labels) for i, j in pairs]))

    def on_epoch_end(self, epoch, logs=None):
        score = registration.validation_dice(self.registrar, self.volumes, self.pairs)
        logs["val_dice"] = score
        if score < self.DIVERGED * self.unregistered:
            raise TrainingError(
                f"training diverged: validation Dice {score:.3f} after epoch {epoch + 1} is "
                f"below half of no registration's {self.unregistered:.3f} (the fields destroy "
                "the anatomy; a too-high --lr does this); this epoch was not saved, the last "
                "checkpoint is intact")


def save_optimizer(optimizer, path):
    """The optimiser's variables (iterations and moments, in their fixed order) to npz."""
    with files.atomic_path(path) as tmp, open(tmp, "wb") as file:
        np.savez(file, *[keras.ops.convert_to_numpy(v.value) for v in optimizer.variables])


def restore_optimizer(fitted, path):
    """Build `fitted`'s optimiser and set its variables from `save_optimizer`'s file;
    `TrainingError` when the file does not match (another model or optimiser)."""
    optimizer = fitted.optimizer
    optimizer.build(fitted.trainable_variables)
    try:
        with np.load(path) as saved:
            values = [saved[f"arr_{k}"] for k in range(len(saved.files))]
    except (OSError, ValueError, KeyError) as err:
        raise TrainingError(f"--resume: {path} is unreadable ({err})") from None
    variables = optimizer.variables
    if len(values) != len(variables) or any(
            tuple(v.shape) != value.shape for v, value in zip(variables, values)):
        raise TrainingError(f"--resume: {path} does not match this run's model and optimiser")
    for variable, value in zip(variables, values):
        variable.assign(value)


class Checkpoints(keras.callbacks.Callback):
    """After each epoch: last.keras and state.json; best.keras when val_dice improves.

    Saves `registrar` (the VxmDense; compiled, with its optimiser, when it is what `fit`
    trains); when `fit` trains a view of it (`trainer`), the optimiser goes to
    last_optimizer.npz beside it.
    """

    def __init__(self, run_dir, registrar, best=-np.inf, trainer=None):
        super().__init__()
        self.run_dir, self.registrar, self.best = Path(run_dir), registrar, best
        self.trainer = trainer if trainer is not registrar else None

    def on_epoch_end(self, epoch, logs=None):
        try:
            self._save(epoch, logs or {})
        except OSError as err:  # a full disk, a folder removed: a one-line stop
            raise TrainingError(f"epoch {epoch + 1}: the checkpoint could not be written "
                                f"({err}); the files of the epoch before are intact: free "
                                "the space, then --resume") from None

    def _save(self, epoch, logs):
        score = logs.get("val_dice")
        improved = score is not None and score > self.best
        if improved:
            self.best = score
            save_model(self.registrar, self.run_dir / "best.keras")
        save_model(self.registrar, self.run_dir / "last.keras")
        if self.trainer is not None:
            save_optimizer(self.trainer.optimizer, self.run_dir / "last_optimizer.npz")
        files.write_json(self.run_dir / "state.json", {"epoch": epoch + 1, "best_val_dice":
                                                   None if self.best == -np.inf else self.best})


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops training with `TrainingError` when the loss stops being finite."""

    def __init__(self, steps_per_epoch, run_dir):
        super().__init__()
        self.steps_per_epoch, self.run_dir = steps_per_epoch, run_dir
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = self.epoch * self.steps_per_epoch + batch + 1
            raise TrainingError(
                f"loss became {float(loss)} at epoch {self.epoch + 1}, step {batch + 1} "
                f"(global step {step}); training stopped. The last complete checkpoint in "
                f"{self.run_dir} is intact: check the data and --lr, then --resume")


class StepTimer(keras.callbacks.Callback):
    """Training seconds per step (validation excluded), written to timing.json.

    `seconds_per_step` is the median over epochs after the first (which includes tracing
    and compilation); with one epoch it is that epoch's figure.
    """

    def __init__(self, path, steps_per_epoch):
        super().__init__()
        self.path, self.steps = path, steps_per_epoch
        self.epoch_seconds = []
        self.device = device_description()

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(self.last - self.start)
        per_step = [s / self.steps for s in self.epoch_seconds]
        steady = per_step[1:] or per_step
        files.write_json(self.path, {"seconds_per_step": float(np.median(steady)),
                                 "steps_per_second": float(1 / np.median(steady)),
                                 "epoch_seconds": self.epoch_seconds,
                                 "steps_per_epoch": self.steps,
                                 "device": self.device})


class TimeLimit(keras.callbacks.Callback):
    """Ends training after the epoch past which one more epoch, as long as the last one
    (validation and checkpoint included), would not end within `seconds` of `start`.

    At least one epoch runs. In a multi-process run every process takes the chief's
    decision (each process has this callback, with or without a limit of its own): one
    process stopping alone would leave the others waiting in their collectives.
    `stopped_after` is the last epoch (1-based) when it stopped the run.
    """

    def __init__(self, seconds, start, clock=time.monotonic):
        super().__init__()
        self.seconds, self.start, self.clock = seconds, start, clock
        self.mark, self.stopped_after = None, None

    def on_epoch_begin(self, epoch, logs=None):
        if self.mark is None:
            self.mark = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        duration, self.mark = now - self.mark, now
        if chief_decides(now - self.start + duration > self.seconds):
            self.model.stop_training = True
            self.stopped_after = epoch + 1

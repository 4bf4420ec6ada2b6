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

import contextlib
import dataclasses
import importlib.metadata
import json
import math
import os
import platform
import time
from pathlib import Path

import keras
import numpy as np

import vxm_tf
from vxm_tf import cli, configs, data, experiment, files, metrics, networks, registration


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why."""


def _tensorflow():
    """TensorFlow, imported only under its backend (the JAX backend runs without it)."""
    import tensorflow as tf

    return tf


def has_gpu():
    """Whether the current backend sees a GPU."""
    if keras.backend.backend() == "tensorflow":
        return bool(_tensorflow().config.list_physical_devices("GPU"))
    if keras.backend.backend() == "jax":
        import jax

        return any(d.platform == "gpu" for d in jax.devices())
    return False


def resolve_precision(precision):
    """'auto' is mixed_float16 with a GPU and float32 without."""
    if precision != "auto":
        return precision
    return "mixed_float16" if has_gpu() else "float32"


MULTI_PROCESS_ENV = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")


def make_strategy(name):
    """The scope models are built in for `--strategy=name`.

    TensorFlow: a `tf.distribute` strategy's scope. multi_worker runs as one worker only:
    Keras 3's `fit` fails across processes under MultiWorkerMirroredStrategy
    (keras-team/keras#20585), so a TF_CONFIG cluster of more than one task stops here with
    `TrainingError` rather than deep inside TensorFlow.
    JAX: `mirrored` sets `keras.distribution.DataParallel` over the local devices (the
    batch is split between them); `multi_worker` joins the processes named by the
    `KERAS_DISTRIBUTION_*` variables (`jax.distributed`, through
    `keras.distribution.initialize`; on CPUs with gloo collectives) and trains data
    parallel over all their devices: each process feeds its own part of every global
    batch of `--batch_size` pairs (`process_shard`).
    """
    if keras.backend.backend() != "tensorflow":
        if name == "multi_worker":
            if keras.backend.backend() != "jax":
                raise TrainingError(f"--strategy=multi_worker needs the TensorFlow or JAX "
                                    f"backend, not {keras.backend.backend()}")
            _join_jax_processes()
        if name == "mirrored":
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        return contextlib.nullcontext()
    tf = _tensorflow()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy().scope()
    if name == "multi_worker":
        try:
            cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
        except (json.JSONDecodeError, AttributeError):
            raise TrainingError("TF_CONFIG is not a JSON object") from None
        tasks = sum(len(addresses) for addresses in cluster.values())
        if tasks > 1:
            raise TrainingError(
                f"--strategy=multi_worker: TF_CONFIG names {tasks} tasks, but Keras 3 cannot "
                "train across processes with MultiWorkerMirroredStrategy "
                "(keras-team/keras#20585); use --strategy=mirrored on one machine, "
                "KERAS_BACKEND=jax for several processes, or spread a lambda search over "
                "machines with vxm_tf.tune")
        return tf.distribute.MultiWorkerMirroredStrategy().scope()
    return tf.distribute.get_strategy().scope()


def _join_jax_processes():
    missing = [name for name in MULTI_PROCESS_ENV if not os.environ.get(name)]
    if missing:
        raise TrainingError("--strategy=multi_worker under JAX needs " + ", ".join(missing)
                            + " (the processes' host:port list, their number, this one's "
                            "index)")
    import jax

    if not jax.distributed.is_initialized():  # before any JAX computation
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize()
    distribution = keras.distribution.DataParallel()
    distribution.auto_shard_dataset = False  # each process feeds its part (process_shard)
    keras.distribution.set_distribution(distribution)


def process_shard():
    """(this process's index, number of processes) of a multi-process JAX run, else
    (0, 1)."""
    if keras.backend.backend() == "jax" and isinstance(
            keras.distribution.distribution(), keras.distribution.DataParallel):
        import jax

        return jax.process_index(), jax.process_count()
    return 0, 1


_atomic_json = files.write_json


def _atomic_save(model, path):
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
            _atomic_save(self.registrar, self.run_dir / "best.keras")
        _atomic_save(self.registrar, self.run_dir / "last.keras")
        if self.trainer is not None:
            save_optimizer(self.trainer.optimizer, self.run_dir / "last_optimizer.npz")
        _atomic_json(self.run_dir / "state.json", {"epoch": epoch + 1, "best_val_dice":
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
        _atomic_json(self.path, {"seconds_per_step": float(np.median(steady)),
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
        if _chief_decides(now - self.start + duration > self.seconds):
            self.model.stop_training = True
            self.stopped_after = epoch + 1


def _chief_decides(decision):
    """Process 0's `decision`, in every process (the same value in a single process)."""
    if process_shard()[1] == 1:
        return decision
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(decision)))


def device_description():
    """What trains: the first accelerator's name and how many there are, else the CPU."""
    try:
        if keras.backend.backend() == "jax":
            import jax

            devices = jax.devices()
            if devices[0].platform != "cpu":
                return f"{len(devices)} x {devices[0].device_kind}"
        elif keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    except (ImportError, RuntimeError):
        pass
    return f"{vxm_tf.cpu_model()}, {os.cpu_count()} CPU cores"


def _versions():
    names = ("vxm_tf", "keras", "tensorflow", "numpy", "scipy", "nibabel", "absl-py")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _start_epoch(run_dir, resume):
    state_path = run_dir / "state.json"
    if resume:
        if not state_path.exists() or not (run_dir / "last.keras").exists():
            raise TrainingError(f"--resume: no checkpoint in {run_dir} (state.json and "
                                "last.keras); start a new run without --resume")
        state = json.loads(state_path.read_text())
        return state["epoch"], state.get("best_val_dice")
    if state_path.exists():
        raise TrainingError(f"{run_dir} already holds a run; pass --resume to continue it or "
                            "choose another --model_dir")
    return 0, None


def _truncate_history(path, epochs):
    """Keep the header and the rows of the first `epochs` epochs of history.csv: rows of
    an epoch that was logged but not checkpointed before an interruption go."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [row for row in lines[1:] if int(row.split(",")[0]) < epochs]
    if kept != lines:
        files.write_text(path, "".join(kept))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_run_dir(run_dir):
    """Take `run_dir/.lock` (holding this process's pid) or raise `TrainingError` when a
    live process holds it; a lock left by a dead process (kill -9) is taken over."""
    lock = Path(run_dir) / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                owner = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner and owner != os.getpid() and _alive(owner):
                raise TrainingError(f"{run_dir} is in use by another training (pid {owner}); "
                                    "wait for it to finish or choose another --model_dir"
                                    ) from None
            lock.unlink(missing_ok=True)  # stale: its owner is gone
            continue
        with os.fdopen(fd, "w") as file:
            file.write(f"{os.getpid()}\n")
        return lock
    raise TrainingError(f"{lock}: cannot take the run directory's lock")


# settings a resumed run may change: how long and how verbosely it trains
RESUMABLE_CHANGES = {("train", "epochs"), ("train", "resume"), ("train", "verbose"),
                     ("train", "model_dir"), ("train", "time_limit"), ("data", "cache_mb")}


def _recorded(config):
    """`config` as config.json records it: plain JSON values, data paths absolute."""
    recorded = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    recorded["data"] = configs.absolute_paths(recorded["data"])
    return recorded


def check_resumed_config(run_dir, config):
    """Raise `TrainingError` naming every setting that differs from the run's config.json
    (other than `RESUMABLE_CHANGES`): a resumed run trains with its checkpoint's settings."""
    path = Path(run_dir) / "config.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise TrainingError(f"--resume: {path} is unreadable ({err})") from None
    current = _recorded(config)
    # a setting newer than the run's config.json had its default value then
    defaults = json.loads(json.dumps(dataclasses.asdict(type(config)()), default=str))
    # paths compare absolute (runs from before absolute paths hold them relative)
    saved["data"] = configs.absolute_paths(saved.get("data", {}))
    changes = []
    for section, values in current.items():
        if section == "model" and config.train.init_model:
            continue  # the architecture is the checkpoint's (`experiment.adopt_architecture`)
        for key, value in values.items():
            old = saved.get(section, {}).get(key, defaults[section][key])
            if (section, key) not in RESUMABLE_CHANGES and old != value:
                changes.append(f"{section}.{key} {old!r} -> {value!r}")
    if changes:
        raise TrainingError(f"--resume: settings differ from {path}: {'; '.join(changes)}; "
                            "resume with the run's settings (only --epochs may change) or "
                            "start a new run")


# peak training memory per voxel of a batch's images, VxmDense's default features on the
# TensorFlow CPU backend: 1.6 GiB at 64^3 and 5.5 GiB at 128^3 (tools/bench_model.py and a
# 128^3 run with oneDNN), about 2.3 kB per voxel past a fixed 1 GiB
BYTES_PER_VOXEL, BASE_BYTES = 2300, 2**30


def available_memory():
    """Bytes of memory available to a new allocation (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(shape, config, available=None):
    """`TrainingError` when training images of `shape` would need clearly more memory than
    the machine has (CPU only; estimate `BYTES_PER_VOXEL`, scaled by the widest layer
    against the default 32 features), instead of being killed part-way with no message."""
    available = available_memory() if available is None else available
    if not available or has_gpu():
        return
    features = config.model.nb_features
    flat = ([features] if isinstance(features, int) else
            [n for level in features for n in level] if features else [])
    widest = max(flat + [32])
    need = BASE_BYTES + math.prod(shape) * config.train.batch_size * BYTES_PER_VOXEL * (
        widest / 32)
    if need > 1.5 * available:
        size = "x".join(map(str, shape))
        raise TrainingError(f"training at {size} with --batch_size={config.train.batch_size} "
                            f"needs about {need / 2**30:.0f} GiB, {available / 2**30:.0f} GiB "
                            "is available; set a smaller --target_shape or --batch_size")


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
    initial_epoch, best = _start_epoch(run_dir, t.resume)
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
    pairs = experiment.split_pairs(train, atlas=atlas)
    steps = t.steps_per_epoch or math.ceil(len(pairs) / t.batch_size)
    labels = train.labels if config.loss.seg_weight else []
    if config.loss.seg_weight and not labels:
        raise TrainingError("--seg_weight: the training subjects have no segmentations")
    lo = config.loss
    if lo.similarity in ("ncc", "hybrid") and lo.window > min(train.shape):
        raise TrainingError(f"--window={lo.window} is larger than the images "
                            f"{tuple(train.shape)}; choose at most {min(train.shape)}")
    log(f"{len(train)} training subjects, {len(pairs)} pairs, {steps} steps per epoch, "
        f"shape {train.shape}, precision {precision}")

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
    # the model's own widths (an --init_model's, not the flags'), before any step runs
    check_memory(train.shape, config)
    # recorded once everything checked out and the model exists
    _atomic_json(run_dir / "config.json", {**_recorded(config),
                                           "resolved_precision": precision,
                                           "steps_per_epoch": steps})
    _atomic_json(run_dir / "versions.json", _versions())
    flow_shape = tuple(model.outputs[-1].shape[1:])
    seg_targets = bool(config.loss.seg_weight)
    shard = process_shard()
    train_ds = data.fit_data(data.PairSource(
        train, pairs, batch_size=t.batch_size, seed=t.seed,
        augmentation=config.data.augmentation, flow_shape=flow_shape,
        bidir=config.model.bidir, repeat=True, seg_targets=seg_targets, shard=shard),
        steps, initial_epoch)

    callbacks, val_ds = [], None
    if shard[1] > 1 and val is not None and val.segs is not None:
        # validation Dice only (each process scores the same pairs; no val_loss)
        val_pairs = experiment.split_pairs(val, limit=t.val_pairs, seed=t.seed, atlas=atlas)
        callbacks.append(ValidationDice(val, val_pairs, model))
    elif val is not None and len(val) > 1 and (val.segs is not None or not seg_targets):
        val_pairs = experiment.split_pairs(val, limit=t.val_pairs, seed=t.seed, atlas=atlas)
        val_ds = data.fit_data(data.PairSource(
            val, val_pairs, batch_size=t.batch_size, shuffle=False, flow_shape=flow_shape,
            bidir=config.model.bidir, seg_targets=seg_targets,
            augmentation=data.Augmentation(
                clean_targets=config.data.augmentation.clean_targets)))
        if val.segs is not None:
            callbacks.append(ValidationDice(val, val_pairs, model))
    _truncate_history(run_dir / "history.csv", initial_epoch)
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
        _atomic_save(model, run_dir / "model.keras")
    return {"history": history.history, "model": model, "run_dir": str(run_dir),
            "steps_per_epoch": steps, "splits": splits, "stopped_after": stopped}


def load_trained(run_dir, which="best"):
    """The `best`, `last` or final (`model`) VxmDense of a run directory."""
    path = Path(run_dir) / f"{which}.keras"
    if not path.exists():
        raise TrainingError(f"{path}: no such model")
    return networks.VxmDense.load(path)

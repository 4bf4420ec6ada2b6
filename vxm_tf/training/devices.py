"""Where training runs: precision, distribution strategies, process shards, the device."""

import contextlib
import json
import os
import platform

import keras
import numpy as np

from vxm_tf.training import TrainingError


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


def chief_decides(decision):
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
    return f"{cpu_model()}, {os.cpu_count()} CPU cores"


def cpu_model():
    """The CPU's model name (Linux), else the architecture."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()

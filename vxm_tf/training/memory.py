"""The memory check before a CPU run: refuse a shape that cannot fit, rather than be
killed part-way."""

import math

from vxm_tf.training import TrainingError
from vxm_tf.training.devices import has_gpu

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

"""vxm_tf: VoxelMorph deformable registration in Keras 3 (TensorFlow or JAX backend).

Submodules load on first use (`vxm_tf.networks.VxmDense`), so that `import vxm_tf` and the
command-line entry points start without importing TensorFlow first.
"""

import importlib
import os
import sys
import warnings

# TensorFlow turns its oneDNN kernels on only for CPUs with AVX-512 or AMX; on the others
# its own 3D convolution gradients run several times slower and take about twice the memory
# (make bench-model measures it). vxm_tf asks for oneDNN unless the user chose; it has to be
# set before TensorFlow is imported, so `import vxm_tf` before `import keras` / `tensorflow`.


def _cpu_has_avx512():
    try:
        with open("/proc/cpuinfo") as file:
            return " avx512f" in file.read()
    except OSError:
        return True  # not Linux: nothing known, nothing said


if ("tensorflow" in sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in os.environ
        and not _cpu_has_avx512()):
    warnings.warn("TensorFlow was imported before vxm_tf, without oneDNN on this CPU: 3D "
                  "training runs about 4x slower; import vxm_tf before keras/tensorflow, or "
                  "set TF_ENABLE_ONEDNN_OPTS=1", stacklevel=2)
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

_SUBMODULES = ("affine", "commands", "configs", "data", "evaluation", "experiment", "figures",
               "geometry", "hypermorph", "instance", "io", "lambda_choice", "layers",
               "losses", "metrics",
               "models", "networks", "ops", "registration", "templates", "trainer",
               "training", "workflows")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"vxm_tf.{name}")
    raise AttributeError(f"module 'vxm_tf' has no attribute {name!r}")

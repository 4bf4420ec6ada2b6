"""vxm_tf: VoxelMorph deformable registration in Keras 3 (TensorFlow or JAX backend).

Submodules load on first use (`vxm_tf.networks.VxmDense`), so that `import vxm_tf` and the
command-line entry points start without importing TensorFlow first.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("data", "evaluation", "experiment", "figures", "io", "layers", "losses",
               "metrics", "networks", "ops", "registration", "trainer")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"vxm_tf.{name}")
    raise AttributeError(f"module 'vxm_tf' has no attribute {name!r}")

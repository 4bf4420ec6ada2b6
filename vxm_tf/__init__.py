"""vxm_tf: VoxelMorph deformable registration in Keras 3 (TensorFlow or JAX backend)."""

__version__ = "0.1.0"

from vxm_tf import layers, losses, networks  # noqa: E402,F401

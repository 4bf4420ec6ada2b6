"""Keras layers of VoxelMorph: thin, serialisable wrappers over `vxm_tf.ops`.

Each layer computes in float32 whatever the global dtype policy (mixed precision casts
its inputs up), as sampling and integration lose too much in half precision.
"""

from collections.abc import Sequence

import keras
from keras import ops
from numpy.typing import ArrayLike

from vxm_tf import ops as vxm_ops


def _float32_layer_kwargs(kwargs):
    kwargs.setdefault("dtype", "float32")
    return kwargs


def _check_dense_shapes(image_shape, disp_shape, layer):
    ndims = len(image_shape) - 2
    if ndims not in (1, 2, 3):
        raise ValueError(f"{layer}: image must be (B, *spatial, C) with 1 to 3 spatial axes, "
                         f"got shape {tuple(image_shape)}")
    if len(disp_shape) != ndims + 2 or disp_shape[-1] != ndims:
        raise ValueError(f"{layer}: displacement must be (B, *spatial, {ndims}) for image "
                         f"{tuple(image_shape)}, got shape {tuple(disp_shape)}")


@keras.saving.register_keras_serializable(package="vxm_tf")
class SpatialTransformer(keras.layers.Layer):
    """Warp an image by a dense displacement field.

    Call on `[image, disp]`: image `(B, *in_spatial, C)`, disp `(B, *out_spatial, D)` in
    voxels (`ij` indexing, or `xy` where the first two components are swapped). Returns
    `(B, *out_spatial, C)`: out[x] = image[x + disp[x]].

    Args:
        interp_method: 'linear' or 'nearest'.
        indexing: 'ij' (matrix) or 'xy' (cartesian).
        fill_value: value read outside the image; None reads the nearest edge voxel.
    """

    def __init__(self, interp_method: str = "linear", indexing: str = "ij",
                 fill_value: float | None = None, **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        vxm_ops.check_interp_method(interp_method)
        if indexing not in ("ij", "xy"):
            raise ValueError(f"indexing must be 'ij' or 'xy', got {indexing!r}")
        self.interp_method = interp_method
        self.indexing = indexing
        self.fill_value = fill_value

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError("SpatialTransformer is called on [image, displacement], "
                             f"got {len(input_shape)} inputs")
        _check_dense_shapes(input_shape[0], input_shape[1], self.name)

    def call(self, inputs):
        image, disp = inputs
        if self.indexing == "xy":
            disp = swap_xy(disp)
        return vxm_ops.transform(image, disp, self.interp_method, self.fill_value)

    def compute_output_shape(self, input_shape):
        image_shape, disp_shape = input_shape
        return (image_shape[0], *disp_shape[1:-1], image_shape[-1])

    def get_config(self):
        return {**super().get_config(), "interp_method": self.interp_method,
                "indexing": self.indexing, "fill_value": self.fill_value}


def swap_xy(disp: ArrayLike):
    """Swap the first two displacement components (`xy` <-> `ij`)."""
    return ops.concatenate([disp[..., 1:2], disp[..., 0:1], disp[..., 2:]], axis=-1)


@keras.saving.register_keras_serializable(package="vxm_tf")
class VecInt(keras.layers.Layer):
    """Integrate a stationary velocity field by scaling and squaring.

    Call on `(B, *spatial, D)` velocity in voxels; returns the displacement, same shape.

    Args:
        indexing: 'ij' or 'xy'.
        method: 'ss' (or 'scaling_and_squaring'), the only method of the original's VxmDense.
        int_steps: number of squarings (the field is divided by 2**int_steps first).
    """

    def __init__(self, indexing: str = "ij", method: str = "ss", int_steps: int = 7,
                 **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        if indexing not in ("ij", "xy"):
            raise ValueError(f"indexing must be 'ij' or 'xy', got {indexing!r}")
        if method not in ("ss", "scaling_and_squaring"):
            raise ValueError(f"method must be 'ss' or 'scaling_and_squaring', got {method!r}")
        if int(int_steps) != int_steps or int_steps < 0:
            raise ValueError(f"int_steps must be a non-negative integer, got {int_steps!r}")
        self.indexing = indexing
        self.method = method
        self.int_steps = int(int_steps)

    def build(self, input_shape):
        if input_shape[-1] != len(input_shape) - 2:
            raise ValueError(f"{self.name}: velocity must be (B, *spatial, D) with "
                             f"D = number of spatial axes, got shape {tuple(input_shape)}")

    def call(self, vel):
        if self.indexing == "xy":
            return swap_xy(vxm_ops.integrate_svf(swap_xy(vel), self.int_steps))
        return vxm_ops.integrate_svf(vel, self.int_steps)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "indexing": self.indexing, "method": self.method,
                "int_steps": self.int_steps}


@keras.saving.register_keras_serializable(package="vxm_tf")
class RescaleTransform(keras.layers.Layer):
    """Resize a dense displacement field by `zoom_factor` and scale its vectors to match.

    Call on `(B, *spatial, D)` in voxels; returns `(B, *[int(n * zoom_factor)], D)` in
    voxels of the new grid.
    """

    def __init__(self, zoom_factor: float, interp_method: str = "linear", **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        if not zoom_factor > 0:
            raise ValueError(f"zoom_factor must be positive, got {zoom_factor!r}")
        vxm_ops.check_interp_method(interp_method)
        self.zoom_factor = float(zoom_factor)
        self.interp_method = interp_method

    def call(self, disp):
        return vxm_ops.rescale_dense_transform(disp, self.zoom_factor, self.interp_method)

    def compute_output_shape(self, input_shape):
        spatial = tuple(input_shape[1:-1])
        return (input_shape[0], *vxm_ops.resized_shape(spatial, self.zoom_factor),
                input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "zoom_factor": self.zoom_factor,
                "interp_method": self.interp_method}


@keras.saving.register_keras_serializable(package="vxm_tf")
class Negate(keras.layers.Layer):
    """Multiply by -1 (the inverse velocity of a bidirectional model)."""

    def __init__(self, **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))

    def call(self, x):
        return -x

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="vxm_tf")
class OneHot(keras.layers.Layer):
    """Label map of ids `(B, *spatial, 1)` -> float32 one-hot maps `(B, *spatial, L)`, one
    channel per id of `labels` (the order of `losses.Dice(labels)`)."""

    def __init__(self, labels: Sequence[int], **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        if not labels:
            raise ValueError("OneHot needs at least one label id")
        self.labels = [int(k) for k in labels]

    def call(self, seg):
        from vxm_tf.losses import one_hot

        return one_hot(seg, self.labels)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.labels))

    def get_config(self):
        return {**super().get_config(), "labels": self.labels}


@keras.saving.register_keras_serializable(package="vxm_tf")
class AffineToDense(keras.layers.Layer):
    """Affine maps `(B, D, D + 1)` -> their displacement `(B, *shape, D)` on a grid of
    spatial `shape` (`vxm_tf.ops.affine_to_dense_shift`; centred when `shift_center`)."""

    def __init__(self, shape: Sequence[int], shift_center: bool = True, **kwargs):
        super().__init__(**_float32_layer_kwargs(kwargs))
        self.shape, self.shift_center = tuple(int(n) for n in shape), bool(shift_center)

    def call(self, matrix):
        return vxm_ops.affine_to_dense_shift(matrix, self.shape, self.shift_center)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.shape, len(self.shape))

    def get_config(self):
        return {**super().get_config(), "shape": list(self.shape),
                "shift_center": self.shift_center}

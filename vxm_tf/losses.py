"""Registration losses as serialisable `keras.losses.Loss` subclasses.

Each keeps the original VoxelMorph's `.loss(y_true, y_pred)` method, so code written as
`vxm.losses.NCC().loss` reads the same. All compute in float32 (a Loss casts its inputs to
its dtype, float32 by default, also under mixed precision). Inputs are `(B, *spatial, C)`.
"""

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from vxm_tf import compat


class _VxmLoss(keras.losses.Loss):
    """Base: `call` returns one value per batch element; Keras averages over the batch."""

    def loss(self, y_true, y_pred):
        """The original's per-batch-element values, `(B,)`."""
        y_true = None if y_true is None else ops.cast(y_true, "float32")
        return self.call(y_true, ops.cast(y_pred, "float32"))

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _mean_per_sample(x):
    return ops.mean(ops.reshape(x, (ops.shape(x)[0], -1)), axis=-1)


def box_sum(x: ArrayLike, window: Sequence[int]):
    """Sum of `x` (B, *spatial, C) over a window around each voxel and over channels.

    Zero padding as `conv(..., padding='same')` (for an even window, one more voxel
    after than before). Separable, and along each axis by doubling: sums of 1, 2, 4, ...
    consecutive voxels, each the sum of two shifted halves, and the window's sum from the
    powers of two that make its width (9 = 8 + 1): a few passes over the array, each output
    a sum of its own voxels only. (Running sums, the difference of a cumulative sum at the
    window's two ends, are no faster here and lose the window's variance where the image
    is flat but not zero: the cumulative sum's rounding, 1e-7 of everything before the
    window, then exceeds NCC's `eps`, and the local correlation of a flat background with
    an intensity offset came out far above 1.) Returns `(B, *spatial, 1)`.
    """
    ndims = len(window)
    if x.shape[-1] != 1:
        x = ops.sum(x, axis=-1, keepdims=True)
    for axis, width in enumerate(int(w) for w in window):
        pad = [[0, 0]] * (ndims + 2)
        pad[axis + 1] = [(width - 1) // 2, width // 2]
        x = _window_sums(ops.pad(x, pad), width, x.shape[axis + 1], axis + 1)
    return x


def _window_sums(x, width, n, axis):
    """Sums of `width` consecutive entries of `x` along `axis` (length n + width - 1),
    starting at each of the first `n`."""
    slices = _xla_compiled()  # XLA fuses slices; TensorFlow's graph mode gathers faster

    def part(array, start, stop):
        if not slices:
            return ops.take(array, np.arange(start, stop), axis=axis)
        index = [slice(None)] * len(array.shape)
        index[axis] = slice(start, stop)
        return array[tuple(index)]

    total, block, size, offset, length = None, x, 1, 0, n + width - 1
    while True:  # block[k]: the sum of `size` entries from k (length - size + 1 of them)
        if width & size:
            piece = part(block, offset, offset + n)
            total = piece if total is None else total + piece
            offset += size
        if 2 * size > width:
            return total
        block = part(block, 0, length - 2 * size + 1) + part(block, size, length - size + 1)
        size *= 2


def _xla_compiled():
    """Whether the function being traced is compiled by XLA: always under JAX; under
    TensorFlow within a jit_compile function (`compat.in_xla_context`)."""
    if keras.backend.backend() == "jax":
        return True
    return compat.in_xla_context()


@keras.saving.register_keras_serializable(package="vxm_tf")
class NCC(_VxmLoss):
    """Negative local normalised cross-correlation (squared), window `win` voxels per axis.

    Matches voxelmorph 0.2: local sums over the window (zero-padded), covariance and
    variances clamped below at `eps`, cc = cross^2 / (var_I var_J) averaged over voxels,
    loss = -cc, in [-1, 0].
    """

    def __init__(self, win: int | Sequence[int] | None = None, eps: float = 1e-5,
                 name: str = "ncc", **kwargs):
        super().__init__(name=name, **kwargs)
        if win is not None:
            sizes = win if isinstance(win, (list, tuple)) else [win]
            if any(int(w) != w or w < 1 for w in sizes):
                raise ValueError(f"NCC window must be a positive int or list of ints, got {win!r}")
        self.win = list(win) if isinstance(win, (list, tuple)) else win
        self.eps = eps

    def window(self, ndims):
        if self.win is None:
            return [9] * ndims
        if isinstance(self.win, list):
            if len(self.win) != ndims:
                raise ValueError(f"NCC window {self.win} does not match {ndims}D images")
            return self.win
        return [self.win] * ndims

    def ncc(self, y_true, y_pred):
        """Local squared correlation `(B, *spatial, 1)`."""
        ndims = len(y_true.shape) - 2
        win = self.window(ndims)
        win_size = float(np.prod(win) * y_true.shape[-1])
        stacked = ops.concatenate(
            [y_true, y_pred, y_true * y_true, y_pred * y_pred, y_true * y_pred], axis=0)
        sums = ops.split(box_sum(stacked, win), 5, axis=0)
        return self.correlation(*sums, win_size)

    def correlation(self, i_sum, j_sum, i2_sum, j2_sum, ij_sum, win_size):
        """Local squared correlation from the window sums of I, J, I^2, J^2 and IJ."""
        u_i = i_sum / win_size
        u_j = j_sum / win_size
        cross = ops.maximum(ij_sum - u_j * i_sum - u_i * j_sum + u_i * u_j * win_size, self.eps)
        i_var = ops.maximum(i2_sum - 2 * u_i * i_sum + u_i * u_i * win_size, self.eps)
        j_var = ops.maximum(j2_sum - 2 * u_j * j_sum + u_j * u_j * win_size, self.eps)
        return (cross / i_var) * (cross / j_var)

    def call(self, y_true, y_pred):
        return -_mean_per_sample(self.ncc(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "win": self.win, "eps": self.eps}


@keras.saving.register_keras_serializable(package="vxm_tf")
class MSE(_VxmLoss):
    """Mean squared error (the blog's SSD), divided by `image_sigma ** 2`."""

    def __init__(self, image_sigma: float = 1.0, name: str = "mse", **kwargs):
        super().__init__(name=name, **kwargs)
        if not image_sigma > 0:
            raise ValueError(f"image_sigma must be positive, got {image_sigma!r}")
        self.image_sigma = image_sigma

    def call(self, y_true, y_pred):
        return _mean_per_sample(ops.square(y_true - y_pred)) / self.image_sigma**2

    def get_config(self):
        return {**super().get_config(), "image_sigma": self.image_sigma}


@keras.saving.register_keras_serializable(package="vxm_tf")
class Grad(_VxmLoss):
    """Smoothness of a displacement field: mean finite-difference penalty over axes.

    For each spatial axis, the mean over voxels of |d| ('l1') or d^2 ('l2') of forward
    differences; averaged over axes and multiplied by `loss_mult` (the original sets it to
    the integration downsampling factor). `y_true` is ignored.
    """

    def __init__(self, penalty: str = "l1", loss_mult: float | None = None,
                 name: str = "grad", **kwargs):
        super().__init__(name=name, **kwargs)
        if penalty not in ("l1", "l2"):
            raise ValueError(f"Grad penalty must be 'l1' or 'l2', got {penalty!r}")
        self.penalty = penalty
        self.loss_mult = loss_mult

    def call(self, y_true, y_pred):
        ndims = len(y_pred.shape) - 2
        total = 0.0
        for axis in range(1, ndims + 1):
            head = tuple(slice(None) for _ in range(axis))
            diff = y_pred[head + (slice(1, None),)] - y_pred[head + (slice(None, -1),)]
            diff = ops.abs(diff) if self.penalty == "l1" else ops.square(diff)
            total = total + _mean_per_sample(diff)
        grad = total / ndims
        return grad * self.loss_mult if self.loss_mult is not None else grad

    def get_config(self):
        return {**super().get_config(), "penalty": self.penalty, "loss_mult": self.loss_mult}


@keras.saving.register_keras_serializable(package="vxm_tf")
class Dice(_VxmLoss):
    """Negative soft Dice of one-hot / probabilistic label maps `(B, *spatial, L)`.

    Per label 2 sum(t p) / sum(t + p) (0 where both are empty), averaged over labels.
    With `labels` (label ids), `y_true` is a label map of ids `(B, *spatial, 1)`, one-hot
    encoded here in the order of `labels` (the semi-supervised loss: `y_pred` is the moving
    segmentation's one-hot maps warped by linear interpolation, `layers.OneHot`), and
    `resolution` > 1 average-pools those one-hot maps by that factor per axis (the
    partial volumes `views.seg_training_model` warps at that resolution).
    """

    def __init__(self, labels: Sequence[int] | None = None, resolution: int = 1,
                 name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.labels = None if labels is None else [int(k) for k in labels]
        self.resolution = int(resolution)

    def call(self, y_true, y_pred):
        if self.labels is not None:
            y_true = one_hot(y_true, self.labels)
            if self.resolution > 1:
                y_true = ops.average_pool(y_true, self.resolution, self.resolution)
        y_pred = ops.cast(y_pred, "float32")
        axes = tuple(range(1, len(y_pred.shape) - 1))
        top = 2.0 * ops.sum(y_true * y_pred, axis=axes)
        bottom = ops.sum(y_true + y_pred, axis=axes)
        dice = ops.where(bottom > 0, top / ops.maximum(bottom, 1e-12), 0.0)
        return -ops.mean(dice, axis=-1)

    def get_config(self):
        return {**super().get_config(), "labels": self.labels,
                "resolution": self.resolution}


def one_hot(seg: ArrayLike, labels: Sequence[int]):
    """Label map of ids `(B, *spatial, 1)` (any dtype) -> float32 `(B, *spatial, L)`, one
    channel per id of `labels` (ids not listed, background included, are all zeros)."""
    ids = ops.cast(ops.round(ops.cast(seg, "float32")), "int32")
    return ops.concatenate([ops.cast(ops.equal(ids, k), "float32") for k in labels], axis=-1)


@keras.saving.register_keras_serializable(package="vxm_tf")
class Hybrid(_VxmLoss):
    """Weighted sum `ncc_weight * NCC + mse_weight * MSE` of the same image pair."""

    def __init__(self, ncc_weight: float = 1.0, mse_weight: float = 1.0,
                 win: int | Sequence[int] | None = None, image_sigma: float = 1.0,
                 name: str = "hybrid", **kwargs):
        super().__init__(name=name, **kwargs)
        if ncc_weight < 0 or mse_weight < 0:
            raise ValueError(f"hybrid weights must be non-negative, got ncc_weight={ncc_weight}"
                             f", mse_weight={mse_weight}")
        self.ncc_weight = ncc_weight
        self.mse_weight = mse_weight
        self.ncc_loss = NCC(win=win)
        self.mse_loss = MSE(image_sigma=image_sigma)

    def call(self, y_true, y_pred):
        return (self.ncc_weight * self.ncc_loss.call(y_true, y_pred)
                + self.mse_weight * self.mse_loss.call(y_true, y_pred))

    def get_config(self):
        return {**super().get_config(), "ncc_weight": self.ncc_weight,
                "mse_weight": self.mse_weight, "win": self.ncc_loss.win,
                "image_sigma": self.mse_loss.image_sigma}

"""Rigid and affine pre-alignment of a moving image onto a fixed grid, by intensity.

VoxelMorph expects affinely aligned pairs; scans come unaligned. `align` finds, for a
batch of pairs, the transform T (rotation about the fixed image's centre of mass, then
scaling and shear for 'affine', then translation; millimetres of the fixed grid) that
maximises the global correlation (or minimises the MSE) of the fixed image and the moving
image sampled through T. It starts from the centres of mass and runs coarse to fine:
both images are blurred and subsampled to each level's spacing. As `instance` does, the
optimisation is a small Keras model trained with `train_on_batch` (keras.ops only), so it
runs on every backend and device.

Geometry is in index maps (`geometry`): `initial` takes a fixed-grid voxel to the moving
voxel at the same world point; the result takes it to the moving voxel that T aligns.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike
from scipy import ndimage

from vxm_tf import geometry
from vxm_tf import ops as vxm_ops

KINDS = ("none", "rigid", "affine")
SIMILARITIES = ("ncc", "mse")
TRANSLATION_SCALE = 10.0  # mm per unit of the translation parameter


@dataclass(frozen=True)
class AffineConfig:
    """`kind` of pre-alignment, by `similarity`, coarse to fine: `steps` Adam steps per
    level, the finest level the fixed grid subsampled to at most `grid` voxels along its
    longest axis, each coarser one half as fine; rate `lr` (radians, log-scale and shear
    units, 10 mm for translation) halved at each finer level."""
    kind: str = "affine"
    similarity: str = "ncc"
    steps: tuple = (150, 60)
    grid: int = 64
    lr: float = 0.02

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"--affine must be one of {KINDS}, got {self.kind!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"the affine similarity must be one of {SIMILARITIES}, got "
                             f"{self.similarity!r}")
        if not self.steps or not all(int(n) == n and n >= 1 for n in (*self.steps, self.grid)):
            raise ValueError("affine steps (per level) and grid must be positive integers")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"affine lr must be positive and finite, got {self.lr}")


def rotation(angles: ArrayLike, ndims: int):
    """Rotation matrices `(B, D, D)` from angles `(B, 1)` (2D) or `(B, 3)` (3D, about the
    first, second, then third axis)."""
    c, s = ops.cos(angles), ops.sin(angles)
    one, zero = ops.ones_like(c[:, 0]), ops.zeros_like(c[:, 0])
    if ndims == 2:
        return ops.stack([ops.stack([c[:, 0], -s[:, 0]], -1),
                          ops.stack([s[:, 0], c[:, 0]], -1)], 1)

    def matrix(rows):
        return ops.stack([ops.stack(row, -1) for row in rows], 1)

    rx = matrix([[one, zero, zero], [zero, c[:, 0], -s[:, 0]], [zero, s[:, 0], c[:, 0]]])
    ry = matrix([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rz = matrix([[c[:, 2], -s[:, 2], zero], [s[:, 2], c[:, 2], zero], [zero, zero, one]])
    return ops.matmul(rz, ops.matmul(ry, rx))


class _Transform(keras.layers.Layer):
    """A batch of rigid or affine transforms in the fixed grid's millimetres, centred on
    its centre of mass, sampling the moving images at each level's grid points."""

    def __init__(self, batch, ndims, kind, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.ndims, self.kind = ndims, kind
        nb_angles = 1 if ndims == 2 else 3
        zeros = "zeros"
        self.shift = self.add_weight(shape=(batch, ndims), initializer=zeros, name="shift")
        self.angles = self.add_weight(shape=(batch, nb_angles), initializer=zeros,
                                      name="angles")
        self.log_scale = self.add_weight(shape=(batch, ndims), initializer=zeros,
                                         name="log_scale", trainable=kind == "affine")
        self.shear = self.add_weight(shape=(batch, ndims * (ndims - 1) // 2),
                                     initializer=zeros, name="shear",
                                     trainable=kind == "affine")
        self.start = self.add_weight(shape=(batch, ndims), initializer=zeros,
                                     name="start", trainable=False)

    def matrices(self):
        """`(B, D, D)` linear parts and `(B, D)` translations (mm)."""
        ndims = self.ndims
        linear = rotation(ops.convert_to_tensor(self.angles), ndims)
        if self.kind == "affine":
            shear_rows = []
            k = 0
            shear = ops.convert_to_tensor(self.shear)
            for i in range(ndims):
                row = []
                for j in range(ndims):
                    if j == i:
                        row.append(ops.ones_like(shear[:, 0]))
                    elif j > i:
                        row.append(shear[:, k])
                        k += 1
                    else:
                        row.append(ops.zeros_like(shear[:, 0]))
                shear_rows.append(ops.stack(row, -1))
            scaled = ops.expand_dims(ops.exp(self.log_scale), 2) * ops.stack(shear_rows, 1)
            linear = ops.matmul(linear, scaled)
        return linear, self.start + TRANSLATION_SCALE * self.shift

    def call(self, moving, points, to_moving):
        """`moving` (B, *m, 1) at `points` (B, N, D) (fixed-grid mm) mapped by the
        transforms then by `to_moving` (B, D+1, D+1) (mm -> moving voxels): `(B, N)`."""
        linear, shift = self.matrices()
        moved = ops.einsum("bnd,bed->bne", points, linear) + ops.expand_dims(shift, 1)
        loc = (ops.einsum("bnd,bed->bne", moved, to_moving[:, :-1, :-1])
               + ops.expand_dims(to_moving[:, :-1, -1], 1))
        # interpn takes an output grid of the image's rank: (B, N, 1, .., D)
        loc = ops.reshape(loc, (ops.shape(loc)[0], -1) + (1,) * (self.ndims - 1)
                          + (self.ndims,))
        out = vxm_ops.interpn(moving, loc, fill_value=0.0)
        return ops.reshape(out, (ops.shape(out)[0], -1))


def global_ncc(y_true: ArrayLike, y_pred: ArrayLike):
    """1 - correlation of each pair's intensities `(B, N)` -> `(B,)`."""
    a = y_true - ops.mean(y_true, axis=1, keepdims=True)
    b = y_pred - ops.mean(y_pred, axis=1, keepdims=True)
    corr = ops.sum(a * b, axis=1) / ops.sqrt(
        ops.sum(a * a, axis=1) * ops.sum(b * b, axis=1) + 1e-8)
    return 1.0 - corr


def mean_squares(y_true: ArrayLike, y_pred: ArrayLike):
    """Mean squared difference of each pair's intensities `(B, N)` -> `(B,)`."""
    return ops.mean(ops.square(y_true - y_pred), axis=1)


class _Aligner(keras.Model):
    def __init__(self, batch, ndims, kind, **kwargs):
        super().__init__(**kwargs)
        self.transform = _Transform(batch, ndims, kind, name="transform")

    def call(self, inputs):
        return self.transform(*inputs)


def _blurred(data, factors):
    """`data` smoothed for subsampling by `factors` per axis (Gaussian, sigma f/2)."""
    sigma = [max(f, 1.0) / 2.0 if f > 1 else 0.0 for f in factors]
    return ndimage.gaussian_filter(data, sigma) if any(sigma) else data


def _level(moving, moving_spacing, target_spacing):
    """The moving image blurred and subsampled towards `target_spacing` (never upsampled),
    with the map from its voxels back to the original's."""
    factors = np.maximum(np.asarray(target_spacing) / moving_spacing, 1.0)
    if np.all(factors < 1.5):
        return moving.astype(np.float32), np.eye(moving.ndim + 1)
    shape = tuple(max(int(round(n / f)), 2) for n, f in zip(moving.shape, factors))
    back = _resize_map(shape, moving.shape)
    small = geometry.sample(_blurred(moving, factors).astype(np.float32),
                            geometry.apply(back, geometry.indices(shape)), 1)
    return small, back


def _resize_map(small_shape, shape):
    """`(D+1, D+1)`: voxel of the `small_shape` grid -> voxel of the `shape` grid covering
    the same box."""
    return geometry.reduce(geometry.grid_affine(np.eye(4), shape, small_shape), len(shape))


def align(moving: np.ndarray, fixed: np.ndarray, initial: np.ndarray,
          fixed_spacing: Sequence[float], moving_spacing: Sequence[float],
          config: AffineConfig = AffineConfig()) -> np.ndarray:
    """Index maps `(B, D+1, D+1)` taking fixed-grid voxels to aligned moving voxels.

    Args:
        moving: `(B, *moving_shape)` images, background near 0 (normalised).
        fixed: `(B, *fixed_shape)` images on the fixed grid (normalised).
        initial: `(B, D+1, D+1)` fixed-grid voxel -> moving voxel of the same world point.
        fixed_spacing, moving_spacing: voxel sizes (mm) of the two grids.
        config: `AffineConfig`; kind 'none' returns `initial`.
    """
    initial = np.asarray(initial, np.float64)
    if config.kind == "none":
        return initial
    batch, ndims = fixed.shape[0], fixed.ndim - 1
    fixed_spacing = np.asarray(fixed_spacing, np.float64)
    # fixed-grid voxel <-> mm centred on the fixed image's centre of mass
    centres = [geometry.centre_of_mass(f) for f in fixed]
    to_mm = np.stack([_centred(fixed_spacing, c) for c in centres])
    from_mm = np.linalg.inv(to_mm)
    start = []
    for b in range(batch):  # the moving centre of mass, in fixed-grid mm
        centre = geometry.centre_of_mass(moving[b])
        fixed_voxel = geometry.apply(np.linalg.inv(initial[b]), centre)
        start.append(geometry.apply(to_mm[b], fixed_voxel))
    weights = None
    loss = global_ncc if config.similarity == "ncc" else mean_squares
    finest = max(max(fixed.shape[1:]) / config.grid, 1.0)
    for level, steps in enumerate(config.steps):
        factor = finest * 2 ** (len(config.steps) - 1 - level)
        shape = tuple(max(int(round(n / factor)), 4) for n in fixed.shape[1:])
        level_map = _resize_map(shape, fixed.shape[1:])
        level_spacing = fixed_spacing * np.asarray(fixed.shape[1:]) / np.asarray(shape)
        points = geometry.apply(level_map, geometry.indices(shape)).reshape(-1, ndims)
        targets = np.stack([geometry.sample(_blurred(f, fixed.shape[1:] / np.asarray(shape)),
                                            points.reshape(*shape, ndims), 1)
                            for f in fixed]).reshape(batch, -1).astype(np.float32)
        small, to_moving = [], []
        for b in range(batch):
            image, back = _level(moving[b], np.asarray(moving_spacing, np.float64),
                                 level_spacing)
            small.append(image)
            to_moving.append(np.linalg.inv(back) @ initial[b] @ from_mm[b])
        small = np.stack(small)[..., None]
        points_mm = np.stack([geometry.apply(to_mm[b], points) for b in range(batch)])
        # a model per level: one compiled step per input shape
        aligner = _Aligner(batch, ndims, config.kind, name="affine_aligner")
        aligner(inputs := [small, points_mm.astype(np.float32),
                           np.stack(to_moving).astype(np.float32)])
        transform = aligner.transform
        if weights is None:
            transform.start.assign(np.asarray(start, np.float32))
        else:
            transform.set_weights(weights)
        aligner.compile(optimizer=keras.optimizers.Adam(config.lr / 2 ** level), loss=loss)
        for _ in range(steps):
            aligner.train_on_batch(inputs, targets)
        weights = transform.get_weights()
    linear, shift = (ops.convert_to_numpy(m) for m in transform.matrices())
    result = []
    for b in range(batch):
        t = np.eye(ndims + 1)
        t[:-1, :-1], t[:-1, -1] = linear[b], shift[b]
        result.append(initial[b] @ from_mm[b] @ t @ to_mm[b])
    return np.stack(result)


def _centred(spacing, centre):
    """`(D+1, D+1)`: voxel -> mm (voxel sizes `spacing`) with `centre` at the origin."""
    matrix = np.diag(np.append(spacing, 1.0))
    matrix[:-1, -1] = -spacing * centre
    return matrix

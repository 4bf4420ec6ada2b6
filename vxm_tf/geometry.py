"""World coordinates: voxel grids with their affines, maps between grids, resampling.

An image is its array plus its `(4, 4)` voxel-to-world affine (NIfTI's RAS millimetres).
A 2D image is the plane k = 0 of that affine. Between two grids the geometry is a
`(D+1, D+1)` matrix taking a voxel index of one grid to a voxel index of the other, so
resampling, affine pre-alignment and the network's deformation compose into one map from
the fixed image's voxels to the moving image's before the moving image is interpolated once.
"""

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def embed(matrix: np.ndarray) -> np.ndarray:
    """A `(D+1, D+1)` index map as a `(4, 4)` one (2D: the third axis kept as it is)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (4, 4):
        return matrix
    full = np.eye(4)
    keep = [0, 1, 3]
    full[np.ix_(keep, keep)] = matrix
    return full


def reduce(matrix: np.ndarray, ndims: int) -> np.ndarray:
    """The `(D+1, D+1)` part of a `(4, 4)` map acting on the first `ndims` axes."""
    keep = list(range(ndims)) + [3]
    return np.asarray(matrix, dtype=np.float64)[np.ix_(keep, keep)]


def voxel_map(grid_affine: np.ndarray, image_affine: np.ndarray, ndims: int) -> np.ndarray:
    """`(D+1, D+1)`: a voxel index of the grid with `grid_affine` -> the voxel index of
    the same world point in the image with `image_affine`."""
    full = np.linalg.inv(np.asarray(image_affine, np.float64)) @ np.asarray(grid_affine)
    return reduce(full, ndims)


def grid_affine(affine: np.ndarray, in_shape: Sequence[int], out_shape: Sequence[int]
                ) -> np.ndarray:
    """Voxel-to-world affine of the grid of `out_shape` covering the same box as a grid of
    `in_shape` with `affine` (voxel centres aligned: out voxel i sits at in position
    (i + 0.5) * n / m - 0.5, as `data.volumes.resize_volume` samples)."""
    scale = np.eye(4)
    for axis, (n, m) in enumerate(zip(in_shape, out_shape)):
        scale[axis, axis] = n / m
        scale[axis, 3] = 0.5 * n / m - 0.5
    return np.asarray(affine, dtype=np.float64) @ scale


def spacing(affine: np.ndarray, ndims: int) -> np.ndarray:
    """Voxel size (mm) along the first `ndims` axes."""
    return np.sqrt((np.asarray(affine)[:3, :ndims] ** 2).sum(axis=0))


def indices(shape: Sequence[int], dtype=np.float64) -> np.ndarray:
    """Voxel indices `(*shape, D)`, `ij` order: the one identity grid."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=dtype) for n in shape],
                                indexing="ij"), axis=-1)


def apply(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """A `(D+1, D+1)` map applied to points `(..., D)`."""
    matrix = np.asarray(matrix)
    return coords @ matrix[:-1, :-1].T + matrix[:-1, -1]


def sample(data: np.ndarray, coords: np.ndarray, order: int, cval: float = 0.0
           ) -> np.ndarray:
    """`data` at voxel coordinates `(*shape, D)`: order 1 linear, 0 nearest; points outside
    the array read `cval` (scanner space beyond a field of view is background), or the
    nearest edge voxel when `cval` is None."""
    out = ndimage.map_coordinates(data, np.moveaxis(coords, -1, 0), order=order,
                                  mode="nearest" if cval is None else "constant",
                                  cval=0.0 if cval is None else cval)
    return out.astype(data.dtype)


def warp(data: np.ndarray, disp: np.ndarray, order: int) -> np.ndarray:
    """out[x] = data[x + disp[x]] for a voxel displacement `(*shape, D)` (edges repeated):
    the numpy counterpart of `vxm_tf.ops.transform`."""
    return sample(data, indices(data.shape) + disp, order, cval=None)


def inside_fraction(coords: np.ndarray, shape: Sequence[int]) -> float:
    """Fraction of points `(..., D)` inside an array of `shape` (half a voxel of margin)."""
    inside = np.ones(coords.shape[:-1], bool)
    for d, n in enumerate(shape):
        inside &= (coords[..., d] >= -0.5) & (coords[..., d] <= n - 0.5)
    return float(inside.mean())


def centre_of_mass(data: np.ndarray) -> np.ndarray:
    """Intensity-weighted centre `(D,)` in voxels of a non-negative image (its centre when
    blank)."""
    weights = np.clip(np.asarray(data, np.float64), 0, None)
    if weights.sum() <= 0:
        return (np.asarray(data.shape) - 1) / 2.0
    return np.asarray(ndimage.center_of_mass(weights))


def world_displacement(moving_coords: np.ndarray, moving_affine: np.ndarray,
                       fixed_affine: np.ndarray) -> np.ndarray:
    """Displacement `(*fixed_shape, 3)` in world mm (RAS) from each fixed voxel's world
    point to the moving world point it samples (`moving_coords`: moving voxel indices
    `(*fixed_shape, D)`)."""
    ndims = moving_coords.shape[-1]
    fixed_index = indices(moving_coords.shape[:-1])
    pad = [(0, 0)] * ndims + [(0, 3 - ndims)]  # a 2D image is the plane k = 0
    moving_world = apply(np.asarray(moving_affine), np.pad(moving_coords, pad))
    fixed_world = apply(np.asarray(fixed_affine), np.pad(fixed_index, pad))
    return (moving_world - fixed_world).astype(np.float32)


def moving_coordinates(displacement: np.ndarray, field_affine: np.ndarray,
                       moving_affine: np.ndarray, ndims: int) -> np.ndarray:
    """Moving voxel indices `(*field_shape, ndims)` sampled by a world displacement field
    `(*field_shape, 3)` (RAS mm) whose grid has `field_affine`."""
    field_shape = displacement.shape[:-1]
    grid = indices(field_shape)
    pad = [(0, 0)] * len(field_shape) + [(0, 3 - len(field_shape))]
    world = apply(np.asarray(field_affine, np.float64), np.pad(grid, pad)) + displacement
    index = apply(np.linalg.inv(np.asarray(moving_affine, np.float64)), world)
    return index[..., :ndims]

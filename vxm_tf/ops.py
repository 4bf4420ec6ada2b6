"""Pure `keras.ops` functions behind the layers: sampling, warping, integration, resizing.

Shapes follow the original VoxelMorph: images are `(B, *spatial, C)` and dense transforms
are displacements `(B, *spatial, D)` in voxels, `ij` indexing (component `d` moves along
axis `d`). Everything here computes in float32 and works on the TensorFlow and JAX
backends alike.

Borders behave as in the original: a location outside the image reads the nearest edge
voxel, unless a `fill_value` is given, in which case it reads that value.
"""

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from vxm_tf import geometry

# a tensor of the Keras backend in use (TensorFlow, JAX or torch)
Tensor = Any

INTERP_METHODS = ("linear", "nearest")


def check_interp_method(interp_method: str) -> None:
    if interp_method not in INTERP_METHODS:
        raise ValueError(
            f"interp_method must be one of {INTERP_METHODS}, got {interp_method!r}"
        )


def interpn(vol: ArrayLike, loc: ArrayLike, interp_method: str = "linear",
            fill_value: float | None = None) -> Tensor:
    """Sample `vol` at voxel locations `loc`.

    Args:
        vol: `(B, *in_spatial, C)` image.
        loc: `(B, *out_spatial, D)` absolute voxel coordinates, D = len(in_spatial).
        interp_method: 'linear' or 'nearest' (round half to even, as the original).
        fill_value: value for locations outside `[0, n - 1]`; None reads the nearest edge.

    Returns:
        `(B, *out_spatial, C)` float32.
    """
    check_interp_method(interp_method)
    vol = ops.cast(vol, "float32")
    loc = ops.cast(loc, "float32")
    in_shape = tuple(vol.shape[1:-1])
    ndims = len(in_shape)
    channels = vol.shape[-1]
    strides = [int(np.prod(in_shape[d + 1:])) for d in range(ndims)]
    voxels = int(np.prod(in_shape))
    batch = ops.shape(vol)[0]
    vol_flat = ops.reshape(vol, (-1, channels))
    batch_offset = ops.reshape(
        ops.arange(batch, dtype="int32") * voxels, (-1,) + (1,) * ndims
    )
    coords = [loc[..., d] for d in range(ndims)]

    # indices come from NaN-free coordinates (a NaN cast to int would read out of bounds);
    # linear weights keep the NaN, so a NaN field still gives a NaN image
    if interp_method == "nearest":
        index = batch_offset
        for d in range(ndims):
            safe = ops.where(ops.isnan(coords[d]), 0.0, coords[d])
            sub = ops.clip(ops.cast(ops.round(safe), "int32"), 0, in_shape[d] - 1)
            index = index + sub * strides[d]
        out = ops.take(vol_flat, index, axis=0)
    else:
        lower, upper, weight_upper = [], [], []
        for d in range(ndims):
            top = in_shape[d] - 1
            # clipped by `where`, not `clip`: a location exactly on the edge (an identity
            # warp's) gets the same gradient in every backend (JAX's clip halves it there)
            x = ops.where(coords[d] < 0.0, 0.0, ops.where(coords[d] > top, float(top),
                                                            coords[d]))
            safe = ops.where(ops.isnan(x), 0.0, x)
            x0 = ops.clip(ops.floor(safe), 0.0, float(max(top - 1, 0)))
            lower.append(ops.cast(x0, "int32") * strides[d])
            upper.append(ops.minimum(ops.cast(x0, "int32") + 1, top) * strides[d])
            weight_upper.append(x - x0)
        out = 0.0
        for corner in itertools.product((0, 1), repeat=ndims):
            index = batch_offset
            weight = 1.0
            for d, bit in enumerate(corner):
                index = index + (upper[d] if bit else lower[d])
                weight = weight * (weight_upper[d] if bit else 1.0 - weight_upper[d])
            out = out + ops.expand_dims(weight, -1) * ops.take(vol_flat, index, axis=0)

    if fill_value is not None:
        outside = None
        for d in range(ndims):
            bad = ops.logical_or(coords[d] < 0, coords[d] > in_shape[d] - 1)
            outside = bad if outside is None else ops.logical_or(outside, bad)
        out = ops.where(ops.expand_dims(outside, -1), float(fill_value), out)
    return out


def transform(vol: ArrayLike, disp: ArrayLike, interp_method: str = "linear",
              fill_value: float | None = None) -> Tensor:
    """Warp `vol` by displacement `disp`: out[x] = vol[x + disp[x]].

    Args:
        vol: `(B, *in_spatial, C)` image.
        disp: `(B, *out_spatial, D)` displacement in voxels.

    Returns:
        `(B, *out_spatial, C)` float32.
    """
    disp = ops.cast(disp, "float32")
    loc = disp + geometry.indices(disp.shape[1:-1], np.float32)
    return interpn(vol, loc, interp_method=interp_method, fill_value=fill_value)


def integrate_svf(vel: ArrayLike, int_steps: int = 7, unroll: bool = False) -> Tensor:
    """Scaling and squaring: exponentiate a stationary velocity field.

    Args:
        vel: `(B, *spatial, D)` velocity in voxels.
        int_steps: number of squarings; 0 returns `vel` unchanged.
        unroll: the squarings as a Python loop; only for gradients under TensorFlow's XLA,
            which cannot differentiate its while loop.

    Returns:
        `(B, *spatial, D)` displacement in voxels, float32.

    The squarings run as one loop (`ops.fori_loop`), not unrolled: XLA (JAX) fuses each
    unrolled step's gathers into the next step's and recomputes them, 8^steps-fold in 3D,
    so an unrolled integration compiles and runs far slower.
    """
    disp = ops.cast(vel, "float32") / (2.0**int_steps)
    if unroll:
        for _ in range(int_steps):
            disp = disp + transform(disp, disp)
    elif int_steps:
        disp = ops.fori_loop(0, int_steps, lambda _, d: d + transform(d, d), disp)
    return disp


def resized_shape(spatial_shape: Sequence[int | None], zoom_factor: float
                  ) -> tuple[int | None, ...]:
    """Output shape of `resize`: `int(n * zoom_factor)` per axis, as the original."""
    return tuple(None if n is None else int(n * zoom_factor) for n in spatial_shape)


def resize(vol: ArrayLike, zoom_factor: float, interp_method: str = "linear",
           shape: Sequence[int] | None = None) -> Tensor:
    """Resize `(B, *spatial, C)` by `zoom_factor` (or to spatial `shape`, when given),
    corners aligned as in the original.

    Output sample `i` of an axis of length `m` reads input position `i * (n - 1) / (m - 1)`.
    Linear interpolation is separable, so it runs one axis at a time.
    """
    check_interp_method(interp_method)
    vol = ops.cast(vol, "float32")
    in_shape = tuple(vol.shape[1:-1])
    out_shape = tuple(shape) if shape is not None else resized_shape(in_shape, zoom_factor)
    if out_shape == in_shape:
        return vol
    for axis, (n, m) in enumerate(zip(in_shape, out_shape)):
        if n == m:
            continue
        pos = np.linspace(0.0, n - 1.0, m, dtype=np.float32)
        if interp_method == "nearest":
            vol = ops.take(vol, np.clip(np.round(pos), 0, n - 1).astype("int32"), axis=axis + 1)
            continue
        i0 = np.clip(np.floor(pos), 0, max(n - 2, 0)).astype("int32")
        i1 = np.minimum(i0 + 1, n - 1).astype("int32")
        w1 = (pos - i0).astype(np.float32).reshape((m,) + (1,) * (len(in_shape) - axis))
        lo = ops.take(vol, i0, axis=axis + 1)
        hi = ops.take(vol, i1, axis=axis + 1)
        vol = lo * (1.0 - w1) + hi * w1
    return vol


def rescale_dense_transform(disp: ArrayLike, factor: float, interp_method: str = "linear"
                            ) -> Tensor:
    """Resize a displacement field and scale its vectors by `factor`.

    Args:
        disp: `(B, *spatial, D)` displacement in voxels of the input grid.
        factor: zoom factor; the vectors are multiplied by it too.

    Returns:
        `(B, *resized_shape(spatial, factor), D)` in voxels of the output grid.
    """
    disp = ops.cast(disp, "float32")
    if factor < 1:
        return resize(disp, factor, interp_method) * factor
    return resize(disp * factor, factor, interp_method)


def affine_to_dense_shift(matrix: ArrayLike, shape: Sequence[int], shift_center: bool = True
                          ) -> Tensor:
    """The displacement of an affine map on a grid, as voxelmorph's `affine_to_dense_shift`.

    Args:
        matrix: `(B, D, D + 1)` affine map of voxel coordinates (centred on the grid when
            `shift_center`): a voxel at `x` samples `matrix @ [x, 1]`.
        shape: spatial shape of the grid, D axes.

    Returns:
        `(B, *shape, D)` displacement in voxels, float32.
    """
    ndims = len(shape)
    matrix = ops.cast(matrix, "float32")
    grid = geometry.indices(shape, np.float32)
    if shift_center:
        grid = grid - (np.asarray(shape, np.float32) - 1) / 2
    loc = ops.einsum("bij,...j->b...i", matrix[:, :, :ndims], grid) + ops.reshape(
        matrix[:, :, ndims], (-1, *([1] * ndims), ndims))
    return loc - grid

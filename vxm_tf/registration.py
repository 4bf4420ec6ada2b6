"""Register volumes with a model: pairs of in-memory volumes in batches (validation and
evaluation), and single images of any size brought back to the fixed grid (`register`)."""

import numpy as np
from keras import ops
from scipy import ndimage

from vxm_tf import instance, metrics
from vxm_tf import ops as vxm_ops
from vxm_tf.data.volumes import resize_volume


def displacements(model, moving, fixed, instance_config=None):
    """`model.register(moving, fixed)`, refined by test-time instance optimisation when
    `instance_config` (an `instance.InstanceConfig`) asks for steps."""
    if instance_config is None or instance_config.steps == 0:
        return model.register(moving, fixed)
    return instance.optimise(model, moving, fixed, instance_config)


def register_pairs(model, volumes, pairs, batch_size=8, moving_images=None,
                   instance_config=None):
    """Yield `(pair, warp, moved_seg)` for each (moving, fixed) index pair.

    warp: `(*spatial, D)` displacement in voxels; moved_seg: the moving segmentation
    warped with nearest interpolation (None when the volumes have no segmentations).
    `moving_images` (N, *spatial) replaces the volumes' images on the moving side (a
    perturbed copy, say); the fixed side always uses `volumes.images`. `instance_config`
    adds test-time instance optimisation (`displacements`).
    """
    pairs = [tuple(p) for p in pairs]
    moving_images = volumes.images if moving_images is None else moving_images
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        moving = moving_images[[i for i, _ in chunk]][..., None]
        fixed = volumes.images[[j for _, j in chunk]][..., None]
        warps = displacements(model, moving, fixed, instance_config)
        moved_segs = [None] * len(chunk)
        if volumes.segs is not None:
            moved_segs = warp_segmentations(volumes.segs[[i for i, _ in chunk]], warps)
        yield from zip(chunk, warps, moved_segs)


def warp_segmentations(segs, warps):
    """Label maps `(B, *spatial)` warped by displacements `(B, *spatial, D)` (nearest)."""
    moved = vxm_ops.transform(segs[..., None].astype(np.float32), warps,
                              interp_method="nearest")
    return ops.convert_to_numpy(moved)[..., 0].astype(np.int32)


def validation_dice(model, volumes, pairs, batch_size=8):
    """Mean Dice over labels and pairs of the moved against the fixed segmentations."""
    labels = volumes.labels
    scores = [metrics.mean_dice(moved, volumes.segs[j], labels)
              for (_, j), _, moved in register_pairs(model, volumes, pairs, batch_size)]
    return float(np.mean(scores))


def identity_coordinates(shape):
    """Voxel indices `(*shape, D)` float64, `ij` order."""
    return np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape],
                                indexing="ij"), axis=-1)


def fixed_to_moving_coordinates(warp, moving_shape, fixed_shape):
    """Moving-image voxel coordinates `(*fixed_shape, D)` for each fixed-image voxel.

    `warp` is a model's displacement `(*model_shape, D)` (model voxels), computed on both
    images resampled to the model grid as `resize_volume` does (voxel centres aligned:
    model voxel i sits at (i + 0.5) * n / m - 0.5 of an axis of n voxels).
    """
    model_shape = warp.shape[:-1]
    grid = np.moveaxis(identity_coordinates(fixed_shape), -1, 0)
    model_coords = [(g + 0.5) * m / n - 0.5 for g, m, n in zip(grid, model_shape, fixed_shape)]
    coords = []
    for d, (m, n) in enumerate(zip(model_shape, moving_shape)):
        shift = ndimage.map_coordinates(warp[..., d], model_coords, order=1, mode="nearest")
        coords.append((model_coords[d] + shift + 0.5) * n / m - 0.5)
    return np.stack(coords, axis=-1)


def resample(data, coords, order):
    """`data` sampled at voxel coordinates `(*shape, D)`: order 1 linear, 0 nearest."""
    return ndimage.map_coordinates(data, np.moveaxis(coords, -1, 0), order=order,
                                   mode="nearest").astype(data.dtype)


def register_volumes(model, moving, fixed, instance_config=None):
    """Register arrays of any size with `model`: both are resampled to its input shape,
    registered (with instance optimisation when `instance_config` asks for it), and the
    result is brought back to the fixed grid.

    Returns `(*fixed.shape, D)` moving-voxel coordinates for each fixed voxel.
    """
    shape = tuple(model.inshape)
    small = [resize_volume(v, shape)[None, ..., None] for v in (moving, fixed)]
    warp = displacements(model, *small, instance_config)[0]
    return fixed_to_moving_coordinates(warp, moving.shape, fixed.shape)

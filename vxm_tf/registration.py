"""Register volumes with a model: pairs of in-memory volumes in batches (validation and
evaluation), and scans of any size, orientation and voxel size in world coordinates, with
affine pre-alignment (`register`)."""

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from keras import ops
from scipy import ndimage

from vxm_tf import affine, geometry, instance, metrics
from vxm_tf import ops as vxm_ops
from vxm_tf.data.volumes import resize_volume

if TYPE_CHECKING:
    from vxm_tf import io


def displacements(model, moving: np.ndarray, fixed: np.ndarray,
                  instance_config: "instance.InstanceConfig | None" = None) -> np.ndarray:
    """`model.register(moving, fixed)`, refined by test-time instance optimisation when
    `instance_config` (an `instance.InstanceConfig`) asks for steps.

    Images `(B, *spatial, C)` of another spatial size than the model's are registered
    through a resize: onto the model's grid as `prepare_data` resizes them (voxel centres
    area-aligned), and the displacement back onto theirs, in their voxels.
    """
    shape = tuple(np.shape(moving)[1:-1])
    if len(shape) == len(model.inshape) and shape != tuple(model.inshape):
        def small(images):
            return np.stack([np.stack([resize_volume(image[..., c], model.inshape)
                                       for c in range(image.shape[-1])], axis=-1)
                             for image in np.asarray(images, np.float32)])
        warps = displacements(model, small(moving), small(fixed), instance_config)
        zoom = np.array(shape, np.float32) / np.array(model.inshape, np.float32)
        return np.stack([np.stack([resize_volume(warp[..., d], shape) * zoom[d]
                                   for d in range(len(shape))], axis=-1) for warp in warps])
    if instance_config is None or instance_config.steps == 0:
        return model.register(moving, fixed)
    return instance.optimise(model, moving, fixed, instance_config)


def register_pairs(model, volumes, pairs: Sequence[tuple[int, int]], batch_size: int = 8,
                   moving_images: np.ndarray | None = None,
                   instance_config: "instance.InstanceConfig | None" = None,
                   seconds: list | None = None
                   ) -> Iterator[tuple[tuple[int, int], np.ndarray, np.ndarray | None]]:
    """Yield `(pair, warp, moved_seg)` for each (moving, fixed) index pair.

    warp: `(*spatial, D)` displacement in voxels; moved_seg: the moving segmentation
    warped with nearest interpolation (None when the volumes have no segmentations).
    `moving_images` (N, *spatial) replaces the volumes' images on the moving side (a
    perturbed copy, say); the fixed side always uses `volumes.images`. `instance_config`
    adds test-time instance optimisation (`displacements`). `seconds` (a list) gets each
    batch's registration time (without the warping of the segmentations).
    """
    pairs = [tuple(p) for p in pairs]
    moving_images = volumes.images if moving_images is None else moving_images
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        moving = moving_images[[i for i, _ in chunk]][..., None]
        fixed = volumes.images[[j for _, j in chunk]][..., None]
        start_time = time.perf_counter()
        warps = displacements(model, moving, fixed, instance_config)
        if seconds is not None:
            seconds.append(time.perf_counter() - start_time)
        moved_segs = [None] * len(chunk)
        if volumes.segs is not None:
            moved_segs = warp_segmentations(volumes.segs[[i for i, _ in chunk]], warps)
        yield from zip(chunk, warps, moved_segs)


def warp_segmentations(segs: np.ndarray, warps: np.ndarray) -> np.ndarray:
    """Label maps `(B, *spatial)` warped by displacements `(B, *spatial, D)` (nearest)."""
    moved = vxm_ops.transform(segs[..., None].astype(np.float32), warps,
                              interp_method="nearest")
    return ops.convert_to_numpy(moved)[..., 0].astype(np.int32)


def validation_dice(model, volumes, pairs: Sequence[tuple[int, int]], batch_size: int = 8
                    ) -> float:
    """Mean Dice over labels and pairs of the moved against the fixed segmentations."""
    labels = volumes.labels
    scores = [metrics.mean_dice(moved, volumes.segs[j], labels)
              for (_, j), _, moved in register_pairs(model, volumes, pairs, batch_size)]
    return float(np.mean(scores))


@dataclass
class Registration:
    """Where each fixed voxel samples the moving image, and the affine part.

    coords: moving voxel indices `(*fixed_shape, D)`: pre-alignment and deformation
        composed, so the moving image is interpolated once.
    matrix: `(4, 4)` world (RAS mm) map of the pre-alignment alone, fixed point -> moving
        point (identity for `--affine=none` on overlapping scans).
    inverse: fixed voxel indices `(*moving_shape, D)` for each moving voxel (the inverse
        map: negated velocity, inverse affine), when asked for.
    """
    coords: np.ndarray
    matrix: np.ndarray
    inverse: np.ndarray | None = None


def _sample_field(field, coords):
    """A displacement `(*grid, D)` linearly interpolated at voxel coordinates `(..., D)`."""
    grid = np.moveaxis(coords, -1, 0)
    return np.stack([ndimage.map_coordinates(field[..., d], grid, order=1, mode="nearest")
                     for d in range(field.shape[-1])], axis=-1)


def register_volumes(model, moving: "io.Volume", fixed: "io.Volume",
                     affine_config: "affine.AffineConfig | None" = None,
                     instance_config: "instance.InstanceConfig | None" = None,
                     inverse: bool = False) -> "Registration":
    """Register two `io.Volume`s of any size, orientation and voxel size (normalised
    intensities) with `model`, in world coordinates.

    The model grid covers the fixed image's box at the model's input shape. The moving
    image reaches it through scanner space, after rigid or affine pre-alignment
    (`affine_config`, an `affine.AffineConfig`; default affine), then the network (refined
    by instance optimisation when `instance_config` asks) deforms it there; the result is
    brought back to the fixed grid as one map (`Registration`); with `inverse`, also the
    map from the moving grid back to the fixed one (not with instance optimisation, whose
    correction has no velocity).
    """
    if inverse and instance_config is not None and instance_config.steps:
        raise ValueError("an inverse needs the network's own field: not with "
                         "--instance_steps")
    affine_config = affine.AffineConfig() if affine_config is None else affine_config
    shape = tuple(model.inshape)
    ndims = len(shape)
    model_affine = geometry.grid_affine(fixed.affine, fixed.data.shape, shape)
    fixed_small = resize_volume(fixed.data, shape)
    initial = geometry.voxel_map(model_affine, moving.affine, ndims)
    to_moving = affine.align(
        moving.data[None], fixed_small[None], initial[None],
        geometry.spacing(model_affine, ndims), geometry.spacing(moving.affine, ndims),
        affine_config)[0]
    moving_small = geometry.sample(moving.data.astype(np.float32),
                                   geometry.apply(to_moving, geometry.indices(shape)), 1)
    warp = displacements(model, moving_small[None, ..., None], fixed_small[None, ..., None],
                         instance_config)[0]
    # fixed voxel -> model voxel -> deformed -> moving voxel
    model_coords = geometry.apply(geometry.voxel_map(fixed.affine, model_affine, ndims),
                                  geometry.indices(fixed.data.shape))
    deformed = model_coords + _sample_field(warp, model_coords)
    matrix = (moving.affine @ geometry.embed(to_moving) @ np.linalg.inv(model_affine))
    result = Registration(geometry.apply(to_moving, deformed), matrix)
    if inverse:
        # moving voxel -> model voxel (inverse affine) -> inverse deformation -> fixed voxel
        backward = model.register_inverse(moving_small[None, ..., None],
                                          fixed_small[None, ..., None])[0]
        model_points = geometry.apply(np.linalg.inv(to_moving),
                                      geometry.indices(moving.data.shape))
        undeformed = model_points + _sample_field(backward, model_points)
        result.inverse = geometry.apply(geometry.voxel_map(model_affine, fixed.affine, ndims),
                                        undeformed)
    return result

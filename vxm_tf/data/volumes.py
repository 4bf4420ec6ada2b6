"""Subjects loaded into memory: resize, normalise, check, and the preprocessing cache.

A split of N subjects is held as one `Volumes` (N images, N segmentations): the pair
pipeline indexes into it, so memory grows with N, never with the N^2 pairs. With a memory
budget (`load_volumes(..., cache_bytes=)`) the images and segmentations are `LazyStack`s:
every subject is read and checked once up front, then kept only while the budget allows
and read again when needed, so memory no longer grows with N either.
"""

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from vxm_tf import geometry
from vxm_tf.data.datasets import DatasetError, Subject
from vxm_tf.io import file_type, load_volume, voxel_size

NORMALISATIONS = ("auto", "none", "minmax", "percentile")


class SubjectCache:
    """`loaders[k]()` -> (image, seg or None) of subject k, kept in a least-recently-used
    cache of at most `cache_bytes` (the last one read is always kept); thread-safe, as
    the pair source's workers share it."""

    def __init__(self, loaders, cache_bytes):
        self.loaders, self.cache_bytes = list(loaders), int(cache_bytes)
        self._cache, self._lock = OrderedDict(), threading.Lock()

    def __len__(self):
        return len(self.loaders)

    def get(self, k):
        with self._lock:
            if k in self._cache:
                self._cache.move_to_end(k)
                return self._cache[k]
        arrays = self.loaders[k]()
        self.put(k, arrays)
        return arrays

    def put(self, k, arrays):
        with self._lock:
            self._cache[k] = arrays
            self._cache.move_to_end(k)
            while len(self._cache) > 1 and self.nbytes > self.cache_bytes:
                self._cache.popitem(last=False)

    @property
    def nbytes(self):
        return sum(a.nbytes for arrays in self._cache.values() for a in arrays
                   if a is not None)


class LazyStack:
    """Part `part` (0: images, 1: segmentations) of a `SubjectCache`, indexed like the
    stacked `(N, *shape)` array: an int gives one subject, a slice or a list of ints a
    stacked copy; a tuple key applies its other entries to that result."""

    def __init__(self, cache, part, shape, dtype):
        self.cache, self.part = cache, part
        self.item_shape, self.dtype = tuple(shape), np.dtype(dtype)

    @property
    def shape(self):
        return (len(self.cache), *self.item_shape)

    @property
    def ndim(self):
        return 1 + len(self.item_shape)

    def __len__(self):
        return len(self.cache)

    def item(self, k):
        k = range(len(self.cache))[k]  # negative indices; IndexError past the end
        return np.asarray(self.cache.get(k)[self.part], self.dtype)

    def __getitem__(self, key):
        key, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(key, (int, np.integer)):
            out = self.item(int(key))
        else:
            index = (range(len(self))[key] if isinstance(key, slice)
                     else np.asarray(key, dtype=np.int64).ravel().tolist())
            out = (np.stack([self.item(int(k)) for k in index]) if len(index)
                   else np.empty((0, *self.item_shape), self.dtype))
        return out[rest] if rest else out

    def __iter__(self):
        return (self.item(k) for k in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        return np.stack(list(self)).astype(dtype or self.dtype, copy=False)


@dataclass
class Volumes:
    """Images `(N, *spatial)` float32, segmentations `(N, *spatial)` int32 or None,
    label names `{id: name}` and each subject's voxel size in mm, `(N, D)`. Images and
    segmentations are arrays, or `LazyStack`s read on demand (`label_ids` then holds the
    labels found when they were first read)."""

    names: list
    images: np.ndarray
    segs: np.ndarray | None = None
    label_names: dict = field(default_factory=dict)
    voxel_sizes: np.ndarray | None = None
    label_ids: list | None = None

    def __post_init__(self):
        if self.voxel_sizes is None:
            self.voxel_sizes = np.ones((len(self.names), self.images.ndim - 1))

    @property
    def shape(self):
        return self.images.shape[1:]

    @property
    def labels(self):
        """Label ids present in any segmentation, background (0) excluded."""
        if self.segs is None:
            return []
        if self.label_ids is not None:
            return list(self.label_ids)
        return [int(v) for v in np.unique(self.segs) if v != 0]

    def __len__(self):
        return len(self.names)


def resize_volume(data, shape, labels=False):
    """Resize a 2D/3D array to `shape`: linear for images, nearest for label maps.

    Voxel centres map as in area-aligned resampling (scipy `grid_mode=True`), the same
    for images and label maps, so both stay aligned. Nearest never invents a label.
    """
    shape = tuple(int(n) for n in shape)
    if data.shape == shape:
        return data
    if len(shape) != data.ndim:
        raise DatasetError(f"cannot resize a {data.ndim}D volume to {len(shape)}D shape {shape}")
    zoom = [out / n for out, n in zip(shape, data.shape)]
    return ndimage.zoom(data, zoom, order=0 if labels else 1, mode="nearest", grid_mode=True,
                        output=data.dtype if labels else np.float32)


def normalise_image(data, method="minmax"):
    """Scale intensities to [0, 1]: 'minmax', 'percentile' (0.5 to 99.5, clipped), 'none',
    or 'auto': as they are when already in [0, 1] (neurite-OASIS scans end near 0.8, and
    models trained on them lose Dice when stretched to 1), else 'minmax'."""
    if method == "auto":
        low, high = float(np.min(data)), float(np.max(data))
        method = "none" if 0.0 <= low and high <= 1.0 else "minmax"
    if method == "none":
        return data.astype(np.float32)
    if method not in NORMALISATIONS:
        raise DatasetError(f"normalisation must be one of {NORMALISATIONS}, got {method!r}")
    low, high = ((data.min(), data.max()) if method == "minmax"
                 else np.percentile(data, [0.5, 99.5]))
    if high <= low:
        return np.zeros_like(data, dtype=np.float32)
    return np.clip((data - low) / (high - low), 0, 1).astype(np.float32)


def normalise_pair(moving, fixed, method="auto"):
    """Scale the two images of a pair alike: with 'auto', both as they are when both are
    already in [0, 1], else both min-max scaled (a raw scan beside a [0, 1] one would
    otherwise be stretched alone and no longer match the other's brightness); other methods
    as `normalise_image`. Returns (moving, fixed, a sentence saying what was done)."""
    ranges = [(float(np.min(d)), float(np.max(d))) for d in (moving, fixed)]
    if method == "auto":
        inside = all(0.0 <= low and high <= 1.0 for low, high in ranges)
        method = "none" if inside else "minmax"
    said = ", ".join(f"{name} {low:.4g}..{high:.4g}" for name, (low, high)
                     in zip(("moving", "fixed"), ranges))
    said = (f"intensities {said}: " + ("kept as they are (both in [0, 1])" if method == "none"
                                       else f"both scaled to [0, 1] ({method})"))
    return normalise_image(moving, method), normalise_image(fixed, method), said


# intensities a model may see without normalisation: VoxelMorph models train on [0, 1]
NONE_RANGE = (-0.05, 1.5)


def check_intensities(data, path, normalise="none"):
    """Raise `DatasetError` naming `path` for an image that would register or train to a
    wrong answer silently: blank (one value everywhere), or, unnormalised, far outside the
    [0, 1] that models are trained on (raw scanner values such as 0..4095)."""
    low, high = float(np.min(data)), float(np.max(data))
    if low == high:
        raise DatasetError(f"{path}: a blank image (every voxel is {low:g}); there is nothing "
                           "to register")
    if normalise == "none" and not (NONE_RANGE[0] <= low and high <= NONE_RANGE[1]):
        raise DatasetError(f"{path}: intensities {low:.4g}..{high:.4g}, but models train and "
                           "register on [0, 1]; pass --normalise=percentile (or minmax)")


def load_subject(subject, target_shape=None, normalise="none"):
    """Read one subject, resized to `target_shape` if given.

    Returns (image float32, seg int32 or None, affine (4, 4), labels lost by resizing).
    """
    image = load_volume(subject.image)
    check_intensities(image.data, subject.image, normalise)
    seg = load_volume(subject.seg, labels=True) if subject.seg else None
    if seg is not None and seg.data.shape != image.data.shape:
        raise DatasetError(f"{subject.seg}: segmentation shape {seg.data.shape} differs from "
                           f"image {subject.image} shape {image.data.shape}")
    data, seg_data, affine = image.data, None if seg is None else seg.data, image.affine
    lost = []
    if target_shape is not None and tuple(target_shape) != data.shape:
        affine = geometry.grid_affine(affine, data.shape, target_shape)
        data = resize_volume(data, target_shape)
        if seg_data is not None:
            before = set(np.unique(seg_data).tolist())
            seg_data = resize_volume(seg_data, target_shape, labels=True)
            lost = sorted(before - set(np.unique(seg_data).tolist()))
    return normalise_image(data, normalise), seg_data, affine, lost


def load_volumes(subjects, target_shape=None, normalise="none", label_names=None,
                 cache_bytes=None):
    """Load subjects into one `Volumes`; all must share a shape unless `target_shape` is set.

    `cache_bytes`: None holds every subject in memory; a number makes the images and
    segmentations `LazyStack`s over a `SubjectCache` of that many bytes (each subject is
    still read and checked here, once)."""
    if not subjects:
        raise DatasetError("empty subject list")
    cache = None if cache_bytes is None else SubjectCache(
        [lambda s=s: load_subject(s, target_shape, normalise)[:2] for s in subjects],
        cache_bytes)
    images, segs, voxels, found = [], [], [], set()
    first = None
    for k, subject in enumerate(subjects):
        image, seg, affine, _ = load_subject(subject, target_shape, normalise)
        voxels.append(voxel_size(affine, image.ndim))
        if first is not None and image.shape != first[0].shape:
            raise DatasetError(f"{subject.image}: shape {image.shape} differs from "
                               f"{subjects[0].image} shape {first[0].shape}; set a target "
                               "shape to resize all subjects")
        if first is None:
            first = (image, seg)
        if first[1] is not None and seg is None or first[1] is None and seg is not None:
            missing = subject.image if seg is None else subjects[0].image
            raise DatasetError(f"{missing}: no segmentation, while other subjects have one")
        if cache is None:
            images.append(image)
            segs.append(seg)
        else:
            cache.put(k, (image, seg))
            if seg is not None:
                found.update(int(v) for v in np.unique(seg) if v != 0)
    names, voxels = [s.name for s in subjects], np.asarray(voxels)
    if cache is None:
        return Volumes(names, np.stack(images), None if first[1] is None else np.stack(segs),
                       dict(label_names or {}), voxels)
    image, seg = first
    return Volumes(names, LazyStack(cache, 0, image.shape, image.dtype),
                   None if seg is None else LazyStack(cache, 1, seg.shape, seg.dtype),
                   dict(label_names or {}), voxels, sorted(found))


def append_atlas(volumes, atlas_path, normalise="none"):
    """`volumes` with the atlas image (and segmentation, npz key `seg`, if the volumes have
    segmentations) appended as the last subject, resized to their shape. With
    segmentations, an atlas that is not an npz holding `seg` is a `DatasetError` (an image
    file read as labels would score its intensities as structures)."""
    if not Path(atlas_path).is_file():
        raise DatasetError(f"--atlas={atlas_path}: no such file")
    if volumes.segs is not None:
        has_seg = False
        if file_type(str(atlas_path)) == ".npz" and Path(atlas_path).is_file():
            with np.load(atlas_path) as npz:
                has_seg = "vol" in npz.files and "seg" in npz.files
        if not has_seg:
            raise DatasetError(f"--atlas={atlas_path}: the subjects have segmentations, so the "
                               "atlas needs its own: give an .npz holding `vol` (the image) "
                               "and `seg` (its label map)")
    atlas = Subject("atlas", str(atlas_path), str(atlas_path) if volumes.segs is not None
                    else None)
    image, seg, affine, _ = load_subject(atlas, volumes.shape, normalise)
    return Volumes(volumes.names + ["atlas"], np.concatenate([volumes.images, image[None]]),
                   None if seg is None else np.concatenate([volumes.segs, seg[None]]),
                   volumes.label_names,
                   np.concatenate([volumes.voxel_sizes, [voxel_size(affine, image.ndim)]]))

"""Read and write volumes: NIfTI (.nii, .nii.gz), MGH (.mgz) and npz (keys `vol` / `seg`).

Every error a user can cause (missing, unreadable or truncated file, NaN voxels, a shape
that is not 2D or 3D) is a `VolumeError` naming the file. Writes are atomic: a temporary
file in the same folder, renamed into place once complete.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from vxm_tf import files

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mgz")
SUFFIXES = NIFTI_SUFFIXES + (".npz",)


class VolumeError(ValueError):
    """A volume file that cannot be used, with the file named in the message."""


@dataclass
class Volume:
    """A 2D or 3D array with its voxel-to-world affine.

    data: `(*spatial)` array, float32 for images, integers for label maps.
    affine: `(4, 4)` voxel-to-world matrix (mm).
    path: where it was read from.
    """

    data: np.ndarray
    affine: np.ndarray
    path: str = ""

    @property
    def voxel_size(self):
        """Voxel size in mm along each spatial axis."""
        return voxel_size(self.affine, self.data.ndim)


def voxel_size(affine, ndims):
    """Voxel size in mm of the first `ndims` axes of a (4, 4) voxel-to-world affine."""
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return tuple(float(s) for s in sizes[:ndims])


def file_type(path):
    """The known suffix `path` ends in (`SUFFIXES`, any case), or None."""
    name = str(path).lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def load_volume(path, key=None, labels=False):
    """Load a volume; a trailing singleton axis is dropped (160x192x1 -> 160x192).

    An npz may hold an `affine` array beside the volume; otherwise its affine is identity.

    Args:
        path: .nii, .nii.gz, .mgz or .npz file.
        key: npz array name; default 'seg' when `labels` else 'vol'.
        labels: read as an integer label map (values must be whole numbers).

    Returns:
        `Volume` with float32 data (int32 for labels).
    """
    path = str(path)
    suffix = file_type(path)
    if suffix is None:
        raise VolumeError(f"{path}: unknown file type; expected one of {', '.join(SUFFIXES)}")
    if not os.path.isfile(path):
        raise VolumeError(f"{path}: no such file")
    try:
        if suffix == ".npz":
            data, affine = _load_npz(path, key or ("seg" if labels else "vol"))
        else:
            image = nib.load(path)
            data, affine = np.asarray(image.dataobj), image.affine
    except VolumeError:
        raise
    except Exception as err:  # nibabel, gzip and zlib raise many types for bad files
        raise VolumeError(f"{path}: unreadable or truncated ({type(err).__name__}: {err})"
                          ) from None
    return Volume(_checked(data, path, labels), _checked_affine(affine, path), path)


def _checked_affine(affine, path):
    """The header's voxel-to-world matrix, `VolumeError` naming `path` when it cannot place
    the voxels in the world (non-finite, or singular: a zero voxel size)."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise VolumeError(f"{path}: its header's affine is not a finite 4x4 matrix; fix the "
                          "header (e.g. the qform / sform) before registering")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise VolumeError(f"{path}: its header's affine is singular (a voxel size of 0): "
                          "the voxels have no place in the world; fix the header")
    return affine


# displacement fields are stored as ITK and ANTs write them: world millimetres in LPS
# (NIfTI's own world is RAS: the first two components change sign), one vector per voxel of
# the fixed grid, NIfTI shape (X, Y, Z, 1, 3) with the vector intent; npz: `vol` (X, Y, Z, 3)
# in LPS and `affine`
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0], dtype=np.float32)
VECTOR_INTENT = "vector"


def save_displacement(path, displacement, affine):
    """Write a displacement `(*shape, 3)` in RAS mm on the grid of `affine` (2D grids are
    written as one slice), in the ITK / ANTs layout (`RAS_TO_LPS`), atomically."""
    path = str(path)
    _check_output(path)
    if file_type(path) == ".mgz":
        raise VolumeError(f"{path}: displacement fields are written as NIfTI or npz")
    field = np.asarray(displacement, np.float32) * RAS_TO_LPS
    if field.ndim == 3:  # a 2D grid: one slice of the 3D world
        field = field[:, :, None]
    with files.atomic_path(path) as tmp:
        if file_type(path) == ".npz":
            np.savez_compressed(tmp, vol=field, affine=np.asarray(affine, np.float64))
        else:
            image = nib.Nifti1Image(field[:, :, :, None, :], np.asarray(affine, np.float64))
            image.header.set_intent(VECTOR_INTENT)
            nib.save(image, tmp)


def load_displacement(path):
    """A displacement field written by `save_displacement` (or by ANTs / ITK): `Volume`
    with data `(X, Y, Z, 3)` in RAS mm on the grid of its affine."""
    path = str(path)
    if file_type(path) is None or not os.path.isfile(path):
        raise VolumeError(f"{path}: no such file" if file_type(path) else
                          f"{path}: unknown file type; expected one of {', '.join(SUFFIXES)}")
    try:
        if file_type(path) == ".npz":
            data, affine = _load_npz(path, "vol")
        else:
            image = nib.load(path)
            data, affine = np.asarray(image.dataobj, dtype=np.float32), image.affine
    except VolumeError:
        raise
    except Exception as err:
        raise VolumeError(f"{path}: unreadable or truncated ({type(err).__name__}: {err})"
                          ) from None
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0]
    if data.ndim != 4 or data.shape[-1] != 3:
        raise VolumeError(f"{path}: expected a displacement field of 3-vectors in mm "
                          "(X, Y, Z, 1, 3) as vxm_tf.register, ANTs and ITK write them, got "
                          f"shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise VolumeError(f"{path}: displacement has NaN or Inf values")
    return Volume(data * RAS_TO_LPS, np.asarray(affine, dtype=np.float64), path)


def _check_output(path):
    if file_type(path) is None:
        raise VolumeError(f"{path}: unknown file type; expected one of {', '.join(SUFFIXES)}")
    folder = Path(path).parent
    if not folder.is_dir():
        raise VolumeError(f"{path}: folder {folder} does not exist")


def has_affine(path):
    """Whether the file at `path` places its voxels in world space: NIfTI and MGH always,
    an npz only with an `affine` array."""
    if file_type(str(path)) != ".npz":
        return True
    with np.load(path) as npz:
        return "affine" in npz.files


def _load_npz(path, key):
    with np.load(path) as npz:
        if key not in npz:
            raise VolumeError(f"{path}: no array {key!r} (has {sorted(npz.files)})")
        data = npz[key]
        affine = npz["affine"] if "affine" in npz.files else np.eye(4)
    return data, affine


def _checked(data, path, labels):
    while data.ndim > 2 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3):
        raise VolumeError(f"{path}: expected a 2D or 3D volume, got shape {data.shape}")
    if labels:
        if np.issubdtype(data.dtype, np.floating):
            if not np.all(np.isfinite(data)):
                raise VolumeError(f"{path}: label map has NaN or Inf voxels")
            if not np.array_equal(data, np.round(data)):
                raise VolumeError(f"{path}: label map has non-integer values")
        return data.astype(np.int32)
    data = data.astype(np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        raise VolumeError(f"{path}: {int(bad.sum())} NaN or Inf voxels")
    return data


def save_volume(path, data, affine=None):
    """Write `data` (2D or 3D) to .nii/.nii.gz/.mgz or .npz (with `affine`), atomically.

    The parent folder must exist; nothing is left behind if writing fails.
    """
    path = str(path)
    _check_output(path)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    with files.atomic_path(path) as tmp:
        if file_type(path) == ".npz":
            np.savez_compressed(tmp, vol=data, affine=affine)
        elif file_type(path) == ".mgz":
            nib.save(nib.MGHImage(np.asarray(data), affine), tmp)
        else:
            nib.save(nib.Nifti1Image(np.asarray(data), affine), tmp)

import gzip

import nibabel as nib
import numpy as np
import pytest

from vxm_tf.io import VolumeError, load_volume, save_volume


def write_nifti(path, data, zooms=(1.0, 1.0, 1.0)):
    affine = np.diag([*zooms, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return affine


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mgz"])
def test_round_trip_keeps_data_and_affine(tmp_path, suffix):
    data = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    affine = np.array([[-1.0, 0, 0, 80], [0, 0, 1.5, -112], [0, -1, 0, 96], [0, 0, 0, 1]])
    save_volume(tmp_path / f"v{suffix}", data, affine)
    volume = load_volume(tmp_path / f"v{suffix}")
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.affine, affine)
    assert volume.voxel_size == (1.0, 1.0, 1.5)
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]


def test_trailing_singleton_axis_makes_2d(tmp_path):
    write_nifti(tmp_path / "slice.nii.gz", np.zeros((16, 12, 1), np.float32))
    assert load_volume(tmp_path / "slice.nii.gz").data.shape == (16, 12)


def test_npz_vol_and_seg_keys(tmp_path):
    np.savez(tmp_path / "s.npz", vol=np.ones((4, 4, 4)), seg=np.full((4, 4, 4), 3.0))
    assert load_volume(tmp_path / "s.npz").data.dtype == np.float32
    seg = load_volume(tmp_path / "s.npz", labels=True).data
    assert seg.dtype == np.int32 and seg.max() == 3
    with pytest.raises(VolumeError, match=r"s.npz.*'atlas'"):
        load_volume(tmp_path / "s.npz", key="atlas")


def test_missing_file(tmp_path):
    with pytest.raises(VolumeError, match="nope.nii.gz: no such file"):
        load_volume(tmp_path / "nope.nii.gz")


def test_truncated_gzip_names_the_file(tmp_path):
    write_nifti(tmp_path / "full.nii.gz", np.random.rand(20, 20, 20).astype(np.float32))
    raw = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match="cut.nii.gz: unreadable or truncated"):
        load_volume(tmp_path / "cut.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti"))
    with pytest.raises(VolumeError, match="junk.nii.gz: unreadable"):
        load_volume(tmp_path / "junk.nii.gz")


def test_nan_voxels_and_non_integer_labels(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = np.nan
    write_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(VolumeError, match="nan.nii.gz: 1 NaN or Inf voxels"):
        load_volume(tmp_path / "nan.nii.gz")
    write_nifti(tmp_path / "frac.nii.gz", np.full((4, 4, 4), 0.5, np.float32))
    with pytest.raises(VolumeError, match="frac.nii.gz: label map has non-integer"):
        load_volume(tmp_path / "frac.nii.gz", labels=True)


def test_wrong_dimensionality_and_type(tmp_path):
    write_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 2), np.float32))
    with pytest.raises(VolumeError, match=r"4d.nii.gz: expected a 2D or 3D volume.*\(4, 4, 4, 2\)"):
        load_volume(tmp_path / "4d.nii.gz")
    with pytest.raises(VolumeError, match="scan.png: unknown file type"):
        load_volume(tmp_path / "scan.png")


def test_save_into_missing_folder_writes_nothing(tmp_path):
    with pytest.raises(VolumeError, match="does not exist"):
        save_volume(tmp_path / "missing" / "out.nii.gz", np.zeros((4, 4)))
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_no_partial_file(tmp_path):
    with pytest.raises(Exception, match="object"):
        save_volume(tmp_path / "bad.nii.gz", np.zeros((4, 4), dtype=object))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("affine, message", [
    (np.full((4, 4), np.nan), "not a finite 4x4 matrix"),
    (np.diag([1.0, 0.0, 1.0, 1.0]), "singular"),
])
def test_a_header_that_cannot_place_the_voxels_is_named(tmp_path, affine, message):
    """A NaN or singular affine is refused naming the file (it surfaced as 'Singular
    matrix' or 'cannot convert float NaN to integer' from deep in the registration)."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header["qform_code"], header["sform_code"] = 0, 2
    for k, row in enumerate(("srow_x", "srow_y", "srow_z")):
        header[row] = affine[k]
    data = np.random.default_rng(0).random((6, 6, 6)).astype(np.float32)
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, None, header=header), str(path))
    with pytest.raises(VolumeError, match=f"bad.nii.gz: its header's affine .*{message}"):
        load_volume(path)


def test_a_write_that_fails_names_the_users_path(tmp_path):
    """An error while writing names the output, not the temporary file beside it."""
    from vxm_tf import files

    (tmp_path / "out.nii.gz").mkdir()  # the final rename fails
    with pytest.raises(OSError, match=r"out.nii.gz: cannot write") as err:
        files.write_text(tmp_path / "out.nii.gz", "x")
    assert ".tmp-" not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]


def test_a_folder_given_as_a_model_is_named(tmp_path):
    from vxm_tf import networks

    (tmp_path / "run.h5").mkdir()
    with pytest.raises(ValueError, match="run.h5: a folder, not a model file"):
        networks.VxmDense.load(tmp_path / "run.h5")

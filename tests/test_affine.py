"""Affine pre-alignment, world-coordinate geometry, and the displacement file's convention."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from vxm_tf import affine, geometry, io
from vxm_tf.data.synthetic import smooth_noise

ROOT = Path(__file__).resolve().parents[1]


def rotation_matrix(degrees):
    """Rotation about the first, second, then third axis."""
    rx, ry, rz = np.deg2rad(degrees)
    x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


def head(shape, seed):
    """A textured ellipsoid, background 0 (a stand-in for a skull-stripped scan)."""
    rng = np.random.default_rng(seed)
    radius = np.linalg.norm((geometry.indices(shape) - (np.asarray(shape) - 1) / 2)
                            / (np.asarray(shape) * [0.42, 0.36, 0.44]), axis=-1)
    image = (0.2 * smooth_noise(shape, 3, rng) + 0.6) * (radius < 1)
    return ndimage.gaussian_filter(image, 1).astype(np.float32)


FIXED_AFFINE = np.array([[2.0, 0, 0, -48], [0, 2, 0, -40], [0, 0, 2, -50], [0, 0, 0, 1]])
# the moving scan: another orientation (x flipped, y and z swapped), 2.5 mm voxels, another
# field of view
MOVING_AFFINE = np.array([[-2.5, 0, 0, 60], [0, 0, 2.5, -55], [0, -2.5, 0, 50], [0, 0, 0, 1]])


def moved_scan(fixed, truth, shape=(44, 40, 46)):
    """The fixed scan seen through `truth` (fixed-space point -> moving-space point) on the
    moving scan's grid: moving(y) = fixed(truth^-1 y)."""
    to_fixed = np.linalg.inv(FIXED_AFFINE) @ np.linalg.inv(truth) @ MOVING_AFFINE
    return geometry.sample(fixed, geometry.apply(to_fixed, geometry.indices(shape)), 1)


def found_matrix(moving, fixed, kind):
    initial = geometry.voxel_map(FIXED_AFFINE, MOVING_AFFINE, 3)
    index_map = affine.align(moving[None], fixed[None], initial[None], [2.0] * 3, [2.5] * 3,
                             affine.AffineConfig(kind))[0]
    return MOVING_AFFINE @ index_map @ np.linalg.inv(FIXED_AFFINE)


def test_a_known_affine_is_recovered_across_orientation_voxel_size_and_field_of_view():
    """Rotation 20 degrees, translation 20 mm, scaling 10%: recovered to < 1 degree and
    < 1 mm (rigid: the rotation and translation of a rigid truth)."""
    fixed = head((48, 48, 48), 0)
    centre = FIXED_AFFINE @ np.array([23.5, 23.5, 23.5, 1])
    truth = np.eye(4)
    truth[:3, :3] = rotation_matrix([8, -16, 9]) @ np.diag([1.1, 0.92, 1.0])
    truth[:3, 3] = centre[:3] - truth[:3, :3] @ centre[:3] + [12, -14, 8]
    rigid = truth.copy()
    rigid[:3, :3] = rotation_matrix([8, -16, 9])
    rigid[:3, 3] = centre[:3] - rigid[:3, :3] @ centre[:3] + [12, -14, 8]
    points = geometry.apply(FIXED_AFFINE, geometry.indices(fixed.shape)[fixed > 0.3])
    for kind, target in (("affine", truth), ("rigid", rigid)):
        found = found_matrix(moved_scan(fixed, target), fixed, kind)
        error = np.linalg.norm(geometry.apply(found, points) - geometry.apply(target, points),
                               axis=-1)
        assert error.max() < 1.0, (kind, error.mean(), error.max())  # mm, over the head
        residual = found[:3, :3] @ np.linalg.inv(target[:3, :3])
        degrees = np.rad2deg(np.arccos(np.clip((np.trace(residual) - 1) / 2, -1, 1)))
        assert degrees < 1.0, (kind, degrees)
    # without pre-alignment the scans are far apart: the test is not trivially passed
    unaligned = np.linalg.norm(points - geometry.apply(truth, points), axis=-1)
    assert unaligned.mean() > 10


def test_pairs_align_as_a_batch_as_they_do_alone():
    fixed = head((32, 32, 32), 1)
    shifts = ([6, -4, 3], [-5, 7, 2])
    batch_moving, alone = [], []
    for shift in shifts:
        truth = np.eye(4)
        truth[:3, :3] = rotation_matrix([5, 0, -6])
        truth[:3, 3] = shift
        batch_moving.append(moved_scan(fixed, truth, (36, 34, 38)))
    initial = geometry.voxel_map(FIXED_AFFINE, MOVING_AFFINE, 3)
    config = affine.AffineConfig("rigid")
    together = affine.align(np.stack(batch_moving), np.stack([fixed, fixed]),
                            np.stack([initial, initial]), [2.0] * 3, [2.5] * 3, config)
    for moving, matrix in zip(batch_moving, together):
        alone = affine.align(moving[None], fixed[None], initial[None], [2.0] * 3, [2.5] * 3,
                             config)[0]
        np.testing.assert_allclose(matrix, alone, atol=1e-2)  # moving voxels


def test_none_keeps_the_world_map():
    initial = geometry.voxel_map(FIXED_AFFINE, MOVING_AFFINE, 3)
    out = affine.align(np.zeros((1, 8, 8, 8)), np.zeros((1, 8, 8, 8)), initial[None],
                       [2.0] * 3, [2.5] * 3, affine.AffineConfig("none"))
    np.testing.assert_array_equal(out[0], initial)


@pytest.mark.parametrize("bad, message", [
    (dict(kind="similarity"), "--affine must be one of"),
    (dict(similarity="mi"), "the affine similarity must be one of"),
    (dict(steps=()), "must be positive integers"),
    (dict(grid=0), "must be positive integers"),
    (dict(lr=0), "lr must be positive"),
])
def test_bad_configs_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        affine.AffineConfig(**bad)


def test_displacement_file_round_trip_in_world_millimetres(tmp_path):
    """A world displacement written in the ITK / ANTs layout reads back as it was, and
    applying it samples the moving scan where the field says, in any voxel order."""
    shape = (12, 10, 8)
    rng = np.random.default_rng(0)
    field = rng.normal(0, 2, (*shape, 3)).astype(np.float32)
    for suffix in (".nii.gz", ".npz"):
        io.save_displacement(tmp_path / f"w{suffix}", field, FIXED_AFFINE)
        back = io.load_displacement(tmp_path / f"w{suffix}")
        np.testing.assert_allclose(back.data, field, atol=1e-6)
        np.testing.assert_allclose(back.affine, FIXED_AFFINE)
    # a pure translation of (3, -2, 5) mm: the moving voxel sampled is the translated point
    translation = np.broadcast_to(np.float32([3, -2, 5]), (*shape, 3))
    coords = geometry.moving_coordinates(translation, FIXED_AFFINE, MOVING_AFFINE, 3)
    world = geometry.apply(MOVING_AFFINE, coords)
    expected = geometry.apply(FIXED_AFFINE, geometry.indices(shape)) + [3, -2, 5]
    np.testing.assert_allclose(world, expected, atol=1e-4)
    # and world_displacement inverts moving_coordinates
    again = geometry.world_displacement(coords, MOVING_AFFINE, FIXED_AFFINE)
    np.testing.assert_allclose(again, translation, atol=1e-4)


ANTS_PYTHON = ROOT / ".venv-ants" / "bin" / "python"


@pytest.mark.skipif(not ANTS_PYTHON.exists(), reason="antspyx is not installed: make baselines")
def test_ants_applies_our_displacement_file_as_vxm_tf_warp_does(tmp_path):
    """The convention is what ANTs reads: antsApplyTransforms with our field gives the image
    that `vxm_tf.warp` gives (a smooth field of several mm, scans in other orientations)."""
    from vxm_tf import workflows

    fixed_shape = (24, 22, 20)
    moving = head((26, 24, 28), 2)
    # another orientation and voxel size, centred on the fixed scan's box
    moving_affine = np.array([[-2.5, 0, 0, 6.25], [0, 0, 2.5, -52.75], [0, -2.5, 0, -2.25],
                              [0, 0, 0, 1]])
    io.save_volume(tmp_path / "moving.nii.gz", moving, moving_affine)
    io.save_volume(tmp_path / "fixed.nii.gz", np.zeros(fixed_shape, np.float32), FIXED_AFFINE)
    rng = np.random.default_rng(1)
    field = np.stack([4 * smooth_noise(fixed_shape, 4, rng) for _ in range(3)], -1)
    io.save_displacement(tmp_path / "w.nii.gz", field, FIXED_AFFINE)
    workflows.warp_file(str(tmp_path / "moving.nii.gz"), str(tmp_path / "w.nii.gz"),
                   str(tmp_path / "ours.nii.gz"))
    script = ("import ants, sys; d = sys.argv[1]; "
              "out = ants.apply_transforms(ants.image_read(d + '/fixed.nii.gz'), "
              "ants.image_read(d + '/moving.nii.gz'), [d + '/w.nii.gz'], "
              "interpolator='linear'); ants.image_write(out, d + '/ants.nii.gz')")
    subprocess.run([str(ANTS_PYTHON), "-c", script, str(tmp_path)], check=True, timeout=300)
    ours = io.load_volume(tmp_path / "ours.nii.gz").data
    theirs = io.load_volume(tmp_path / "ants.nii.gz").data
    inside = ndimage.binary_erosion(ours > 0.1, iterations=2)
    assert inside.sum() > 500
    np.testing.assert_allclose(theirs[inside], ours[inside], atol=2e-3)

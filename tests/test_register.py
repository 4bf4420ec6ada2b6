"""`python -m vxm_tf.register` and `vxm_tf.warp` on NIfTI files of another size."""

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from vxm_tf import data, metrics, register, warp
from vxm_tf.data.synthetic import random_displacement, warp_numpy

AFFINE = np.array([[-1.2, 0, 0, 30], [0, 0, 1.1, -20], [0, -1.2, 0, 25], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """fixed: a synthetic subject at 40x40; moving: it warped by a known smooth field."""
    folder = tmp_path_factory.mktemp("pair")
    volumes = data.synthetic_volumes(1, (40, 40), nb_labels=4, seed=11)
    fixed, fixed_seg = volumes.images[0], volumes.segs[0]
    disp = random_displacement((40, 40), 2.0, 5, np.random.default_rng(3))
    moving, moving_seg = warp_numpy(fixed, disp, 1), warp_numpy(fixed_seg, disp, 0)
    for name, array in (("fixed", fixed), ("moving", moving), ("fixed_seg", fixed_seg),
                        ("moving_seg", moving_seg)):
        dtype = np.float32 if "seg" not in name else np.uint8
        nib.save(nib.Nifti1Image(array.astype(dtype)[..., None], AFFINE),
                 str(folder / f"{name}.nii.gz"))
    return folder


def test_register_round_trip_improves_overlap_on_the_fixed_grid(trained_run, pair, tmp_path):
    register.register_files(
        str(trained_run / "best.keras"), str(pair / "moving.nii.gz"),
        str(pair / "fixed.nii.gz"), str(tmp_path / "moved.nii.gz"), str(tmp_path / "w.nii.gz"),
        str(pair / "moving_seg.nii.gz"), str(tmp_path / "moved_seg.nii.gz"))
    moved = nib.load(str(tmp_path / "moved.nii.gz"))
    assert moved.shape == (40, 40)
    np.testing.assert_allclose(moved.affine, AFFINE)
    fixed_seg = np.asarray(nib.load(str(pair / "fixed_seg.nii.gz")).dataobj)[..., 0]
    moving_seg = np.asarray(nib.load(str(pair / "moving_seg.nii.gz")).dataobj)[..., 0]
    moved_seg = np.asarray(nib.load(str(tmp_path / "moved_seg.nii.gz")).dataobj)
    before = metrics.mean_dice(moving_seg, fixed_seg)
    after = metrics.mean_dice(moved_seg, fixed_seg)
    assert after > before + 0.02, (before, after)
    assert set(np.unique(moved_seg)) <= set(np.unique(moving_seg))
    assert nib.load(str(tmp_path / "w.nii.gz")).shape == (40, 40, 2)

    warp.warp_file(str(pair / "moving.nii.gz"), str(tmp_path / "w.nii.gz"),
                   str(tmp_path / "again.nii.gz"))
    again = np.asarray(nib.load(str(tmp_path / "again.nii.gz")).dataobj)
    np.testing.assert_allclose(again, np.asarray(moved.dataobj), atol=1e-5)
    # the field records the moving image's shape: another image is refused, nothing written
    nib.save(nib.Nifti1Image(np.ones((44, 40), np.float32), AFFINE),
             str(tmp_path / "other.nii.gz"))
    with pytest.raises(ValueError, match=r"other.nii.gz: shape \(44, 40\), but .*w.nii.gz "
                                         r"maps into an image of shape \(40, 40\)"):
        warp.warp_file(str(tmp_path / "other.nii.gz"), str(tmp_path / "w.nii.gz"),
                       str(tmp_path / "bad.nii.gz"))
    assert not (tmp_path / "bad.nii.gz").exists()


def run_register(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "vxm_tf.register", *args],
                          capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("make_args, message", [
    (lambda r, p, t: [f"--model={t}/notes.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz"],
     "notes.keras: not a readable Keras model file"),
    (lambda r, p, t: [f"--model={t}/absent.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz"],
     "absent.keras: no such file"),
    # every output is checked before the moved image is written
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}/warp.txt"], "warp.txt: unknown file type"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}/missing/warp.nii.gz"], "folder"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/vol3d.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz"],
     "vol3d.nii.gz: a 3D image, but the model registers 2D images"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/missing/out.nii.gz"],
     "does not exist"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--moved_seg={t}/seg.nii.gz"], "--moving_seg and --moved_seg go together"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}/out.nii.gz"], "out.nii.gz: the same path is given for two"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      "--instance_steps=-1"], "--instance_steps must be a non-negative"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/vol3d.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/vol3d.nii.gz"],
     "vol3d.nii.gz: the same path is given for two files"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/blank.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz"],
     "blank.nii.gz: a blank image (every voxel is 0)"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={t}/raw.nii.gz", f"--moved={t}/out.nii.gz",
                      "--normalise=none"],
     "raw.nii.gz: intensities 0..4095, but models train and register on [0, 1]"),
])
def test_register_errors_are_one_line_and_write_nothing(trained_run, pair, tmp_path,
                                                        make_args, message):
    (tmp_path / "notes.keras").write_text("not a model")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)),
             str(tmp_path / "vol3d.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((40, 40), np.float32), np.eye(4)),
             str(tmp_path / "blank.nii.gz"))
    raw = np.random.default_rng(0).integers(0, 4096, (40, 40)).astype(np.int16)
    raw[0, 0], raw[0, 1] = 0, 4095
    nib.save(nib.Nifti1Image(raw, np.eye(4)), str(tmp_path / "raw.nii.gz"))
    run = run_register(make_args(trained_run, pair, tmp_path))
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
    assert message in lines[0]
    assert not (tmp_path / "out.nii.gz").exists()


def test_outputs_get_the_umasks_permissions(trained_run, pair, tmp_path):
    old = os.umask(0o027)
    try:
        register.register_files(str(trained_run / "best.keras"), str(pair / "moving.nii.gz"),
                                str(pair / "fixed.nii.gz"), str(tmp_path / "moved.nii.gz"),
                                str(tmp_path / "w.npz"))
    finally:
        os.umask(old)
    for name in ("moved.nii.gz", "w.npz"):  # not the temporary file's 0600
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []

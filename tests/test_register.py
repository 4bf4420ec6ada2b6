"""`python -m vxm_tf.register` and `vxm_tf.warp` on NIfTI files of another size."""

import os
import shutil
import subprocess
import sys

import cli_batch
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from vxm_tf import (
    affine,
    data,
    geometry,
    instance,
    io,
    metrics,
    networks,
    registration,
    workflows,
)
from vxm_tf.data.synthetic import random_displacement

AFFINE = np.array([[-1.2, 0, 0, 30], [0, 0, 1.1, -20], [0, -1.2, 0, 25], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """fixed: a synthetic subject at 40x40; moving: it warped by a known smooth field."""
    folder = tmp_path_factory.mktemp("pair")
    volumes = data.synthetic_volumes(1, (40, 40), nb_labels=4, seed=11)
    fixed, fixed_seg = volumes.images[0], volumes.segs[0]
    disp = random_displacement((40, 40), 2.0, 5, np.random.default_rng(3))
    moving, moving_seg = geometry.warp(fixed, disp, 1), geometry.warp(fixed_seg, disp, 0)
    for name, array in (("fixed", fixed), ("moving", moving), ("fixed_seg", fixed_seg),
                        ("moving_seg", moving_seg)):
        dtype = np.float32 if "seg" not in name else np.uint8
        nib.save(nib.Nifti1Image(array.astype(dtype)[..., None], AFFINE),
                 str(folder / f"{name}.nii.gz"))
    return folder


def test_register_round_trip_improves_overlap_on_the_fixed_grid(trained_run, pair, tmp_path):
    workflows.register_files(
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
    warp_image = nib.load(str(tmp_path / "w.nii.gz"))
    assert warp_image.shape == (40, 40, 1, 1, 3)  # ITK / ANTs layout, 3-vectors in mm
    assert warp_image.header.get_intent()[0] == "vector"

    workflows.warp_file(str(pair / "moving.nii.gz"), str(tmp_path / "w.nii.gz"),
                   str(tmp_path / "again.nii.gz"))
    again = np.asarray(nib.load(str(tmp_path / "again.nii.gz")).dataobj)
    np.testing.assert_allclose(again, np.asarray(moved.dataobj), atol=1e-5)
    # an image that is not in the moving scan's world space is refused, nothing written
    far = AFFINE.copy()
    far[:3, 3] += 500
    nib.save(nib.Nifti1Image(np.ones((40, 40), np.float32), far),
             str(tmp_path / "other.nii.gz"))
    with pytest.raises(ValueError, match=r"other.nii.gz: only 0% of .*w.nii.gz's points fall "
                                         "inside this image"):
        workflows.warp_file(str(tmp_path / "other.nii.gz"), str(tmp_path / "w.nii.gz"),
                       str(tmp_path / "bad.nii.gz"))
    assert not (tmp_path / "bad.nii.gz").exists()


def reoriented(array, affine, transpose=True, flip=(0,)):
    """The same image in another voxel order: axes flipped and swapped, with the affine
    changed to match, so every voxel keeps its world position."""
    matrix = np.eye(3)
    for axis in flip:
        array = np.flip(array, axis)
        step = np.eye(3)
        step[axis, axis], step[axis, 2] = -1, array.shape[axis] - 1
        matrix = matrix @ step
    if transpose:
        array = array.T
        swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1.0]])
        matrix = matrix @ swap
    return np.ascontiguousarray(array), affine @ geometry.embed(matrix)


def resampled(array, affine, shape, order):
    """The image on a grid of `shape` over the same box (another voxel size)."""
    new_affine = geometry.grid_affine(affine, array.shape, shape)
    coords = geometry.apply(geometry.voxel_map(new_affine, affine, 2), geometry.indices(shape))
    return ndimage.map_coordinates(array, np.moveaxis(coords, -1, 0), order=order,
                                   mode="nearest"), new_affine


@pytest.mark.parametrize("affine_kind", ["none", "affine"])
def test_orientation_and_voxel_size_do_not_change_the_result(trained_run, pair, tmp_path,
                                                             affine_kind):
    """The moving scan flipped and transposed (affine to match), or resampled to half the
    voxel size (each voxel split in four, so its labels are exactly the original's),
    registers to the same result as the original, in world coordinates."""
    image = nib.load(str(pair / "moving.nii.gz"))
    seg = nib.load(str(pair / "moving_seg.nii.gz"))
    data, labels = np.asarray(image.dataobj)[..., 0], np.asarray(seg.dataobj)[..., 0]
    variants = {"original": (data, labels, AFFINE),
                "reoriented": (*[reoriented(a, AFFINE)[0] for a in (data, labels)],
                               reoriented(data, AFFINE)[1]),
                "resampled": (resampled(data, AFFINE, (80, 80), 1)[0],
                              resampled(labels, AFFINE, (80, 80), 0)[0],
                              resampled(data, AFFINE, (80, 80), 1)[1])}
    fixed_seg = np.asarray(nib.load(str(pair / "fixed_seg.nii.gz")).dataobj)[..., 0]
    scores, moved = {}, {}
    for name, (array, label_map, matrix) in variants.items():
        nib.save(nib.Nifti1Image(array.astype(np.float32), matrix), str(tmp_path / "m.nii"))
        nib.save(nib.Nifti1Image(label_map.astype(np.int16), matrix),
                 str(tmp_path / "ms.nii"))
        workflows.register_files(
            str(trained_run / "best.keras"), str(tmp_path / "m.nii"),
            str(pair / "fixed.nii.gz"), str(tmp_path / f"{name}.nii"),
            moving_seg_path=str(tmp_path / "ms.nii"),
            moved_seg_path=str(tmp_path / f"{name}_seg.nii"),
            affine_config=affine.AffineConfig(affine_kind))
        moved_seg = np.asarray(nib.load(str(tmp_path / f"{name}_seg.nii")).dataobj)
        scores[name] = metrics.mean_dice(moved_seg, fixed_seg)
        moved[name] = np.asarray(nib.load(str(tmp_path / f"{name}.nii")).dataobj)
    # the reoriented scan holds exactly the same samples: the same result (the affine
    # optimisation's float32 sums may run in another order: a path a hair apart)
    np.testing.assert_allclose(moved["reoriented"], moved["original"],
                               atol=1e-3 if affine_kind == "none" else 1e-2)
    # the resampled scan's samples are interpolated ones: the affine step optimises on
    # other values and lands a hair apart (0.013 Dice on these 32x32 toys, this
    # environment's TensorFlow 2.21 / Keras 3.15)
    assert abs(scores["resampled"] - scores["original"]) < (
        0.01 if affine_kind == "none" else 0.02), scores
    assert scores["original"] > metrics.mean_dice(labels, fixed_seg) + 0.02, scores


def test_affine_pre_alignment_recovers_a_known_transform_and_writes_it(trained_run, pair,
                                                                       tmp_path):
    """The fixed scan moved by a known rotation, scaling and translation in world space:
    --affine=affine undoes it (the matrix written, the overlap restored); --affine=none
    cannot."""
    fixed = nib.load(str(pair / "fixed.nii.gz"))
    fixed_seg = np.asarray(nib.load(str(pair / "fixed_seg.nii.gz")).dataobj)[..., 0]
    data = np.asarray(fixed.dataobj)[..., 0]
    angle = np.deg2rad(12)
    # moving-space point = truth @ fixed-space point, in the plane of the 2D scans
    plane = AFFINE[:3, :2] / np.linalg.norm(AFFINE[:3, :2], axis=0)
    rotation = np.eye(3) + np.sin(angle) * (np.outer(plane[:, 1], plane[:, 0])
                                            - np.outer(plane[:, 0], plane[:, 1])) \
        + (np.cos(angle) - 1) * (np.outer(plane[:, 0], plane[:, 0])
                                 + np.outer(plane[:, 1], plane[:, 1]))
    truth = np.eye(4)
    truth[:3, :3] = rotation * 1.05
    centre = AFFINE @ np.array([19.5, 19.5, 0, 1])
    truth[:3, 3] = centre[:3] - truth[:3, :3] @ centre[:3] + 3.0 * plane[:, 0]
    # moving(y) = fixed(truth^-1 y)
    coords = geometry.apply(geometry.reduce(np.linalg.inv(AFFINE) @ np.linalg.inv(truth)
                                            @ AFFINE, 2), geometry.indices((40, 40)))
    for name, array, order in (("m", data, 1), ("ms", fixed_seg, 0)):
        out = ndimage.map_coordinates(array, np.moveaxis(coords, -1, 0), order=order)
        nib.save(nib.Nifti1Image(out.astype(np.float32), AFFINE), str(tmp_path / f"{name}.nii"))
    scores = {}
    for kind in ("none", "affine"):
        workflows.register_files(
            str(trained_run / "best.keras"), str(tmp_path / "m.nii"),
            str(pair / "fixed.nii.gz"), str(tmp_path / "moved.nii"),
            moving_seg_path=str(tmp_path / "ms.nii"),
            moved_seg_path=str(tmp_path / "moved_seg.nii"),
            affine_config=affine.AffineConfig(kind), affine_path=str(tmp_path / "a.txt"))
        moved_seg = np.asarray(nib.load(str(tmp_path / "moved_seg.nii")).dataobj)
        scores[kind] = metrics.mean_dice(moved_seg, fixed_seg)
    found = np.loadtxt(tmp_path / "a.txt")
    points = geometry.apply(AFFINE, np.pad(geometry.indices((40, 40))[8:32, 8:32],
                                           [(0, 0), (0, 0), (0, 1)]))
    error = np.linalg.norm(geometry.apply(found, points) - geometry.apply(truth, points), axis=-1)
    assert error.mean() < 1.0, error.mean()  # mm, over the scan's centre
    assert scores["affine"] > scores["none"] + 0.05, scores


def run_register(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "vxm_tf.register", *args],
                          capture_output=True, text=True, env=env, timeout=600)


ERROR_CASES = [
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
                      f"--fixed={p}/fixed.nii.gz"], "--moved is required with --moving"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--moving_list={t}/list.txt", f"--fixed={p}/fixed.nii.gz",
                      f"--out_dir={t}"], "Exactly one of (moving, moving_list)"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}/w.mgz"], "w.mgz: displacement fields are written as NIfTI"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}/out.nii.gz"], "out.nii.gz: the same file is given twice"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      "--instance_steps=-1"], "--instance_steps must be a non-negative"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      "--instance_steps=2", f"--instance_settings={t}/absent.json"],
     "absent.json: cannot read instance settings"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      "--instance_steps=2", f"--instance_settings={t}/settings.json",
                      "--instance_lr=2"],
     "--instance_settings replaces --instance_lr: give one or the other"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/vol3d.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/vol3d.nii.gz"],
     "vol3d.nii.gz: the same file is given twice"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/blank.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz"],
     "blank.nii.gz: a blank image (every voxel is 0)"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={t}/raw.nii.gz", f"--moved={t}/out.nii.gz",
                      "--normalise=none"],
     "raw.nii.gz: intensities 0..4095, but models train and register on [0, 1]"),
    # --moving_list names each scan's outputs itself: single-scan outputs are refused
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving_list={t}/notes.keras",
                      f"--fixed={p}/fixed.nii.gz", f"--out_dir={t}",
                      f"--warp={t}/w.nii.gz", f"--moved_seg={t}/s.nii.gz"],
     "--warp, --moved_seg belong to one --moving scan"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}"], "a folder stands there"),
    # every output is checked against every input, under any name (a hard link too)
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/own_moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--inverse_warp={t}/own_moving.nii.gz"],
     "own_moving.nii.gz: the same file is given twice"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/link.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--warp={t}/own_moving.nii.gz"],
     "own_moving.nii.gz: the same file is given twice"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={p}/moving.nii.gz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz",
                      f"--affine_out={t}/matrix.nii.gz"],
     "matrix.nii.gz: a text file (a 4x4 matrix), not an image"),
    (lambda r, p, t: [f"--model={r}/best.keras", f"--moving={t}/bare.npz",
                      f"--fixed={p}/fixed.nii.gz", f"--moved={t}/out.nii.gz", "--affine=none"],
     "bare.npz: an npz without an `affine` array has no place in world space"),
]


@pytest.fixture(scope="module")
def error_runs(trained_run, pair, tmp_path_factory):
    """Every case of ERROR_CASES through `register`'s command line, in one process
    (tests/cli_batch.py), each in its own folder: [(folder, result)]."""
    folders = []
    for n in range(len(ERROR_CASES)):
        folder = tmp_path_factory.mktemp(f"case{n}")
        (folder / "notes.keras").write_text("not a model")
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)),
                 str(folder / "vol3d.nii.gz"))
        nib.save(nib.Nifti1Image(np.zeros((40, 40), np.float32), np.eye(4)),
                 str(folder / "blank.nii.gz"))
        raw = np.random.default_rng(0).integers(0, 4096, (40, 40)).astype(np.int16)
        raw[0, 0], raw[0, 1] = 0, 4095
        nib.save(nib.Nifti1Image(raw, np.eye(4)), str(folder / "raw.nii.gz"))
        instance.save_settings(folder / "settings.json", instance.InstanceConfig())
        shutil.copyfile(pair / "moving.nii.gz", folder / "own_moving.nii.gz")
        os.link(folder / "own_moving.nii.gz", folder / "link.nii.gz")
        np.savez(folder / "bare.npz", vol=np.asarray(
            nib.load(pair / "moving.nii.gz").dataobj, np.float32)[..., 0])
        folders.append(folder)
    runs = [make_args(trained_run, pair, folder)
            for (make_args, _), folder in zip(ERROR_CASES, folders)]
    results = cli_batch.run("vxm_tf.commands.register", runs)
    return list(zip(folders, results))


@pytest.mark.parametrize("case", range(len(ERROR_CASES)))
def test_register_errors_are_one_line_and_write_nothing(error_runs, case):
    folder, result = error_runs[case]
    assert result["code"] == 2 and len(result["lines"]) == 1, result["stderr"][-2000:]
    assert ERROR_CASES[case][1] in result["lines"][0]
    assert not (folder / "out.nii.gz").exists()
    assert nib.load(folder / "own_moving.nii.gz").shape == (40, 40, 1)  # as it was


def test_one_bad_case_through_the_real_command_line(tmp_path):
    """The batch runner's results are what a real `python -m vxm_tf.register` gives."""
    run = run_register([f"--model={tmp_path}/absent.keras", "--moving=a.nii.gz",
                        "--fixed=b.nii.gz", f"--moved={tmp_path}/out.nii.gz"])
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and "absent.keras: no such file" in lines[0]


def test_outputs_get_the_umasks_permissions(trained_run, pair, tmp_path):
    old = os.umask(0o027)
    try:
        workflows.register_files(str(trained_run / "best.keras"), str(pair / "moving.nii.gz"),
                                str(pair / "fixed.nii.gz"), str(tmp_path / "moved.nii.gz"),
                                str(tmp_path / "w.npz"))
    finally:
        os.umask(old)
    for name in ("moved.nii.gz", "w.npz"):  # not the temporary file's 0600
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_moving_list_registers_each_scan_and_skips_a_bad_one(trained_run, pair, tmp_path):
    """One process, the model loaded once: good scans get their outputs, a blank scan is
    reported and skipped, the exit status says that one failed."""
    out = tmp_path / "out"
    out.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((40, 40), np.float32), AFFINE),
             str(tmp_path / "blank.nii.gz"))
    (tmp_path / "list.txt").write_text(
        f"{pair}/moving.nii.gz {pair}/moving_seg.nii.gz\n# a comment\n"
        f"{tmp_path}/blank.nii.gz\n{pair}/fixed.nii.gz\n")
    run = run_register([f"--model={trained_run}/best.keras", f"--moving_list={tmp_path}/list.txt",
                        f"--fixed={pair}/fixed.nii.gz", f"--out_dir={out}"])
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert errors == [f"error: 1 scan(s) of {tmp_path}/list.txt failed: blank"], errors
    assert "blank: skipped" in run.stdout and "a blank image" in run.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "fixed_affine.txt", "fixed_moved.nii.gz", "fixed_warp.nii.gz", "moving_affine.txt",
        "moving_moved.nii.gz", "moving_moved_seg.nii.gz", "moving_warp.nii.gz"]
    # each scan's result is what registering it alone gives
    workflows.register_files(str(trained_run / "best.keras"), str(pair / "moving.nii.gz"),
                            str(pair / "fixed.nii.gz"), str(tmp_path / "alone.nii.gz"))
    np.testing.assert_allclose(np.asarray(nib.load(str(out / "moving_moved.nii.gz")).dataobj),
                               np.asarray(nib.load(str(tmp_path / "alone.nii.gz")).dataobj),
                               atol=1e-4)


def test_moving_list_refuses_outputs_that_would_replace_a_listed_input(tmp_path):
    """Outputs into the scans' own folder: `q`'s moved image is `q_moved.nii.gz`, which is
    the list's next scan; refused before the model is read, nothing written."""
    for name in ("q.nii.gz", "q_moved.nii.gz", "fixed.nii.gz"):
        (tmp_path / name).write_text("an input")
    (tmp_path / "list.txt").write_text(f"{tmp_path}/q.nii.gz\n{tmp_path}/q_moved.nii.gz\n")
    with pytest.raises(ValueError, match=r"q_moved.nii.gz would overwrite the input "):
        workflows.register_list(str(tmp_path / "absent.keras"), str(tmp_path / "list.txt"),
                                str(tmp_path / "fixed.nii.gz"), str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "fixed.nii.gz", "list.txt", "q.nii.gz", "q_moved.nii.gz"]
    assert (tmp_path / "q_moved.nii.gz").read_text() == "an input"


def test_moving_list_refuses_colliding_names_and_missing_files_before_any_work(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "scan.nii.gz").write_text("a scan")
    (tmp_path / "list.txt").write_text(f"{tmp_path}/a/scan.nii.gz\n{tmp_path}/b/scan.nii.gz\n")
    with pytest.raises(ValueError, match="list.txt:2: .*b/scan.nii.gz has the same name as "
                                         "line 1"):
        workflows.read_moving_list(str(tmp_path / "list.txt"))
    # a missing scan or seg is known before the first scan is registered (line numbers
    # count comments and blank lines)
    (tmp_path / "list.txt").write_text(f"# scans\n\n{tmp_path}/a/scan.nii.gz "
                                       f"{tmp_path}/a/seg.nii.gz\n")
    with pytest.raises(ValueError, match=r"list.txt:3: .*a/seg.nii.gz: no such file"):
        workflows.read_moving_list(str(tmp_path / "list.txt"))


def test_inverse_warp_maps_fixed_space_images_onto_the_moving_scan(trained_run, pair,
                                                                   tmp_path):
    """--inverse_warp (negated velocity, inverse affine) brings the fixed labels onto the
    moving scan's grid, and undoes the forward map: forward(inverse(u)) ~ u."""
    workflows.register_files(
        str(trained_run / "best.keras"), str(pair / "moving.nii.gz"), str(pair / "fixed.nii.gz"),
        str(tmp_path / "moved.nii.gz"), str(tmp_path / "w.nii.gz"),
        inverse_path=str(tmp_path / "inv.nii.gz"))
    workflows.warp_file(str(pair / "fixed_seg.nii.gz"), str(tmp_path / "inv.nii.gz"),
                   str(tmp_path / "back_seg.nii.gz"), interp="nearest")
    fixed_seg = np.asarray(nib.load(str(pair / "fixed_seg.nii.gz")).dataobj)[..., 0]
    moving_seg = np.asarray(nib.load(str(pair / "moving_seg.nii.gz")).dataobj)[..., 0]
    back = np.asarray(nib.load(str(tmp_path / "back_seg.nii.gz")).dataobj)
    assert back.shape == moving_seg.shape
    assert metrics.mean_dice(back, moving_seg) > metrics.mean_dice(fixed_seg, moving_seg) + 0.02
    forward, backward = (io.load_displacement(tmp_path / n) for n in ("w.nii.gz", "inv.nii.gz"))
    # a moving voxel -> its fixed point (inverse) -> back into the moving scan (forward)
    to_fixed = geometry.moving_coordinates(backward.data[:, :, 0], backward.affine,
                                           forward.affine, 2)
    fields = [ndimage.map_coordinates(forward.data[:, :, 0, c], np.moveaxis(to_fixed, -1, 0),
                                      order=1, mode="nearest") for c in range(3)]
    fixed_world = geometry.apply(forward.affine, np.pad(to_fixed, [(0, 0), (0, 0), (0, 1)]))
    round_trip = fixed_world + np.stack(fields, -1)
    start = geometry.apply(backward.affine, np.pad(geometry.indices((40, 40)),
                                                   [(0, 0), (0, 0), (0, 1)]))
    error = np.linalg.norm(round_trip - start, axis=-1)[6:34, 6:34]  # mm, away from borders
    assert np.median(error) < 0.3 and error.mean() < 0.6, (np.median(error), error.mean())
    moved_size = np.abs(backward.data).max()
    assert moved_size > 1.0  # the maps are not trivially the identity


def test_the_composed_transform_is_the_affine_then_the_deformation(trained_run, pair):
    """One interpolation of the moving scan through the composed map equals (up to the
    second interpolation's blur) resampling it by the pre-alignment onto the model grid
    and then warping that by the network's field, as two separate steps would."""
    model = networks.VxmDense.load(str(trained_run / "best.keras"))
    moving, fixed = (io.load_volume(pair / f"{n}.nii.gz") for n in ("moving", "fixed"))
    rotated = AFFINE.copy()
    rotated[:3, :2] = AFFINE[:3, :2] @ np.array([[np.cos(0.15), -np.sin(0.15)],
                                                 [np.sin(0.15), np.cos(0.15)]])
    moving = io.Volume(ndimage.gaussian_filter(moving.data, 1.5), rotated)
    fixed = io.Volume(ndimage.gaussian_filter(fixed.data, 1.5), fixed.affine)
    result = registration.register_volumes(model, moving, fixed, affine.AffineConfig("rigid"))
    once = geometry.sample(moving.data, result.coords, 1)
    # two steps: the pre-alignment alone onto the model grid (32 x 32 over the fixed box)...
    model_affine = geometry.grid_affine(fixed.affine, (40, 40), (32, 32))
    to_moving = geometry.voxel_map(result.matrix @ model_affine,
                                   moving.affine, 2)
    small = geometry.sample(moving.data, geometry.apply(to_moving, geometry.indices((32, 32))),
                            1)
    small_fixed = data.resize_volume(fixed.data, (32, 32))
    # ...then the network's field, then back onto the fixed grid
    field = model.register(small[None, ..., None], small_fixed[None, ..., None])[0]
    warped = geometry.warp(small, field, 1)
    model_coords = geometry.apply(geometry.voxel_map(fixed.affine, model_affine, 2),
                                  geometry.indices((40, 40)))
    twice = geometry.sample(warped, model_coords, 1, cval=None)
    inside = ndimage.binary_erosion(fixed.data > 0.2, iterations=3)
    assert inside.sum() > 100
    difference = np.abs(once - twice)[inside]
    assert difference.mean() < 0.02, difference.mean()
    assert np.abs(once - fixed.data)[inside].mean() < np.abs(
        geometry.sample(moving.data, geometry.apply(geometry.voxel_map(
            fixed.affine, moving.affine, 2), geometry.indices((40, 40))), 1)
        - fixed.data)[inside].mean()  # and the composed map does register


def test_auto_normalisation_treats_the_two_scans_alike():
    """A raw moving scan beside a fixed scan in [0, 0.6]: both are min-max scaled (the raw
    one alone was, leaving the pair at different brightness), and the sentence says so."""
    from vxm_tf.data.volumes import normalise_pair

    rng = np.random.default_rng(0)
    fixed = rng.random((8, 8)).astype(np.float32) * 0.6
    raw = fixed * 4095 / 0.6 + 100
    moving, fixed_out, said = normalise_pair(raw, fixed, "auto")
    np.testing.assert_allclose(moving, fixed_out, atol=1e-5)  # the same scan, alike
    assert "both scaled to [0, 1] (minmax)" in said
    assert said.startswith("intensities moving 111.2..4184, fixed 0.001643..0.5983")
    kept_m, kept_f, said = normalise_pair(fixed, fixed * 0.5, "auto")
    np.testing.assert_array_equal(kept_f, fixed * 0.5)
    assert "kept as they are" in said


def test_auto_normalisation_keeps_scans_already_in_the_unit_range():
    """neurite-OASIS scans end near 0.8: stretching them to 1 costs the authors' model Dice
    (0.760 -> 0.735 on the real pair), so `auto` leaves [0, 1] images as they are and
    min-max scales the rest (raw scanner values)."""
    from vxm_tf.data.volumes import normalise_image

    image = np.random.default_rng(0).random((8, 8)).astype(np.float32) * 0.8
    np.testing.assert_array_equal(normalise_image(image, "auto"), image)
    raw = image * 4095 + 100
    np.testing.assert_allclose(normalise_image(raw, "auto"), normalise_image(raw, "minmax"))
    assert normalise_image(raw, "auto").max() == pytest.approx(1.0)


def test_warp_never_writes_over_its_inputs(tmp_path):
    """`--moved` naming `--moving` or `--warp` is refused before anything is written."""
    from vxm_tf import io, workflows

    affine = np.eye(4)
    io.save_volume(tmp_path / "m.nii.gz", np.random.default_rng(0).random((8, 8, 8)), affine)
    io.save_displacement(tmp_path / "w.nii.gz", np.zeros((8, 8, 8, 3), np.float32), affine)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    for target in ("m.nii.gz", "w.nii.gz", "./w.nii.gz"):
        with pytest.raises(ValueError, match="would overwrite the input"):
            workflows.warp_file(str(tmp_path / "m.nii.gz"), str(tmp_path / "w.nii.gz"),
                           str(tmp_path / target))
    with pytest.raises(ValueError, match="unknown file type"):
        workflows.warp_file(str(tmp_path / "m.nii.gz"), str(tmp_path / "w.nii.gz"),
                       str(tmp_path / "out.txt"))
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before
    workflows.warp_file(str(tmp_path / "m.nii.gz"), str(tmp_path / "w.nii.gz"),
                   str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(io.load_volume(tmp_path / "out.nii.gz").data,
                               io.load_volume(tmp_path / "m.nii.gz").data, atol=1e-5)


def test_output_folder_checks(tmp_path):
    from vxm_tf import files

    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="--out_dir=.*a_file: a file, not a folder"):
        files.check_output_folder(tmp_path / "a_file")
    with pytest.raises(ValueError, match="parent folder .* does not exist"):
        files.check_output_folder(tmp_path / "no" / "such")
    files.check_output_folder(tmp_path / "new")
    files.check_output_folder(tmp_path)


def test_a_label_map_is_not_blended_by_default(tmp_path):
    """vxm-warp's default linear interpolation refuses a label map (an integer image of
    few values: it wrote float32 with thousands of new values); nearest keeps the labels."""
    from vxm_tf import io, workflows

    affine = np.eye(4)
    labels = np.random.default_rng(0).integers(0, 5, (8, 8, 8)).astype(np.uint8)
    io.save_volume(tmp_path / "seg.nii.gz", labels, affine)
    shift = np.full((8, 8, 8, 3), 0.4, np.float32)
    io.save_displacement(tmp_path / "w.nii.gz", shift, affine)
    args = (str(tmp_path / "seg.nii.gz"), str(tmp_path / "w.nii.gz"))
    with pytest.raises(ValueError, match="looks like a label map .*--interp=nearest"):
        workflows.warp_file(*args, str(tmp_path / "a.nii.gz"))
    assert not (tmp_path / "a.nii.gz").exists()
    workflows.warp_file(*args, str(tmp_path / "b.nii.gz"), "nearest")
    assert set(np.unique(io.load_volume(tmp_path / "b.nii.gz", labels=True).data)) <= set(
        range(5))
    workflows.warp_file(*args, str(tmp_path / "c.nii.gz"), "linear")  # asked for: done


def test_register_writes_all_its_outputs_or_none(trained_run, pair, tmp_path, monkeypatch):
    """A failure on a later output (a full disk on --warp) leaves none of the earlier ones
    (the moved image stayed, half of the promised outputs)."""
    from vxm_tf import io

    def full_disk(path, *args, **kwargs):
        raise OSError(f"{path}: cannot write (No space left on device)")
    monkeypatch.setattr(io, "save_displacement", full_disk)
    with pytest.raises(OSError, match="warp.nii.gz: cannot write"):
        workflows.register_files(str(trained_run / "best.keras"), str(pair / "moving.nii.gz"),
                                str(pair / "fixed.nii.gz"), str(tmp_path / "moved.nii.gz"),
                                str(tmp_path / "warp.nii.gz"), affine_config=None)
    assert list(tmp_path.iterdir()) == []


def test_an_image_without_background_is_warned_about(trained_run, pair, tmp_path):
    """Random noise is no skull-stripped scan: registering it says so; a synthetic
    subject on its dark background does not."""
    noise = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    nib.save(nib.Nifti1Image(noise, AFFINE), str(tmp_path / "noise.nii.gz"))
    said = []
    workflows.register_files(str(trained_run / "best.keras"), str(tmp_path / "noise.nii.gz"),
                            str(pair / "fixed.nii.gz"), str(tmp_path / "moved.nii.gz"),
                            log=said.append)
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 1 and "noise.nii.gz: only 5% of its voxels" in warnings[0]
    said.clear()
    workflows.register_files(str(trained_run / "best.keras"), str(pair / "moving.nii.gz"),
                            str(pair / "fixed.nii.gz"), str(tmp_path / "moved2.nii.gz"),
                            log=said.append)
    assert not [line for line in said if line.startswith("warning:")]
    assert workflows.background_fraction(np.zeros((4, 4))) == 1.0
    said.clear()  # a label map given as the image: registered, with a warning
    workflows.register_files(str(trained_run / "best.keras"), str(pair / "moving_seg.nii.gz"),
                             str(pair / "fixed.nii.gz"), str(tmp_path / "moved3.nii.gz"),
                             log=said.append)
    assert [line for line in said if "looks like a label map (5 integer values)" in line]

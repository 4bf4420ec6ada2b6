"""Evaluation library and entry point on tiny synthetic data."""

import json
import os
import subprocess
import sys

import cli_batch
import numpy as np
import pytest

from vxm_tf import data, evaluation, networks, registration

SMALL = [[8, 8, 8], [8, 8, 8, 8, 8]]


def test_identity_model_scores_the_same_before_and_after(tmp_path):
    volumes = data.synthetic_volumes(3, (32, 32), nb_labels=4)
    model = networks.VxmDense((32, 32), nb_unet_features=SMALL)
    model.get_layer("vxm_dense_flow").set_weights(
        [np.zeros_like(w) for w in model.get_layer("vxm_dense_flow").get_weights()])
    pairs, labels = evaluation.evaluate_pairs(model, volumes, data.all_pairs(3))
    assert len(pairs) == 6 and len(labels) == 6 * 4
    for row in pairs:
        assert row["dice_after"] == row["dice_before"] < 1
        assert row["hd95_after"] == row["hd95_before"] > 0
        assert row["folding_percent"] == 0 and row["seconds"] > 0
    summary = evaluation.summarise(pairs, labels)
    assert summary["pairs"] == 6 and set(summary["labels"]) == {"1", "2", "3", "4"}
    evaluation.write_report(tmp_path / "report", pairs, labels, summary)
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == [
        "per_label.csv", "per_pair.csv", "summary.json", "summary.md"]
    assert "| Dice |" in (tmp_path / "report" / "summary.md").read_text()


def test_report_into_a_missing_folder_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluation.write_report(tmp_path / "a" / "b", [], [], {})
    assert list(tmp_path.iterdir()) == []


def run_evaluate(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "vxm_tf.evaluate", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_evaluate_reads_the_run_config_and_writes_the_report(trained_run):
    run = run_evaluate([f"--model={trained_run}/best.keras"])
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((trained_run / "eval-test" / "summary.json").read_text())
    assert summary["pairs"] == 6
    assert "Dice" in run.stdout.splitlines()[-1]


EVALUATE_ERRORS = [
    (lambda d, t: [f"--model={t}/notes.keras"], "notes.keras"),
    (lambda d, t: [f"--model={d}/best.keras", "--synthetic_shape=16,16,16"],
     "the model registers 2D images, the data are 3D (16, 16, 16)"),
    (lambda d, t: [f"--model={d}/best.keras", "--synthetic_shape=16,16"],
     "the model takes 2D images of shape (32, 32), the data are (16, 16)"),
    (lambda d, t: [f"--model={d}/best.keras", "--test=1"],
     "--test=1: scoring needs pairs, so at least 2 subjects"),
    (lambda d, t: [f"--model={d}/best.keras", f"--out_dir={t}/missing/report"],
     "does not exist"),
    (lambda d, t: [], "Flag --model must have a value"),
    # refused before any pair is registered (no traceback, no work lost)
    (lambda d, t: [f"--model={d}/best.keras", f"--out_dir={t}/notes.keras"],
     "a file, not a folder"),
    (lambda d, t: [f"--model={d}/best.keras", "--figures=-3"], "--figures must be 0 or more"),
    (lambda d, t: [f"--model={d}/best.keras", f"--pairs={t}/empty.txt",
                   f"--out_dir={t}/empty_pairs"], "no pairs listed"),
]


def test_evaluate_errors_are_one_line(trained_run, tmp_path):
    (tmp_path / "notes.keras").write_text("not a model")
    (tmp_path / "empty.txt").write_text("# no pairs\n")
    results = cli_batch.run("vxm_tf.commands.evaluate", [make_args(trained_run, tmp_path)
                                                for make_args, _ in EVALUATE_ERRORS])
    for (_, message), result in zip(EVALUATE_ERRORS, results):
        assert result["code"] == 2 and len(result["lines"]) == 1, result["stderr"][-2000:]
        assert message in result["lines"][0]
    assert not (tmp_path / "missing").exists() and not (tmp_path / "empty_pairs").exists()


def test_perturbation_moves_only_the_registered_result(trained_run, tmp_path):
    model, quick = f"--model={trained_run}/best.keras", ["--figures=0", "--surface=false"]
    clean, bright, bad = cli_batch.run("vxm_tf.commands.evaluate", [
        [model, f"--out_dir={tmp_path}/a", *quick],
        [model, f"--out_dir={tmp_path}/b", *quick, "--perturb=gamma:1,bias:1"],
        [model, "--perturb=contrast:1"]])
    assert clean["code"] == bright["code"] == 0, bright["stderr"][-2000:]
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["dice_before"] == b["dice_before"]
    assert a["dice_after"] != b["dice_after"]
    assert bad["code"] == 2 and len(bad["lines"]) == 1
    assert "unknown perturbation" in bad["lines"][0]


def test_label_metrics_need_segmentations():
    volumes = data.synthetic_volumes(2, (32, 32), nb_labels=4)
    volumes.segs = None
    model = networks.VxmDense((32, 32), nb_unet_features=SMALL)
    with pytest.raises(ValueError, match="evaluation needs segmentations"):
        evaluation.evaluate_pairs(model, volumes, [(0, 1)])


def test_model_specs_are_name_equals_path(tmp_path):
    with pytest.raises(ValueError, match="NAME=PATH"):
        evaluation.models_and_test_pairs(["runs/x/best.keras"])
    with pytest.raises(ValueError, match="no config.json beside it"):
        evaluation.models_and_test_pairs([f"A={tmp_path}/best.keras"])


def test_a_structure_on_one_side_counts_and_scores_the_image_diagonal(tmp_path):
    volumes = data.synthetic_volumes(2, (32, 40), nb_labels=3)
    volumes.voxel_sizes[:] = (1.0, 2.0)
    volumes.segs[0][volumes.segs[0] == 3] = 0  # the moving subject lost structure 3
    zero = np.zeros((32, 40, 2), np.float32)
    pair, rows = evaluation.score_pair(volumes, 0, 1, zero)
    by_label = {r["label"]: r for r in rows}
    diagonal = float(np.hypot(32 * 1.0, 40 * 2.0))
    assert by_label[3]["hd95_after"] == by_label[3]["hd95_before"] == pytest.approx(diagonal)
    assert pair["missing_before"] == pair["missing_after"] == 1
    others = np.mean([by_label[k]["hd95_after"] for k in (1, 2)])
    assert pair["hd95_after"] == pytest.approx((others * 2 + diagonal) / 3)  # not dropped

    pairs, labels = [], []
    for surface in (True, False):
        pair, rows = evaluation.score_pair(volumes, 1, 0, zero, surface=surface)
        pairs.append({**pair, "seconds": 0.1})
        labels += rows
    summary = evaluation.summarise(pairs[1:], labels[len(labels) // 2:])
    evaluation.write_report(tmp_path / "r", pairs[1:], labels[len(labels) // 2:], summary)
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["hd95_after"] is None and saved["labels"]["1"]["hd95_after"] is None
    assert "NaN" not in (tmp_path / "r" / "summary.json").read_text()


def test_images_of_another_size_are_registered_through_a_resize():
    """A model of one size scores volumes of another: a translation on the model's grid
    comes back as the same translation in the volumes' voxels (per axis)."""
    model = networks.VxmDense((16, 24), nb_unet_features=SMALL)
    flow = model.get_layer("vxm_dense_flow")
    kernel, bias = flow.get_weights()
    flow.set_weights([np.zeros_like(kernel), np.array([0.5, -0.25], "float32")])
    volumes = data.synthetic_volumes(2, (32, 18), nb_labels=3)
    small = np.zeros((1, 16, 24, 1), "float32")
    on_grid = model.register(small, small)[0]
    assert np.ptp(on_grid, axis=(0, 1)).max() < 1e-5 and np.abs(on_grid).min() > 0.1
    warp = registration.displacements(model, volumes.images[:1, ..., None],
                                      volumes.images[1:, ..., None])
    assert warp.shape == (1, 32, 18, 2)
    np.testing.assert_allclose(warp[0], np.broadcast_to(on_grid[0, 0] * [2, 0.75], warp[0].shape),
                               atol=1e-5)
    pairs, _ = evaluation.evaluate_pairs(model, volumes, [(0, 1)])
    assert pairs[0]["dice_after"] != pairs[0]["dice_before"]


def test_evaluate_model_checks_everything_before_the_model_then_writes_the_report(
        trained_run, tmp_path):
    """The command as a function: a bad figure count, output folder or perturbation is
    refused before the model is even read (here a model that does not exist), then a
    direct call scores the run's test pairs and writes the whole report."""
    from vxm_tf import configs

    config = configs.run_data_config(trained_run / "best.keras")
    (tmp_path / "a_file").write_text("")
    missing = str(tmp_path / "missing.keras")
    (tmp_path / "reused").mkdir()
    (tmp_path / "reused" / "per_pair.csv").write_text("moving fixed\n")
    for kwargs, message in [({"figure_count": -1}, "--figures must be 0 or more"),
                            ({"out_dir": tmp_path / "a_file"}, "a file, not a folder"),
                            ({"perturbation": "nope:1"}, "nope"),
                            ({"out_dir": tmp_path / "reused",  # its table as the pairs file
                              "pairs_path": str(tmp_path / "reused" / "per_pair.csv")},
                             "per_pair.csv would overwrite the input --pairs")]:
        with pytest.raises(ValueError, match=message):
            evaluation.evaluate_model(missing, config, **{"out_dir": tmp_path / "o", **kwargs})
    assert not (tmp_path / "o").exists()
    summary = evaluation.evaluate_model(str(trained_run / "best.keras"), config,
                                        tmp_path / "direct", surface=False, figure_count=1)
    assert summary["pairs"] == 6 and 0 < summary["dice_after"] <= 1
    assert sorted(p.name for p in (tmp_path / "direct").iterdir()) == [
        "dice_per_structure.png", *sorted(p.name for p in (tmp_path / "direct").glob("pair_*")),
        "per_label.csv", "per_pair.csv", "summary.json", "summary.md"]
    assert len(list((tmp_path / "direct").glob("pair_*.png"))) == 1
    # the same folder again, without examples: the earlier run's example is not left beside
    summary = evaluation.evaluate_model(str(trained_run / "best.keras"), config,
                                        tmp_path / "direct", surface=False, figure_count=0,
                                        perturbation="brightness:0.1")
    assert list((tmp_path / "direct").glob("pair_*.png")) == []
    # what produced the scores is in the report, not only in the folder's name
    assert summary["perturbation"] == "brightness:0.1"
    assert "perturbed (brightness:0.1)" in (tmp_path / "direct" / "summary.md").read_text()
    assert evaluation.default_out_dir("r/best.keras", "test", None, 10, "bias:0.5") == \
        os.path.join("r", "eval-test-instance10-perturbed")
    (tmp_path / "blocked" / "summary.md").mkdir(parents=True)  # found before any pair
    with pytest.raises(ValueError, match="a folder stands where the report's summary.md"):
        evaluation.evaluate_model(missing, config, tmp_path / "blocked")
    with pytest.raises(ValueError, match=r"--perturb=brightness:-1 leaves \d+ moving image\(s\) "
                                         "blank"):  # nothing left to score
        evaluation.evaluate_model(str(trained_run / "best.keras"), config, tmp_path / "b",
                                  perturbation="brightness:-1")
    assert not (tmp_path / "b").exists()


def test_a_pairs_file_lists_each_pair_once_and_no_subject_with_itself(tmp_path):
    volumes = data.synthetic_volumes(3, (8, 8), nb_labels=2)
    a, b, _ = volumes.names
    for lines, message in [(f"{a} {b}\n{b} {a}\n{a} {b}\n", f":3: the pair {a} {b} is "
                                                              "listed twice"),
                           (f"{a} {a}\n", f":1: {a} paired with itself")]:
        (tmp_path / "pairs.txt").write_text(lines)
        with pytest.raises(data.DatasetError, match=message):
            evaluation.read_pairs(tmp_path / "pairs.txt", volumes)
    (tmp_path / "pairs.txt").write_text(f"{a} {b}\n{b} {a}\n")
    assert evaluation.read_pairs(tmp_path / "pairs.txt", volumes) == [(0, 1), (1, 0)]
    (tmp_path / "pairs.txt").write_text(f"# pairs\n\n{a} {b}\n{a} nobody\n")
    with pytest.raises(data.DatasetError, match=":4: expected two subject names"):
        evaluation.read_pairs(tmp_path / "pairs.txt", volumes)  # the file's own line number

"""Keras Tuner lambda sweep: local search, resume, errors, and chief / worker processes."""

import csv
import os
import socket
import subprocess
import sys

import cli_batch
import keras
import numpy as np
import pytest

from vxm_tf import configs, networks, tuning

TINY = ["--dataset=synthetic", "--synthetic_shape=32,32", "--synthetic_labels=4", "--train=6",
        "--val=0", "--test=0", "--enc=8,8,8", "--dec=8,8,8,8,8", "--steps_per_epoch=3",
        "--holdout=2", "--holdout_pairs=2", "--verbose=0"]


def tiny_config():
    config = configs.Config()
    config.data = configs.DataConfig(synthetic_shape=(32, 32), synthetic_labels=4,
                                     train=6, val=0, test=0)
    config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]])
    config.train = configs.TrainConfig(steps_per_epoch=3, verbose=0)
    return config


def run_tune(args, env=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "vxm_tf.tune", *TINY, *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_trials(folder):
    with open(folder / "trials.csv") as f:
        return list(csv.DictReader(f))


def test_grid_search_writes_trials_and_a_best_model_that_registers_then_resumes(tmp_path):
    """The grid spaces lambda evenly on a log axis, both ends included (the default random
    search runs in the chief / worker test)."""
    tune = tuning.TuneConfig(tuner="grid", trials=3, lambda_min=0.01, lambda_max=1.0,
                             holdout=2, holdout_pairs=2, directory=str(tmp_path / "tune"))
    rows = tuning.run_search(tiny_config(), tune, log=lambda _: None)
    np.testing.assert_allclose([r["lambda"] for r in rows], [0.01, 0.1, 1.0], rtol=1e-6)
    assert all(0 < r["val_dice"] <= 1 and r["val_folding"] >= 0 for r in rows)
    assert [float(r["lambda"]) for r in read_trials(tmp_path / "tune")] == [
        r["lambda"] for r in rows]
    assert (tmp_path / "tune" / "lambda_sweep.png").stat().st_size > 0
    best = keras.saving.load_model(tmp_path / "tune" / "best.keras")
    assert isinstance(best, networks.VxmDense)
    pair = np.random.rand(2, 1, 32, 32, 1).astype("float32")
    assert best.register(pair[0], pair[1]).shape == (1, 32, 32, 2)

    trial_dirs = sorted(p.name for p in (tmp_path / "tune" / "trials").iterdir())
    again = tuning.run_search(tiny_config(), tune, log=lambda _: None)
    assert [r["lambda"] for r in again] == [r["lambda"] for r in rows]
    assert sorted(p.name for p in (tmp_path / "tune" / "trials").iterdir()) == trial_dirs
    # the same folder with other settings is refused before any trial (it reported the old
    # trials under the new range and kept the old best model)
    other = tuning.TuneConfig(**{**tune.__dict__, "lambda_max": 10.0})
    with pytest.raises(configs.ConfigError, match=r"other settings \(tune.lambda_max 1.0 -> "
                                                  r"10.0\)"):
        tuning.run_search(tiny_config(), other, log=lambda _: None)
    wider = tiny_config()
    wider.loss = configs.LossConfig(window=5)
    with pytest.raises(configs.ConfigError, match="loss.window 9 -> 5"):
        tuning.run_search(wider, tune, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "tune" / "trials").iterdir()) == trial_dirs


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_other_tuners_and_the_folding_penalty(tmp_path, tuner):
    tune = tuning.TuneConfig(tuner=tuner, trials=2, epochs=2 if tuner == "hyperband" else 1,
                             holdout=2, holdout_pairs=2,
                             objective="dice_minus_folding", folding_weight=0.5,
                             directory=str(tmp_path / tuner))
    rows = tuning.run_search(tiny_config(), tune, log=lambda _: None)
    assert rows and (tmp_path / tuner / "best.keras").exists()
    for row in rows:
        assert row["val_score"] == pytest.approx(row["val_dice"] - 0.5 * row["val_folding"])


def test_holdout_score_subtracts_the_folding_of_a_folding_field():
    from vxm_tf import data, metrics, registration

    model = networks.VxmDense((24, 24), nb_unet_features=[[8, 8], [8, 8, 8]], int_steps=0)
    kernel, bias = model.get_layer("vxm_dense_flow").get_weights()
    model.get_layer("vxm_dense_flow").set_weights([kernel * 3e4, bias])  # a rough field
    volumes = data.synthetic_volumes(3, (24, 24), nb_labels=3, seed=2)
    pairs = [(0, 1), (1, 2)]
    folding = np.mean([metrics.folding_percent(warp) for _, warp, _ in
                       registration.register_pairs(model, volumes, pairs)])
    assert folding > 1  # else the penalty below would be checked against nothing
    scores = {}
    for objective in ("dice", "dice_minus_folding"):
        callback = tuning.HoldoutScores(volumes, pairs, objective, folding_weight=0.5)
        callback.set_model(model)
        callback.on_epoch_end(0, logs := {})
        scores[objective] = logs
    assert scores["dice"]["val_folding"] == pytest.approx(folding)
    assert scores["dice"]["val_score"] == pytest.approx(scores["dice"]["val_dice"])
    assert scores["dice_minus_folding"]["val_score"] == pytest.approx(
        scores["dice"]["val_dice"] - 0.5 * folding)


TUNE_ERRORS = [
    (["--lambda_min=-1"], "0 < min <= max, got -1.0 and 10.0"),
    (["--lambda_min=5", "--lambda_max=1"], "0 < min <= max, got 5.0 and 1.0"),
    (["--tuner=sobol"], "sobol"),
    (["--aug_clean_targets"], "--aug_clean_targets is for training runs"),
]


def test_bad_search_flags_are_one_line(tmp_path):
    results = cli_batch.run("vxm_tf.commands.tune", [[*args, f"--tune_dir={tmp_path}/t"]
                                            for args, _ in TUNE_ERRORS])
    for (_, message), result in zip(TUNE_ERRORS, results):
        assert result["code"] == 2 and len(result["lines"]) == 1, result["stderr"][-2000:]
        assert message in result["lines"][0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_chief_and_two_workers_run_every_trial_once(tmp_path):
    folder = tmp_path / "tune"
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    args = ["--trials=3", f"--tune_dir={folder}"]
    chief = run_tune(args, {**env, "KERASTUNER_TUNER_ID": "chief"})
    workers = [run_tune(args, {**env, "KERASTUNER_TUNER_ID": f"tuner{k}"}) for k in (0, 1)]
    for worker in workers:
        _, err = worker.communicate(timeout=500)
        assert worker.returncode == 0, err[-2000:]
    _, err = chief.communicate(timeout=200)
    assert chief.returncode == 0, err[-2000:]
    trials = read_trials(folder)
    assert sorted(int(t["trial"]) for t in trials) == [0, 1, 2]
    assert len({t["lambda"] for t in trials}) == 3
    assert (folder / "best.keras").exists()

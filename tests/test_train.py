"""Training end to end on tiny synthetic data; flags, resume, NaN, precision, strategy."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cli_batch
import keras
import numpy as np
import pytest

from vxm_tf import configs, data, experiment, losses, networks, trainer, views
from vxm_tf.training import callbacks, devices

TINY = ["--dataset=synthetic", "--synthetic_shape=32,32", "--synthetic_labels=4",
        "--train=4", "--val=3", "--test=2", "--enc=8,8,8", "--dec=8,8,8,8,8",
        "--steps_per_epoch=4", "--val_pairs=3", "--verbose=0"]


def tiny_config(tmp_path, **train):
    config = configs.Config()
    config.data = configs.DataConfig(dataset="synthetic", synthetic_shape=(32, 32),
                                     synthetic_labels=4, train=4, val=3, test=2)
    config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]])
    defaults = dict(epochs=1, steps_per_epoch=4, val_pairs=3, verbose=0,
                    model_dir=str(tmp_path / "run"))
    config.train = configs.TrainConfig(**{**defaults, **train})
    return config


def run_train(args, **kwargs):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "vxm_tf.train", *args], capture_output=True,
                          text=True, env=env, timeout=600, **kwargs)


def history_epochs(run_dir):
    with open(Path(run_dir) / "history.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_one_epoch_writes_a_complete_run_directory(tmp_path):
    result = trainer.train_and_evaluate(tiny_config(tmp_path, epochs=2), log=lambda _: None)
    run = Path(result["run_dir"])
    for name in ("best.keras", "last.keras", "model.keras", "config.json", "versions.json",
                 "state.json", "history.csv"):
        assert (run / name).exists(), name
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    assert history_epochs(run) == [0, 1]
    timing = json.loads((run / "timing.json").read_text())
    assert len(timing["epoch_seconds"]) == 2 and timing["seconds_per_step"] > 0
    assert timing["device"] == f"{devices.cpu_model()}, {os.cpu_count()} CPU cores"  # no GPU
    assert any((run / "tensorboard").rglob("*tfevents*"))
    assert 0 < result["history"]["val_dice"][-1] <= 1
    best = networks.VxmDense.load(Path(run) / "best.keras")
    moving = result["splits"]["test"].images[:1, ..., None]
    assert best.register(moving, moving).shape == (1, 32, 32, 2)


def test_clean_target_training_saves_a_plain_registration_model(tmp_path):
    config = tiny_config(tmp_path, epochs=2)
    config.data.augmentation = experiment.data.Augmentation(
        intensity_scale=0.4, gamma=0.7, bias=0.5, clean_targets=True)
    result = trainer.train_and_evaluate(config, log=lambda _: None)
    assert np.isfinite(result["history"]["loss"]).all()
    assert "vxm_dense_transformer_loss" in result["history"]
    assert 0 < result["history"]["val_dice"][-1] <= 1
    best = networks.VxmDense.load(Path(result["run_dir"]) / "best.keras")
    assert type(best).__name__ == "VxmDense"
    last = networks.VxmDense.load(Path(result["run_dir"]) / "last.keras")  # after the final epoch
    moving = result["splits"]["test"].images[:1, ..., None]
    np.testing.assert_allclose(last.register(moving, moving),
                               result["model"].register(moving, moving), atol=1e-6)


def test_seg_supervised_view_warps_the_one_hot_moving_labels_by_the_models_field():
    from vxm_tf import networks, ops

    model = networks.VxmDense((24, 24), nb_unet_features=[[8, 8], [8, 8, 8]])
    kernel, bias = model.get_layer("vxm_dense_flow").get_weights()
    model.get_layer("vxm_dense_flow").set_weights([kernel * 3e4, bias])  # a real field
    view = views.seg_training_model(model, [2, 1])
    assert view.output_names == ["vxm_dense_transformer", "vxm_dense_flow_resize",
                                 "vxm_dense_seg_transformer"]
    rng = np.random.default_rng(0)
    moving, fixed = (rng.random((1, 24, 24, 1), dtype=np.float32) for _ in range(2))
    seg = rng.integers(0, 3, (1, 24, 24, 1)).astype(np.int32)
    moved, _, moved_seg = view.predict_on_batch([moving, fixed, seg])
    warp = model.register(moving, fixed)
    assert np.abs(warp).max() > 0.5
    onehot = np.eye(3, dtype=np.float32)[seg[..., 0]][..., [2, 1]]
    expected = keras.ops.convert_to_numpy(ops.transform(onehot, warp, "linear"))
    np.testing.assert_allclose(moved_seg, expected, atol=1e-5)
    np.testing.assert_allclose(moved, model.predict_on_batch([moving, fixed])[0], atol=1e-6)
    with pytest.raises(ValueError, match="unidirectional"):
        views.seg_training_model(networks.VxmDense((16, 16), bidir=True), [1])

    # at half resolution: pooled one-hot maps (partial volumes) warped by the halved field
    half = views.seg_training_model(model, [2, 1], resolution=2)
    moved_half = half.predict_on_batch([moving, fixed, seg])[2]
    pooled = onehot.reshape(1, 12, 2, 12, 2, 2).mean(axis=(2, 4))
    field = keras.ops.convert_to_numpy(ops.rescale_dense_transform(warp, 0.5))
    np.testing.assert_allclose(moved_half, keras.ops.convert_to_numpy(
        ops.transform(pooled, field, "linear")), atol=1e-5)
    # and the loss pools the fixed labels alike
    assert float(losses.Dice([2, 1], resolution=2)(seg, moved_half)) == pytest.approx(
        float(losses.Dice()(pooled, moved_half)), abs=1e-6)
    with pytest.raises(ValueError, match="must divide the image shape"):
        views.seg_training_model(model, [2, 1], resolution=5)


def test_seg_supervised_training_lowers_the_dice_loss_and_fine_tunes_from_a_model(tmp_path):
    config = tiny_config(tmp_path, epochs=3, steps_per_epoch=12, lr=3e-3)
    config.loss = configs.LossConfig(seg_weight=1.0)
    result = trainer.train_and_evaluate(config, log=lambda _: None)
    dice_loss = result["history"]["vxm_dense_seg_transformer_loss"]
    assert dice_loss[-1] < dice_loss[0] < 0  # the Dice term trains the network
    assert "val_vxm_dense_seg_transformer_loss" in result["history"]
    best = networks.VxmDense.load(Path(result["run_dir"]) / "best.keras")
    assert type(best).__name__ == "VxmDense" and len(best.inputs) == 2

    again = tiny_config(tmp_path / "b", epochs=1, steps_per_epoch=1, lr=1e-12,
                        init_model=str(Path(result["run_dir"]) / "model.keras"))
    started = trainer.train_and_evaluate(again, log=lambda _: None)["model"]
    moving, fixed = (result["splits"]["test"].images[k:k + 1, ..., None] for k in (0, 1))
    np.testing.assert_allclose(started.register(moving, fixed),
                               result["model"].register(moving, fixed), atol=1e-4)


def test_a_run_from_init_model_keeps_its_architecture_in_losses_and_config(tmp_path,
                                                                          monkeypatch):
    """Contradicting model flags are named and ignored; Grad's multiplier, the memory check
    and config.json are the start model's (int_resolution 1, not the flags' 2; its widths),
    and the run resumes."""
    features = [[8, 8, 8], [8, 8, 8, 16, 16]]
    start = networks.VxmDense((32, 32), nb_unet_features=features, int_steps=3,
                              int_resolution=1)
    networks.save_model(start, tmp_path / "start.keras")
    config = tiny_config(tmp_path, steps_per_epoch=1, init_model=str(tmp_path / "start.keras"))
    config.model.int_steps = 5
    checked = []
    monkeypatch.setattr(trainer, "check_memory",
                        lambda shape, c: checked.append(c.model.nb_features))
    lines = []
    result = trainer.train_and_evaluate(config, log=lines.append)
    assert any("architecture; ignoring --enc/--dec=" in line
               and line.endswith(" --int_steps=5") for line in lines), lines
    assert checked == [features]
    recorded = json.loads((Path(result["run_dir"]) / "config.json").read_text())["model"]
    assert (recorded["int_steps"], recorded["int_resolution"]) == (3, 1)
    assert recorded["nb_features"] == features
    assert [loss.loss_mult for loss in result["model"].loss
            if isinstance(loss, losses.Grad)] == [1]
    config.train.epochs, config.train.resume = 2, True
    resumed = trainer.train_and_evaluate(config, log=lines.append)
    assert history_epochs(resumed["run_dir"]) == [0, 1]
    assert [loss.loss_mult for loss in resumed["model"].loss
            if isinstance(loss, losses.Grad)] == [1]
    assert checked == [features, features]


def test_config_json_records_absolute_data_paths_and_resumes_from_them(tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = tiny_config(Path("."), epochs=1)
    config.train.model_dir = "run"
    config.data.data_dir, config.data.img_prefix = "scans", "lists/"  # synthetic ignores them
    trainer.train_and_evaluate(config, log=lambda _: None)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["data_dir"] == str(tmp_path / "scans")
    assert saved["img_prefix"] == str(tmp_path / "lists") + os.sep
    saved_text = (tmp_path / "run" / "config.json").read_text()  # a run from before: relative
    (tmp_path / "run" / "config.json").write_text(saved_text.replace(str(tmp_path / "scans"),
                                                                     "scans"))
    config.train.epochs, config.train.resume = 2, True
    trainer.train_and_evaluate(config, log=lambda _: None)
    assert history_epochs(tmp_path / "run") == [0, 1]


@pytest.mark.parametrize("view", ["seg", "clean"])
def test_a_run_trained_through_a_view_resumes_where_it_stopped(tmp_path, view):
    def config(name, **train):
        c = tiny_config(tmp_path / name, steps_per_epoch=3, lr=3e-3, **train)
        if view == "seg":
            c.loss = configs.LossConfig(seg_weight=1.0)
        else:
            c.data.augmentation = data.Augmentation(intensity_shift=0.1, clean_targets=True)
        return c

    whole = trainer.train_and_evaluate(config("whole", epochs=2), log=lambda _: None)
    trainer.train_and_evaluate(config("parts", epochs=1), log=lambda _: None)
    assert (tmp_path / "parts" / "run" / "last_optimizer.npz").exists()
    resumed = trainer.train_and_evaluate(config("parts", epochs=2, resume=True),
                                         log=lambda _: None)
    # the optimiser's moments and step count carried over: the same weights as one run
    for a, b in zip(whole["model"].get_weights(), resumed["model"].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    (tmp_path / "parts" / "run" / "last_optimizer.npz").unlink()
    with pytest.raises(trainer.TrainingError, match="last_optimizer.npz is unreadable"):
        trainer.train_and_evaluate(config("parts", epochs=3, resume=True), log=lambda _: None)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_limit_stops_after_the_last_epoch_that_fits():
    clock, model = FakeClock(), keras.Sequential()
    limit = callbacks.TimeLimit(100, start=0.0, clock=clock)
    limit.set_model(model)
    clock.now = 5  # start-up counts towards the limit
    for epoch, end in enumerate([35, 60, 85]):  # 30 s first (compiling), then 25 s each
        limit.on_epoch_begin(epoch)
        clock.now = end
        limit.on_epoch_end(epoch)
        if getattr(model, "stop_training", False):
            break
    assert limit.stopped_after == 3  # after 85 s one more 25 s epoch would end at 110
    late = callbacks.TimeLimit(10, start=0.0, clock=clock)
    late.set_model(model := keras.Sequential())
    clock.now = 20
    late.on_epoch_begin(0)  # the first epoch always runs, even past the limit
    clock.now = 21
    late.on_epoch_end(0)
    assert getattr(model, "stop_training", False) and late.stopped_after == 1


def test_a_time_limited_run_keeps_its_epochs_and_resumes(tmp_path):
    stopped = trainer.train_and_evaluate(tiny_config(tmp_path, epochs=3, time_limit=1e-3),
                                         log=lambda _: None)
    run = tmp_path / "run"
    assert stopped["stopped_after"] == 1 and len(stopped["history"]["loss"]) == 1
    assert json.loads((run / "state.json").read_text())["epoch"] == 1
    assert not (run / "model.keras").exists()  # not a finished run
    done = trainer.train_and_evaluate(tiny_config(tmp_path, epochs=3, resume=True),
                                      log=lambda _: None)
    assert done["stopped_after"] is None and (run / "model.keras").exists()
    assert history_epochs(run) == [0, 1, 2]


def test_resuming_with_more_epochs_stretches_the_schedule(tmp_path):
    """The cosine schedule of a resumed run spans its new --epochs (it kept the first run's
    length, so the extra epochs trained at the floor rate)."""
    trainer.train_and_evaluate(tiny_config(tmp_path, epochs=2, time_limit=1e-3,
                                           schedule="cosine", lr=1e-3), log=lambda _: None)
    done = trainer.train_and_evaluate(tiny_config(tmp_path, epochs=5, resume=True,
                                                  schedule="cosine", lr=1e-3),
                                      log=lambda _: None)
    schedule = done["model"].optimizer.get_config()["learning_rate"]["config"]
    assert schedule["decay_steps"] == 5 * 4  # epochs x steps_per_epoch, not 2 x 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["epochs"] == 5
    saved = keras.saving.load_model(tmp_path / "run" / "last.keras")
    assert saved.optimizer.get_config()["learning_rate"]["config"]["decay_steps"] == 20


def test_a_run_directory_in_use_is_refused_and_a_stale_lock_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / ".lock").write_text(f"{sleeper.pid}\n")
        with pytest.raises(trainer.TrainingError, match=f"in use by another training "
                                                        f"\\(pid {sleeper.pid}\\)"):
            trainer.train_and_evaluate(tiny_config(tmp_path), log=lambda _: None)
        assert not (run / "config.json").exists() and not (run / "history.csv").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner died without cleaning up (kill -9): the next run takes the lock over
    result = trainer.train_and_evaluate(tiny_config(tmp_path), log=lambda _: None)
    assert (run / "best.keras").exists() and not (run / ".lock").exists()
    assert result["history"]["loss"]


def test_resume_refuses_changed_settings_and_keeps_the_config(tmp_path):
    trainer.train_and_evaluate(tiny_config(tmp_path, epochs=1), log=lambda _: None)
    saved = (tmp_path / "run" / "config.json").read_text()
    changed = tiny_config(tmp_path, epochs=2, resume=True, lr=5e-4)
    changed.loss.reg_weight = 0.5
    with pytest.raises(trainer.TrainingError, match=r"loss.reg_weight 1.0 -> 0.5; "
                                                    r"train.lr 0.0001 -> 0.0005"):
        trainer.train_and_evaluate(changed, log=lambda _: None)
    assert (tmp_path / "run" / "config.json").read_text() == saved
    older = json.loads(saved)  # a run from before --seg_weight existed still resumes
    del older["loss"]["seg_weight"]
    (tmp_path / "run" / "config.json").write_text(json.dumps(older))
    result = trainer.train_and_evaluate(tiny_config(tmp_path, epochs=2, resume=True),
                                        log=lambda _: None)  # only --epochs changed
    assert history_epochs(result["run_dir"]) == [0, 1]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize("precision,compute", [("mixed_bfloat16", "bfloat16"),
                                               ("mixed_float16", "float16")])
def test_mixed_precision_trains_the_3d_configuration_on_cpu_with_float32_warps(
        tmp_path, precision, compute):
    # the synth3d configuration in small: 3D, semi-supervised, velocity predicted and
    # integrated at half size (flags/synth3d_seg.cfg)
    config = tiny_config(tmp_path, precision=precision, steps_per_epoch=2, val_pairs=2)
    config.data = configs.DataConfig(dataset="synthetic", synthetic_shape=(16, 16, 16),
                                     synthetic_labels=4, train=3, val=2, test=0)
    config.model = configs.ModelConfig(nb_features=[[4, 4, 4], [4, 4, 4, 4, 4]],
                                       int_resolution=2, svf_resolution=2)
    config.loss = configs.LossConfig(similarity="ncc", seg_weight=1.0)
    result = trainer.train_and_evaluate(config, log=lambda _: None)
    model = result["model"]
    assert model.get_layer("vxm_dense_unet_enc_conv_0_0").compute_dtype == compute
    assert model.get_layer("vxm_dense_transformer").output.dtype == "float32"
    assert np.isfinite(result["history"]["loss"]).all()
    assert 0 < result["history"]["val_dice"][-1] <= 1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's tracing")
def test_build_for_fit_traces_the_training_step_once_and_trains_the_same(monkeypatch):
    """Without it TensorFlow traces the step twice (the first trace creates the optimiser's
    slots and the loss trackers); with it once, and the weights after fit are the same."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer
    traces = []
    step = TensorFlowTrainer.train_step
    monkeypatch.setattr(TensorFlowTrainer, "train_step",
                        lambda self, batch: traces.append(1) or step(self, batch))
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    import tensorflow as tf
    dataset = tf.data.Dataset.from_tensor_slices(
        ((x, x[::-1]), (x[::-1], np.zeros((2, 16, 16, 2), np.float32)))).batch(1).repeat()
    weights, counts = [], []
    for prebuild in (False, True):
        keras.utils.set_random_seed(0)
        model = experiment.build_model(configs.ModelConfig(
            nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]]), (32, 32))
        experiment.compile_model(model, configs.Config(), 4)
        if prebuild:
            experiment.build_for_fit(model, dataset)
        traces.clear()
        model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
        weights.append(model.get_weights())
        counts.append(len(traces))
    assert counts == [2, 1]
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_remat_recomputes_the_integration_with_the_same_training(tmp_path):
    """--remat: the model's scaling-and-squaring layer is rematerialised (also when
    started from a saved model), and two training runs from the same seed end with the
    same weights and losses with and without it: the gradients are the same."""
    results = {}
    for remat in (False, True):
        config = tiny_config(tmp_path / str(remat), remat=remat, steps_per_epoch=3)
        config.model.int_resolution = 1
        results[remat] = trainer.train_and_evaluate(config, log=lambda _: None)
    rematerialised = results[True]["model"].get_layer("vxm_dense_flow_int")
    assert rematerialised._remat_mode is not None
    assert results[False]["model"].get_layer("vxm_dense_flow_int")._remat_mode is None
    np.testing.assert_allclose(results[True]["history"]["loss"],
                               results[False]["history"]["loss"], rtol=1e-4)
    for a, b in zip(results[True]["model"].get_weights(), results[False]["model"].get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    config = tiny_config(tmp_path / "init", remat=True, steps_per_epoch=1,
                         init_model=str(Path(results[False]["run_dir"]) / "best.keras"))
    started = experiment.initial_model(config, (32, 32))
    assert started.get_layer("vxm_dense_flow_int")._remat_mode is not None


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path)
    trainer.train_and_evaluate(config, log=lambda _: None)
    last = (Path(config.train.model_dir) / "last.keras").read_bytes()
    build_splits = experiment.build_splits

    def poisoned(data_config):
        splits = build_splits(data_config)
        splits["train"].images[:] = np.nan
        return splits
    monkeypatch.setattr(experiment, "build_splits", poisoned)
    config.train.epochs, config.train.resume = 2, True
    with pytest.raises(trainer.TrainingError, match=r"loss became nan at epoch 2, step 1 "
                                                    r"\(global step 5\)"):
        trainer.train_and_evaluate(config, log=lambda _: None)
    run = Path(config.train.model_dir)
    assert json.loads((run / "state.json").read_text())["epoch"] == 1
    assert (run / "last.keras").read_bytes() == last


def test_schedules_decay_to_the_final_fraction():
    config = configs.TrainConfig(lr=1e-3, schedule="cosine", final_lr_fraction=0.1)
    cosine = experiment.learning_rate(config, 100)
    assert float(cosine(0)) == pytest.approx(1e-3)
    assert float(cosine(100)) == pytest.approx(1e-4)
    config.schedule = "exponential"
    assert float(experiment.learning_rate(config, 100)(100)) == pytest.approx(1e-4)
    config.schedule = "constant"
    assert experiment.learning_rate(config, 100) == 1e-3


def test_losses_and_weights_follow_the_original_script():
    model = configs.ModelConfig(int_resolution=2, bidir=True)
    loss = configs.LossConfig(similarity="mse", reg_weight=0.01)
    losses, weights = experiment.build_losses(loss, model)
    assert [type(x).__name__ for x in losses] == ["MSE", "MSE", "Grad"]
    assert weights == [0.5, 0.5, 0.01] and losses[2].loss_mult == 2


@pytest.mark.parametrize("args, message", [
    (["--lambda=-1"], "--lambda must be non-negative, got -1.0"),
    (["--dataset=oasis"], "--dataset=oasis needs --data_dir"),
    (["--aug_clean_targets", "--bidir"], "--aug_clean_targets works with unidirectional"),
    (["--seg_weight=1", "--bidir"], "--seg_weight works with unidirectional models"),
    (["--seg_weight=1", "--aug_clean_targets"], "--seg_weight and --aug_clean_targets"),
    (["--seg_weight=-1"], "--seg_weight must be non-negative, got -1.0"),
    (["--seg_resolution=0"], "--seg_resolution must be at least 1, got 0"),
    (["--val=1"], "--val=1: validation scores pairs and needs at least 2 subjects"),
    (["--init_model=/nonexistent.h5"], "--init_model=/nonexistent.h5: no such file"),
    (["--int_resolution=0"], "--int_resolution must be at least 1, got 0"),
    (["--int_resolution=-2"], "--int_resolution must be at least 1, got -2"),
    (["--svf_resolution=0"], "--svf_resolution must be at least 1, got 0"),
    (["--int_steps=-1"], "--int_steps must be non-negative, got -1"),
    (["--lr=nan"], "--lr must be a finite number, got nan"),
    (["--lambda=inf"], "--lambda must be a finite number, got inf"),
    (["--aug_rotate=nan"], "--aug_rotate must be a finite number, got nan"),
    (["--time_limit=-5"], "--time_limit must be non-negative, got -5.0"),
    (["--val_pairs=-3"], "--val_pairs must be non-negative, got -3"),
    (["--steps_per_epoch=-1"], "--steps_per_epoch must be non-negative, got -1"),
    (["--epochs=0"], "--epochs must be at least 1, got 0"),
    (["--window=8"], "--window must be odd and at least 3, got 8"),
    (["--window=1"], "--window must be odd and at least 3, got 1"),
    (["--lr=0"], "--lr must be positive, got 0.0"),
    (["--final_lr_fraction=0"], "--final_lr_fraction must be in (0, 1], got 0.0"),
    (["--target_shape=0,0"], "--target_shape entries must be positive, got 0,0"),
    (["--target_shape=a,8"], "--target_shape must be comma-separated integers, got 'a,8'"),
    (["--synthetic_labels=0"], "--synthetic_labels must be at least 1, got 0"),
    (["--enc=8,8"], "--enc and --dec go together"),
    (["--aug_rotate=-5"], "augmentation rotate_deg (--aug_rotate) must be non-negative"),
])
def test_config_from_flags_names_the_flag(args, message):
    """The flags come from the config dataclasses; every bad value is refused naming it."""
    from absl import flags

    flag_values = flags.FlagValues()
    configs.define_flags(flag_values)
    flag_values(["train", *args])
    with pytest.raises(ValueError) as err:
        configs.config_from_flags(flag_values)
    assert message in str(err.value)


def test_flags_are_the_config_fields_and_read_back_into_them():
    from absl import flags

    flag_values = flags.FlagValues()
    configs.define_flags(flag_values)
    flag_values(["train", "--lambda=0.3", "--aug_flip", "--target_shape=8,8",
                 "--int_resolution=1", "--seg_weight=0.5", "--lr=3e-3", "--dataset=cache",
                 "--data_dir=d"])
    config = configs.config_from_flags(flag_values, training=False)
    assert config.loss.reg_weight == 0.3 and config.loss.seg_weight == 0.5
    assert config.data.augmentation.flip and config.data.target_shape == (8, 8)
    assert config.model.int_resolution == 1 and config.train.lr == 3e-3
    assert (config.data.dataset, config.data.data_dir) == ("cache", "d")
    # the defaults of the flags are the dataclasses' defaults
    flag_values.unparse_flags()
    flag_values(["train"])
    assert configs.config_from_flags(flag_values) == configs.Config()
    assert "lambda x int_resolution" in flag_values["lambda"].help


TRAIN_ERRORS = [
    (["--bogus=1"], "Unknown command line flag 'bogus'"),
    (["--similarity=ssd"], "ssd"),
    (["--int_steps=-1"], "--int_steps must be non-negative, got -1"),
    (["--time_limit=-5"], "--time_limit must be non-negative, got -5.0"),
    (["--dataset=oasis", "--data_dir=/nonexistent"], "/nonexistent: no subjects.txt"),
    (["--seg_weight=1", "--seg_resolution=3"], "--seg_resolution: seg_resolution 3 must divide"),
    (["--synthetic_shape=16,16", "--train=3", "--val=2", "--window=17"],
     "--window=17 is larger than the images (16, 16); choose at most 16"),
    # field grids that cannot work, named before any step (a TensorFlow graph error, or a
    # model that could only translate, trained with exit 0)
    (["--synthetic_shape=48,40", "--train=3", "--val=2", "--svf_resolution=3"],
     "--svf_resolution=3 does not divide the image shape 48x40"),
    (["--synthetic_shape=32,32", "--train=3", "--val=2", "--int_resolution=8"],
     "--int_resolution=8 leaves a 4x4 field on 32x32 images"),
]


def test_flag_errors_are_one_line(tmp_path):
    results = cli_batch.run("vxm_tf.commands.train", [[*args, f"--model_dir={tmp_path}/run{n}"]
                                             for n, (args, _) in enumerate(TRAIN_ERRORS)])
    for (_, message), result in zip(TRAIN_ERRORS, results):
        assert result["code"] == 2 and len(result["lines"]) == 1, result["stderr"][-2000:]
        assert message in result["lines"][0]
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_kill_then_resume_reaches_the_epoch_count_once_each(tmp_path):
    run_dir = tmp_path / "run"
    args = [*TINY, "--epochs=4", "--steps_per_epoch=30", f"--model_dir={run_dir}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "vxm_tf.train", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run_dir / "state.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())["epoch"]
    assert 1 <= killed_at < 4, "the kill should land before the run finished"

    # the same command line again, in this process (the flags read as `train` reads them)
    from absl import flags

    flag_values = flags.FlagValues()
    configs.define_flags(flag_values)
    flag_values(["train", *args])
    with pytest.raises(trainer.TrainingError, match="already holds a run"):
        trainer.train_and_evaluate(configs.config_from_flags(flag_values), log=lambda _: None)
    flag_values["resume"].value = True
    trainer.train_and_evaluate(configs.config_from_flags(flag_values), log=lambda _: None)
    assert json.loads(state.read_text())["epoch"] == 4
    assert history_epochs(run_dir) == [0, 1, 2, 3]
    assert keras.saving.load_model(run_dir / "model.keras").optimizer.iterations == 4 * 30


MIRRORED = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from vxm_tf import configs, data, experiment, losses, trainer
config = configs.Config()
config.data = configs.DataConfig(synthetic_shape=(32, 32), synthetic_labels=4, train=4,
                                 val=3, test=2)
config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]])
config.train = configs.TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2,
                                   strategy=sys.argv[2], verbose=0, model_dir=sys.argv[1])
result = trainer.train_and_evaluate(config, log=lambda _: None)
strategy = result["model"].distribute_strategy
print(type(strategy).__name__, strategy.num_replicas_in_sync)
"""


@pytest.mark.parametrize("strategy, name, replicas", [
    ("mirrored", "MirroredStrategy", "2"),
    ("multi_worker", "CollectiveAllReduceStrategy", "1"),  # MultiWorkerMirroredStrategy
])
def test_distribution_strategies_on_two_logical_cpus(tmp_path, strategy, name, replicas):
    """mirrored replicates over the two logical CPUs; multi_worker with no TF_CONFIG is a
    single worker (one replica on a CPU-only host)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    run = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path / "run"), strategy],
                         env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[-2:] == [name, replicas]



def test_multi_worker_across_processes_is_a_clear_error(tmp_path):
    cluster = {"worker": ["127.0.0.1:23456", "127.0.0.1:23457"]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})}
    run = subprocess.run([sys.executable, "-m", "vxm_tf.train", *TINY, "--strategy=multi_worker",
                          f"--model_dir={tmp_path}/run"], capture_output=True, text=True,
                         env=env, timeout=600)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
    assert "TF_CONFIG names 2 tasks" in lines[0] and "keras-team/keras#20585" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_shape_that_cannot_fit_in_memory_is_refused_before_training():
    config = configs.Config()
    trainer.check_memory((128, 128, 128), config, available=16 * 2**30)  # 5.5 GiB: fits
    with pytest.raises(trainer.TrainingError, match=r"training at 512x512x512 with "
                                                    r"--batch_size=1 needs about \d+ GiB, 16 GiB"):
        trainer.check_memory((512, 512, 512), config, available=16 * 2**30)
    config.train.batch_size = 8
    with pytest.raises(trainer.TrainingError, match="--batch_size=8"):
        trainer.check_memory((128, 128, 128), config, available=16 * 2**30)


def test_a_diverging_run_stops_instead_of_finishing_with_a_useless_model(tmp_path):
    """An absurd --lr keeps the loss finite while the fields tear the images apart: the
    run stops with an error naming the validation Dice, instead of exiting 0."""
    config = tiny_config(tmp_path, lr=0.5, epochs=3, steps_per_epoch=6)
    with pytest.raises(trainer.TrainingError, match=r"training diverged: validation Dice "
                                                    r"0\.\d+ after epoch 1 is below half of "
                                                    r"no registration's 0\.\d+"):
        trainer.train_and_evaluate(config, log=lambda _: None)
    # that the guard lets ordinary training finish, every other training test shows


@pytest.mark.parametrize("flagfile", sorted(p.name for p in (
    Path(__file__).resolve().parents[1] / "flags").glob("*.cfg") if p.name != "tune.cfg"))
def test_every_training_flagfile_makes_a_valid_config(flagfile):
    """flags/*.cfg (tune.cfg is the tuner's) name known flags and go together; the
    fine-tuning one takes its data folder on the command line, and its start (the authors'
    model in ../shared) is left out here."""
    from absl import flags
    fv = flags.FlagValues()
    configs.define_flags(fv)
    root = Path(__file__).resolve().parents[1]
    more = ["--data_dir=cache/x", "--init_model="] if flagfile == "finetune3d.cfg" else []
    fv(["prog", f"--flagfile={root / 'flags' / flagfile}", *more])
    config = configs.config_from_flags(fv)
    if flagfile == "finetune3d.cfg":
        assert config.loss.seg_weight > 0 and config.loss.seg_resolution == 2


def test_a_time_limited_stop_has_its_own_exit_status(tmp_path):
    from vxm_tf.commands import train

    stopped, done = cli_batch.run("vxm_tf.commands.train", [
        [*TINY, "--epochs=3", "--time_limit=0.001", f"--model_dir={tmp_path}/run"],
        [*TINY, "--epochs=2", "--resume", f"--model_dir={tmp_path}/run"]])
    assert stopped["code"] == train.STOPPED == 3, stopped["stderr"][-2000:]
    assert done["code"] == 0, done["stderr"][-2000:]
    assert (tmp_path / "run" / "model.keras").exists()


def test_a_checkpoint_that_cannot_be_written_stops_the_run_in_one_line(tmp_path,
                                                                       monkeypatch):
    """A full disk at an epoch's end: a TrainingError naming the epoch and --resume (it was a
    traceback), the files of the epoch before intact."""
    saved = callbacks.save_model
    calls = []

    def full_disk(model, path):
        calls.append(path)
        if len(calls) > 2:  # epoch 1 writes best and last; epoch 2 finds the disk full
            raise OSError(28, "No space left on device")
        saved(model, path)
    monkeypatch.setattr(callbacks, "save_model", full_disk)
    with pytest.raises(trainer.TrainingError, match=r"epoch 2: the checkpoint could not be "
                                                    r"written .*then --resume"):
        trainer.train_and_evaluate(tiny_config(tmp_path, epochs=3), log=lambda _: None)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1 and (tmp_path / "run" / "last.keras").exists()


def test_a_model_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("notes")
    with pytest.raises(trainer.TrainingError, match="--model_dir=.*run: a file, not a folder"):
        trainer.train_and_evaluate(tiny_config(tmp_path), log=lambda _: None)
    assert (tmp_path / "run").read_text() == "notes"

"""HyperMorph: hyper-convolutions, `HyperVxmDense`, its training data and losses, and the
choice of its weight (parity with voxelmorph 0.2: test_reference_parity.py)."""

import keras
import numpy as np
import pytest

from vxm_tf import configs, data, experiment, hyperlayers, hypermorph, losses, networks
from vxm_tf.configs import ConfigError
from vxm_tf.lambda_choice import choose_lambda
from vxm_tf.workflows import register_files

SHAPE = (32, 32)


@pytest.fixture(scope="module")
def hyper_model():
    keras.utils.set_random_seed(3)
    model = hypermorph.HyperVxmDense(SHAPE, nb_hyp_units=8, nb_hyp_layers=2, int_steps=5)
    flow = model.get_layer("hyper_vxm_dense_flow")
    kernel, bias = flow.get_weights()
    flow.set_weights([np.random.default_rng(0).normal(0, 0.3, kernel.shape), bias])
    return model


def pair(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((batch, *SHAPE, 1), dtype=np.float32) for _ in range(2)]


def test_hyperconv_gives_each_sample_its_own_kernel():
    layer = hyperlayers.HyperConv2DFromDense(4, 3, padding="same")
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 6, 3), dtype=np.float32)
    h = rng.random((2, 5), dtype=np.float32)
    out = keras.ops.convert_to_numpy(layer([x, h]))
    assert out.shape == (2, 8, 6, 4)
    weights = [keras.ops.convert_to_numpy(w) for w in layer.weights]
    assert [w.path.split("/")[-1] for w in layer.weights] == [
        "hyperkernel_kernel", "hyperkernel_bias", "hyperbias_kernel", "hyperbias_bias"]
    for b in range(2):
        kernel = (h[b] @ weights[0] + weights[1]).reshape(3, 3, 3, 4)
        bias = h[b] @ weights[2] + weights[3]
        expected = keras.ops.convert_to_numpy(
            keras.ops.conv(x[b:b + 1], kernel, padding="same"))[0] + bias
        np.testing.assert_allclose(out[b], expected, rtol=1e-5, atol=1e-5)


def test_hyper_model_registers_at_a_weight_and_its_fixed_copy_agrees(hyper_model, tmp_path):
    moving, fixed = pair()
    warps = {h: hyper_model.register(moving, fixed, hyper_lambda=h) for h in (0.1, 0.9)}
    assert np.abs(warps[0.1] - warps[0.9]).max() > 1e-3, "the weight changes the field"
    fixed_model = hyper_model.at_lambda(0.9)
    assert len(fixed_model.inputs) == 2 and fixed_model.hyper_lambda == (0.9,)
    np.testing.assert_allclose(fixed_model.register(moving, fixed), warps[0.9], atol=1e-5)
    networks.save_model(fixed_model, tmp_path / "fixed.keras")
    loaded = networks.VxmDense.load(tmp_path / "fixed.keras")
    assert isinstance(loaded, hypermorph.HyperVxmDense) and loaded.hyper_lambda == (0.9,)
    np.testing.assert_allclose(loaded.register(moving, fixed), warps[0.9], atol=1e-5)
    # another weight than its own: a copy at that weight
    np.testing.assert_allclose(loaded.register(moving, fixed, hyper_lambda=0.1), warps[0.1],
                               atol=1e-5)
    # the inverse exists at a weight too
    assert loaded.register_inverse(moving, fixed).shape == warps[0.9].shape


def test_hyper_model_refuses_a_missing_or_out_of_range_weight(hyper_model):
    moving, fixed = pair(1)
    with pytest.raises(ValueError, match="give hyper_lambda"):
        hyper_model.register(moving, fixed)
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        hyper_model.register(moving, fixed, hyper_lambda=1.5)
    with pytest.raises(ValueError, match=r"lies in \[0, 1\]"):
        hyper_model.at_lambda(float("nan"))
    with pytest.raises(ValueError, match="is a HyperMorph model: give --hyper_lambda"):
        hypermorph.load(hyper_model)
    plain = networks.VxmDense(SHAPE, nb_unet_features=[[4, 4], [4, 4, 4]])
    with pytest.raises(ValueError, match="--hyper_lambda=0.3: .* not a HyperMorph model"):
        hypermorph.load(plain, 0.3)


def test_weight_conversion_between_hypermorph_and_lambda():
    np.testing.assert_allclose(hypermorph.hyper_of_lambda([0, 1, 3]), [0, 0.5, 0.75])
    np.testing.assert_allclose(hypermorph.lambda_of_hyper([0, 0.5, 0.75]), [0, 1, 3])


def test_hyperconv_config_round_trip_and_3d():
    layer = hyperlayers.HyperConv3DFromDense(2, 3, padding="SAME", name="h3")
    again = hyperlayers.HyperConv3DFromDense.from_config(layer.get_config())
    assert (again.rank, again.filters, again.kernel_size, again.padding) == (3, 2, (3, 3, 3),
                                                                            "same")
    x = np.random.default_rng(0).random((2, 4, 6, 4, 1), dtype=np.float32)
    h = np.array([[0.0], [1.0]], np.float32)
    out = keras.ops.convert_to_numpy(again([x, h]))
    assert out.shape == (2, 4, 6, 4, 2)


def test_training_pairs_draw_weights_and_weigh_the_losses():
    volumes = data.synthetic_volumes(4, SHAPE, 3, seed=0)
    source = data.PairSource(volumes, data.all_pairs(4), batch_size=64, seed=1, repeat=True,
                             flow_shape=(16, 16, 2), hyper_oversample=0.4)
    (moving, fixed, h), (target, zeros), (w_sim, w_grad) = source.batch(3)
    assert h.shape == (64, 1) and h.dtype == np.float32 and 0 <= h.min() <= h.max() <= 1
    np.testing.assert_array_equal(w_sim, 1 - h[:, 0])
    np.testing.assert_array_equal(w_grad, h[:, 0])
    ends = np.isin(h, (0, 1)).mean()
    assert 0.2 < ends < 0.65, "about 40% end points"
    np.testing.assert_array_equal(source.batch(3)[0][2], h)  # the same batch again
    # a process's part of a batch draws what the whole batch draws for those pairs
    part = data.PairSource(volumes, data.all_pairs(4), batch_size=64, seed=1, repeat=True,
                           flow_shape=(16, 16, 2), hyper_oversample=0.4, shard=(1, 2))
    np.testing.assert_array_equal(part.batch(3)[0][2], h[32:])
    everywhere = data.hyper_draws(np.random.default_rng(0), 100, oversample=1.0)
    assert set(np.unique(everywhere)) == {0.0, 1.0}
    with pytest.raises(ValueError, match="unidirectional"):
        data.PairSource(volumes, data.all_pairs(4), flow_shape=(16, 16, 2), bidir=True,
                        hyper_oversample=0.4)


def test_sample_weights_make_the_loss_one_minus_h_sim_plus_h_grad(hyper_model):
    config = configs.Config()
    config.model = configs.ModelConfig(hyper=True, int_steps=5)
    model = hypermorph.HyperVxmDense.from_config(hyper_model.get_config())
    model.set_weights(hyper_model.get_weights())
    experiment.compile_model(model, config, 10)
    moving, fixed = pair(2, seed=1)
    zeros = np.zeros((2, *model.outputs[-1].shape[1:]), np.float32)
    h = np.array([[0.1], [0.8]], np.float32)  # each pair its own weight
    moved, preint = model.predict_on_batch([moving, fixed, h])
    sim = keras.ops.convert_to_numpy(losses.NCC().loss(fixed, moved))
    grad = keras.ops.convert_to_numpy(losses.Grad("l2", loss_mult=2).loss(None, preint))
    assert np.abs(sim).min() > 1e-3 and grad.min() > 1e-6, "both terms count"
    loss = model.evaluate([moving, fixed, h], [fixed, zeros],
                          sample_weight=[1 - h[:, 0], h[:, 0]], verbose=0, return_dict=True)
    expected = np.mean((1 - h[:, 0]) * sim + h[:, 0] * grad)
    np.testing.assert_allclose(loss["loss"], expected, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("flags, match", [
    (dict(reg_weight=0.5), "--lambda=0.5 sets one smoothness weight"),
    (dict(bidir=True), "--bidir does not go with it"),
    (dict(hyper_oversample=1.5), r"--hyper_oversample must be in \[0, 1\]"),
    (dict(hyper=False, hyper_oversample=0.2), "--hyper_oversample set.* add --hyper"),
])
def test_hyper_flags_are_checked(flags, match):
    config = configs.Config()
    config.model.hyper = flags.get("hyper", True)
    config.model.bidir = flags.get("bidir", False)
    config.loss.reg_weight = flags.get("reg_weight", 1.0)
    config.loss.hyper_oversample = flags.get("hyper_oversample", 0.4)
    with pytest.raises(ConfigError, match=match):
        configs.check_config(config)


def test_tuning_refuses_a_hyper_model(tmp_path):
    from vxm_tf import tuning
    config = configs.Config()
    config.model.hyper = True
    tune = tuning.TuneConfig(directory=str(tmp_path / "tune"))
    with pytest.raises(ConfigError, match="--hyper: a HyperMorph model learns every lambda"):
        tuning.run_search(config, tune)


def test_chosen_weight_is_written_as_a_model_that_registers_there(hyper_model, tmp_path):
    volumes = data.synthetic_volumes(3, SHAPE, 3, seed=2)
    pairs = data.all_pairs(3)
    path = tmp_path / "hyper.keras"
    networks.save_model(hyper_model, path)
    lines = []
    chosen, rows = choose_lambda(path, tmp_path / "chosen.keras", [0.0, 0.5, 1.0], volumes,
                                 pairs, log=lines.append)
    assert [r["hyper_lambda"] for r in rows] == [0.0, 0.5, 1.0]
    assert chosen["dice"] == max(r["dice"] for r in rows)
    assert "<- chosen" in "\n".join(lines)
    written = networks.VxmDense.load(tmp_path / "chosen.keras")
    assert written.hyper_lambda == (chosen["hyper_lambda"],)
    moving, fixed = volumes.images[:1, ..., None], volumes.images[1:2, ..., None]
    np.testing.assert_allclose(
        written.register(moving, fixed),
        hyper_model.register(moving, fixed, hyper_lambda=chosen["hyper_lambda"]), atol=1e-5)
    from vxm_tf.lambda_choice import check_out, parse_grid
    with pytest.raises(ValueError, match="a checkpoint of the run"):
        (tmp_path / "config.json").write_text("{}")
        check_out(str(tmp_path / "last.keras"), str(path))
    with pytest.raises(ValueError, match="is the default output .* itself: give --out"):
        check_out(str(path), str(path), default=True)
    with pytest.raises(ValueError, match="would overwrite the input --model"):
        check_out(str(path), str(path))  # named as it is, not as a checkpoint
    from vxm_tf import models
    shipped = models.card("vxm-tf-oasis2d-hypermorph").folder / "chosen.keras"
    with pytest.raises(ValueError, match="inside vxm_tf's registered models"):
        check_out(str(shipped), "vxm-tf-oasis2d-hypermorph")
    with pytest.raises(ValueError, match="--grid is empty"):
        parse_grid(" ")
    tied = [{"hyper_lambda": h, "dice": 0.5, "folding_percent": 0.0} for h in (0.0, 0.4)]
    assert hypermorph.choose(tied)["hyper_lambda"] == 0.4, "ties go to the smoother weight"
    least_folding = hypermorph.choose(rows, min_dice=min(r["dice"] for r in rows))
    assert least_folding["folding_percent"] == min(r["folding_percent"] for r in rows)
    with pytest.raises(ValueError, match="--min_dice=2: no weight"):
        hypermorph.choose(rows, min_dice=2)


def test_register_files_takes_the_weight_of_a_hyper_model(hyper_model, tmp_path):
    from vxm_tf import io
    moving, fixed = pair(1, seed=4)
    paths = {}
    for name, image in (("moving", moving), ("fixed", fixed)):
        paths[name] = str(tmp_path / f"{name}.nii.gz")
        io.save_volume(paths[name], image[0, ..., 0], np.eye(4))
    model_path = tmp_path / "hyper.keras"
    networks.save_model(hyper_model, model_path)
    with pytest.raises(ValueError, match="give --hyper_lambda"):
        register_files(str(model_path), paths["moving"], paths["fixed"],
                       str(tmp_path / "moved.nii.gz"), affine_config=None)
    assert not (tmp_path / "moved.nii.gz").exists()
    register_files(str(model_path), paths["moving"], paths["fixed"],
                   str(tmp_path / "moved.nii.gz"), warp_path=str(tmp_path / "warp.npz"),
                   affine_config=_no_affine(), hyper_lambda=0.5, normalise="none")
    with np.load(tmp_path / "warp.npz") as saved:  # world mm in LPS (ITK's): 1 mm voxels
        warp = -saved["vol"][:, :, 0, :2]
    expected = hyper_model.register(moving, fixed, hyper_lambda=0.5)[0]
    other = hyper_model.register(moving, fixed, hyper_lambda=0.0)[0]
    assert np.abs(expected - other).max() > 1e-3
    np.testing.assert_allclose(warp, expected, atol=1e-4)


def _no_affine():
    from vxm_tf import affine
    return affine.AffineConfig("none")


def test_training_a_hyper_model_runs_through_the_usual_loop(tmp_path):
    from vxm_tf import trainer
    config = configs.Config()
    config.data = configs.DataConfig(dataset="synthetic", synthetic_shape=SHAPE,
                                     synthetic_labels=4, train=4, val=3, test=0)
    config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]], hyper=True,
                                       hyper_layers=2, hyper_units=4)
    config.train = configs.TrainConfig(epochs=1, steps_per_epoch=4, val_pairs=3, verbose=0,
                                       model_dir=str(tmp_path / "run"))
    configs.check_config(config)
    result = trainer.train_and_evaluate(config, log=lambda _: None)
    model = result["model"]
    assert isinstance(model, hypermorph.HyperVxmDense) and model.nb_hyp_units == 4
    assert "val_dice" in result["history"]
    saved = networks.VxmDense.load(tmp_path / "run" / "model.keras")
    moving, fixed = pair(1)
    np.testing.assert_allclose(saved.register(moving, fixed, hyper_lambda=0.3),
                               model.register(moving, fixed, hyper_lambda=0.3), atol=1e-6)
    recorded = configs.run_data_config(tmp_path / "run" / "model.keras")
    assert recorded.synthetic_shape == SHAPE
    # a checkpoint replaced by a model without optimiser: resuming says so in one line
    networks.save_model(model.at_lambda(0.3), tmp_path / "run" / "last.keras")
    config.train.epochs, config.train.resume = 2, True
    with pytest.raises(trainer.TrainingError, match="last.keras holds no optimiser state"):
        trainer.train_and_evaluate(config, log=lambda _: None)


def test_a_dead_hypernetwork_is_caught(hyper_model, tmp_path):
    assert hyper_model.responds_to_lambda()
    dead = hypermorph.HyperVxmDense.from_config(hyper_model.get_config())
    dead.set_weights(hyper_model.get_weights())
    last = dead.get_layer("hyper_vxm_dense_hyp_dense_2")
    last.set_weights([np.zeros_like(w) - 1.0 for w in last.get_weights()])  # ReLU all off
    assert not dead.responds_to_lambda()
    path = tmp_path / "dead.keras"
    networks.save_model(dead, path)
    volumes = data.synthetic_volumes(3, SHAPE, 3, seed=2)
    with pytest.raises(ValueError, match="registers alike at every h"):
        choose_lambda(path, tmp_path / "chosen.keras", [0.0, 1.0], volumes,
                      data.all_pairs(3))
    assert not (tmp_path / "chosen.keras").exists()

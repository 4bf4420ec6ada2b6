"""Test-time instance optimisation (`vxm_tf.instance`) and its use by register / evaluate."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from keras import ops

from vxm_tf import (
    data,
    evaluation,
    geometry,
    instance,
    losses,
    metrics,
    networks,
    registration,
    workflows,
)
from vxm_tf import ops as vxm_ops
from vxm_tf.data.synthetic import random_displacement


@pytest.fixture(scope="module")
def pairs():
    """Two 48x48 pairs: a synthetic subject and itself warped by a known smooth field."""
    volumes = data.synthetic_volumes(2, (48, 48), nb_labels=4, seed=5)
    rng = np.random.default_rng(1)
    moving = np.stack([geometry.warp(image, random_displacement((48, 48), 2.5, 6, rng), 1)
                       for image in volumes.images])
    return moving[..., None].astype(np.float32), volumes.images[..., None]


def tiny_model(int_resolution=2):
    return networks.VxmDense((48, 48), nb_unet_features=[[8, 8, 8], [8, 8, 8, 8, 8]],
                             int_resolution=int_resolution)


def mse(moving, fixed, warp):
    moved = ops.convert_to_numpy(vxm_ops.transform(moving, warp))
    return float(np.mean((moved - fixed) ** 2))


def assert_closer_and_smooth(moving, fixed, start, warp):
    """Each pair's moved image is much closer to its fixed one with `warp` than with the
    network's `start`, and the warp hardly folds."""
    assert warp.shape == start.shape == (2, 48, 48, 2)
    before = [mse(moving[k:k + 1], fixed[k:k + 1], start[k:k + 1]) for k in range(2)]
    after = [mse(moving[k:k + 1], fixed[k:k + 1], warp[k:k + 1]) for k in range(2)]
    assert all(a < 0.7 * b for a, b in zip(after, before)), (before, after)
    assert max(metrics.folding_percent(w) for w in warp) < 1.0


def test_zero_steps_is_the_network_exactly(pairs):
    model = tiny_model()
    moving, fixed = pairs
    np.testing.assert_array_equal(instance.optimise(model, moving, fixed,
                                                    instance.InstanceConfig(0)),
                                  model.register(moving, fixed))
    np.testing.assert_array_equal(
        registration.displacements(model, moving, fixed, instance.InstanceConfig(0)),
        model.register(moving, fixed))


@pytest.mark.parametrize("similarity, int_resolution, space", [
    ("ncc", 1, "composition"), ("ncc", 2, "composition"), ("mse", 2, "composition"),
    ("ncc", 2, "velocity"), ("ncc", 2, "displacement"), ("mse", 1, "displacement")])
def test_steps_bring_the_moved_image_closer_with_a_smooth_field(pairs, similarity,
                                                                 int_resolution, space):
    model = tiny_model(int_resolution)  # an untrained network: its field is ~0
    moving, fixed = pairs
    start = model.register(moving, fixed)
    config = instance.InstanceConfig(steps=40, lr=0.2, similarity=similarity,
                                     reg_weight=1.0, smoothing=3, space=space)
    warp = instance.optimise(model, moving, fixed, config)
    assert_closer_and_smooth(moving, fixed, start, warp)


def test_more_steps_lower_the_pairs_loss_monotonically(pairs):
    """On the known deformation of `pairs`, each longer run (every call starts afresh from
    the network's field, so N steps are the first N of a longer run) ends with a lower
    similarity + smoothness loss of the correction it optimises."""
    model = tiny_model(int_resolution=1)
    moving, fixed = pairs
    start = model.register(moving, fixed)
    config = instance.InstanceConfig(steps=0, lr=0.2, similarity="ncc", reg_weight=1.0,
                                     smoothing=3)
    similarity, smoothness = losses.NCC(), losses.Grad("l2")
    values = []
    for steps in (0, 5, 10, 20, 40):
        warp = instance.optimise(model, moving, fixed,
                                 instance.InstanceConfig(**{**vars(config), "steps": steps}))
        moved = vxm_ops.transform(moving, warp)
        values.append(float(similarity(fixed, moved))
                      + config.reg_weight * float(smoothness(np.zeros_like(warp), warp - start)))
    assert all(b < a for a, b in zip(values, values[1:])), values


def test_a_coarser_grid_corrects_the_field_where_the_network_keeps_it(pairs):
    """`resolution` 2: the correction is optimised on a grid half the field's size (here
    24x24 for the 48x48 field of a 48x48 model) and brought back to the field's grid: the
    moved images come closer, smoothly, and a different field results than on the
    field's own grid."""
    model = tiny_model(int_resolution=1)
    moving, fixed = pairs
    start = model.register(moving, fixed)
    config = instance.InstanceConfig(steps=20, lr=0.6, reg_weight=1.0, smoothing=1,
                                     window=21, resolution=2)  # 11 voxels of the grid
    warp = instance.optimise(model, moving, fixed, config)
    assert_closer_and_smooth(moving, fixed, start, warp)
    # the grid matters (checked where a step compiles fastest, the displacement space)
    cheap = dataclasses.replace(config, space="displacement")
    coarse = instance.optimise(model, moving, fixed, cheap)
    fine = instance.optimise(model, moving, fixed, dataclasses.replace(cheap, resolution=1))
    assert np.abs(fine - coarse).max() > 0.05
    # a grid that does not divide evenly (the model's 48x56 field -> 16x18 -> 48x56)
    odd = networks.VxmDense((48, 56), nb_unet_features=[[8, 8, 8], [8, 8, 8, 8, 8]],
                            int_resolution=1)
    wide = [np.pad(a, ((0, 0), (0, 0), (0, 8), (0, 0))) for a in (moving, fixed)]
    assert instance.optimise(odd, *wide, dataclasses.replace(config, steps=2,
                                                             resolution=3)).shape == (
        2, 48, 56, 2)


def test_the_rate_is_in_voxels_of_the_field_on_any_grid(pairs):
    """Adam's first step moves each parameter by about the rate: on a grid r times coarser,
    whose voxels are r field voxels, the correction still moves the field by `lr` field
    voxels at most (not r x lr, which let a coarse grid overshoot)."""
    model = tiny_model(int_resolution=1)  # a 48x48 field, the images' own grid
    moving, fixed = pairs
    network = model.register(moving, fixed)
    largest = {}
    for resolution in (1, 2):
        one_step = instance.InstanceConfig(steps=1, lr=0.05, reg_weight=0.0, smoothing=1,
                                           similarity="mse", space="displacement",
                                           resolution=resolution)
        moved = instance.optimise(model, moving, fixed, one_step) - network
        largest[resolution] = float(np.abs(moved).max())
    assert 0.04 < largest[1] < 0.0501 and 0.04 < largest[2] < 0.0501, largest


def test_a_grid_too_coarse_to_follow_anatomy_is_refused(pairs):
    """Fewer than MIN_GRID voxels per axis: a one-line error naming the flag and the
    largest value that works, before any work (resolution 16 on a 2D model gave Dice 0.27
    where the network gave 0.51; 80 or 500 gave 0.01)."""
    model = tiny_model(int_resolution=1)  # a 48x48 field
    moving, fixed = pairs
    for resolution in (4, 16, 500):
        config = instance.InstanceConfig(steps=5, resolution=resolution)
        with pytest.raises(ValueError, match=rf"--instance_resolution={resolution} leaves a "
                                              r"grid of \d+x\d+ voxels .* use at most 3"):
            instance.optimise(model, moving, fixed, config)
    instance.check_for_model(instance.InstanceConfig(steps=5, resolution=3), model)
    instance.check_for_model(instance.InstanceConfig(steps=0, resolution=500), model)
    with pytest.raises(ValueError, match=r"--instance_window=99 is larger than this model's "
                                         r"48x48 images"):
        instance.check_for_model(instance.InstanceConfig(steps=5, window=99), model)
    instance.check_for_model(instance.InstanceConfig(steps=5, window=47), model)


def test_a_divergent_optimisation_keeps_the_network_field(pairs):
    """Whatever the settings, a pair whose images match worse after the steps than with
    the network's field keeps the network's field, with a warning (not silently)."""
    model = tiny_model(int_resolution=1)
    moving, fixed = pairs
    network = model.register(moving, fixed)
    wild = instance.InstanceConfig(steps=5, lr=1e4, reg_weight=0.0, smoothing=1,
                                   space="displacement")
    with pytest.warns(instance.InstanceWarning, match="2 of 2 pair"):
        warp = instance.optimise(model, moving, fixed, wild)
    np.testing.assert_allclose(warp, network, atol=1e-5)


def test_the_straight_through_gradient_is_exact_at_the_start_and_keeps_the_warp_smooth(
        pairs):
    """`gradient` "straight-through" warps by the correction's exponential but takes its
    Jacobian as the identity, which it is at a zero correction: the first step equals the
    exact gradient's; later steps differ, still bring the moved images closer and hardly
    fold (the warp is the exponential of a smooth velocity either way)."""
    model = tiny_model(int_resolution=1)
    moving, fixed = pairs
    start = model.register(moving, fixed)
    exact = instance.InstanceConfig(steps=1, lr=0.2, reg_weight=1.0, smoothing=3)
    through = dataclasses.replace(exact, gradient="straight-through")
    first = instance.optimise(model, moving, fixed, exact)
    assert np.abs(first - start).max() > 0.1
    np.testing.assert_allclose(instance.optimise(model, moving, fixed, through), first,
                               atol=1e-4)
    late = [instance.optimise(model, moving, fixed, dataclasses.replace(c, steps=40))
            for c in (exact, through)]
    assert np.abs(late[0] - late[1]).max() > 0.01
    assert_closer_and_smooth(moving, fixed, start, late[1])


def test_each_batch_starts_afresh_and_pairs_do_not_mix(pairs):
    """The compiled optimiser is reused: a second call gives the first call's answer, and a
    pair optimised in a batch of two moves as it does alone (Adam is per-voxel)."""
    model = tiny_model()
    moving, fixed = pairs
    config = instance.InstanceConfig(steps=10, lr=0.2, reg_weight=1.0, smoothing=1)
    first = instance.optimise(model, moving, fixed, config)
    again = instance.optimise(model, moving, fixed, config)
    np.testing.assert_allclose(again, first, atol=1e-5)
    alone = instance.optimise(model, moving[1:], fixed[1:], config)
    change = np.abs(first[1] - model.register(moving[1:], fixed[1:])[0]).max()
    assert change > 0.1
    # Adam scales each voxel's step by its own gradient's size, so the rounding that
    # differs between batch sizes shows where the gradient vanishes; pairs that mixed
    # would differ by a fair part of the change itself
    assert np.abs(alone[0] - first[1]).max() < 0.01 * change, change


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=-1), "--instance_steps must be a non-negative integer, got -1"),
    (dict(steps=2.5), "--instance_steps must be a non-negative integer"),
    (dict(lr=0), "--instance_lr must be positive and finite, got 0"),
    (dict(lr=float("inf")), "--instance_lr must be positive and finite, got inf"),
    (dict(reg_weight=float("nan")), "--instance_lambda must be non-negative and finite"),
    (dict(similarity="dice"), "--instance_similarity must be one of"),
    (dict(reg_weight=-1.0), "--instance_lambda must be non-negative"),
    (dict(smoothing=0), "--instance_smoothing must be a positive integer, got 0"),
    (dict(space="warp"), "--instance_space must be one of"),
    (dict(window=0), "--instance_window must be odd and at least 3, got 0"),
    (dict(window=1), "--instance_window must be odd and at least 3, got 1"),
    (dict(window=10), "--instance_window must be odd and at least 3, got 10"),
    (dict(resolution=1.5), "--instance_resolution must be a positive integer, got 1.5"),
    (dict(gradient="approximate"), "--instance_gradient must be one of"),
    (dict(gradient="straight-through", space="velocity"),
     "--instance_gradient=straight-through applies to --instance_space=composition, not "
     "velocity"),
])
def test_config_errors_name_the_flag(kwargs, message):
    with pytest.raises(ValueError, match=message):
        instance.InstanceConfig(**kwargs)


def test_evaluate_pairs_scores_the_optimised_fields(pairs):
    model = tiny_model()
    volumes = data.synthetic_volumes(3, (48, 48), nb_labels=4, seed=5)
    plain, _ = evaluation.evaluate_pairs(model, volumes, [(0, 1), (1, 2)], surface=False)
    tuned, _ = evaluation.evaluate_pairs(model, volumes, [(0, 1), (1, 2)], surface=False,
                                         instance_config=instance.InstanceConfig(
                                             30, 0.2, reg_weight=1.0, smoothing=1))
    assert np.mean([r["dice_after"] for r in tuned]) > \
        np.mean([r["dice_after"] for r in plain]) + 0.02


def test_register_cli_function_takes_instance_steps(trained_run, tmp_path):
    import nibabel as nib
    volumes = data.synthetic_volumes(2, (32, 32), nb_labels=4, seed=2)
    for k, name in enumerate(("moving", "fixed")):
        nib.save(nib.Nifti1Image(volumes.images[k], np.eye(4)), str(tmp_path / f"{name}.nii"))
    outputs = {}
    for steps in (0, 20):
        out = tmp_path / f"moved{steps}.nii"
        workflows.register_files(str(trained_run / "best.keras"), str(tmp_path / "moving.nii"),
                                str(tmp_path / "fixed.nii"), str(out),
                                instance_config=instance.InstanceConfig(
                                    steps, 0.2, reg_weight=1.0, smoothing=1))
        outputs[steps] = np.asarray(nib.load(str(out)).dataobj)
    errors = {k: np.mean((v - volumes.images[1]) ** 2) for k, v in outputs.items()}
    assert errors[20] < errors[0], errors


def test_the_corrections_running_mean_is_the_box_mean():
    """The smoothing's shifted sums equal `losses.box_sum` (zero padding, odd and even
    widths) divided by the window's size, per channel."""
    field = np.random.default_rng(3).normal(size=(2, 9, 8, 7, 3)).astype("float32")
    for width in (2, 3, 4):
        expected = np.concatenate([ops.convert_to_numpy(losses.box_sum(
            field[..., c:c + 1], [width] * 3)) for c in range(3)], axis=-1) / width ** 3
        np.testing.assert_allclose(
            ops.convert_to_numpy(instance._running_mean(field, width)), expected, atol=1e-5)


@pytest.mark.parametrize("width", [1, 2, 3])
def test_smoothed_adam_steps_as_adam_through_the_smoothing(width):
    """`_SmoothedAdam` on u takes the steps Adam takes on c where u = S S c (S the running
    mean, whose transpose differs for an even width)."""
    target = np.random.default_rng(4).normal(size=(1, 7, 6, 2)).astype("float32")

    def smooth(x):
        for _ in range(2 if width > 1 else 0):
            x = instance._running_mean(x, width)
        return x

    def gradient(fn, x):  # of sum((fn(x) - target)^2 * target)
        def loss(v):
            return ops.sum(ops.square(fn(v) - target) * target)
        if keras.backend.backend() == "jax":
            import jax
            return jax.grad(loss)(ops.convert_to_tensor(x))
        import tensorflow as tf
        value = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(value)
            result = loss(value)
        return tape.gradient(result, value)

    c = keras.Variable(np.zeros_like(target))
    u = keras.Variable(np.zeros_like(target))
    adam = keras.optimizers.Adam(0.5)
    smoothed = instance._SmoothedAdam(width, learning_rate=0.5)
    for _ in range(3):
        adam.apply_gradients([(gradient(smooth, ops.convert_to_numpy(c)), c)])
        smoothed.apply_gradients([(gradient(lambda x: x, ops.convert_to_numpy(u)), u)])
    expected = ops.convert_to_numpy(smooth(ops.convert_to_tensor(c)))
    assert np.abs(expected).max() > 0.5
    np.testing.assert_allclose(ops.convert_to_numpy(u), expected, atol=1e-5)


def test_the_ncc_window_covers_the_same_image_extent_on_any_grid(pairs):
    """`window` counts image voxels: on a grid twice coarser (the authors' 3D model's
    80x96x112 field for 160x192x224 scans) NCC's window is the nearest odd half."""
    assert instance.grid_window(9, (160, 192, 224), (80, 96, 112)) == [5, 5, 5]
    assert instance.grid_window(49, (160, 192, 224), (80, 96, 112)) == [25, 25, 25]
    assert instance.grid_window(9, (48, 48), (48, 48)) == [9, 9]
    assert instance.grid_window(21, (48, 48), (16, 16)) == [7, 7]  # 6 voxels: rounded up
    # never below 3 voxels, where NCC would have no variance and nothing would move
    assert instance.grid_window(5, (48, 40), (16, 10)) == [3, 3]
    model = tiny_model(int_resolution=2)  # a 24x24 field for 48x48 images
    instance.optimise(model, *pairs, instance.InstanceConfig(steps=1, window=9))
    windows = [loss.win for optimiser, *_ in model._instance_optimisers.values()
               for loss in optimiser.loss if isinstance(loss, losses.NCC)]
    assert windows == [[5, 5]]


def test_instance_losses_are_the_package_losses():
    """The objective is vxm_tf.losses' NCC (the fixed images' window sums computed once
    per pair: the same value and gradient) and Grad."""
    model = tiny_model()
    optimiser, _, target, _ = instance._optimiser(
        model, (2, 24, 24, 2), instance.InstanceConfig(5, similarity="ncc"), 0, [5, 5])
    ncc, grad = optimiser.loss
    assert isinstance(ncc, losses.NCC) and type(grad) is losses.Grad
    rng = np.random.default_rng(0)
    fixed, moved = (rng.random((2, 24, 24, 1)).astype("float32") for _ in range(2))
    reference = losses.NCC(win=[5, 5])
    fixed_sums = target(fixed)

    def value_and_gradient(loss, y_true):
        def total(x):
            return ops.sum(loss(y_true, x))
        if keras.backend.backend() == "jax":
            import jax
            value, grad = jax.value_and_grad(total)(ops.convert_to_tensor(moved))
            return np.asarray(value), np.asarray(grad)
        import tensorflow as tf
        x = tf.constant(moved)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = total(x)
        return value.numpy(), tape.gradient(value, x).numpy()
    for got, want in zip(value_and_gradient(ncc, fixed_sums),
                         value_and_gradient(reference, fixed)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_settings_flag_reads_the_file_for_the_model(tmp_path):
    """`--instance_settings` gives the file's settings with `--instance_steps`; without it
    the individual flags make the config."""
    from absl import flags
    chosen = instance.InstanceConfig(lr=2.0, window=5, reg_weight=0.5)
    instance.save_settings(tmp_path / "s.json", chosen, model=str(tmp_path / "m.h5"))
    fv = flags.FlagValues()
    instance.define_flags(fv)
    flags.DEFINE_string("model", None, "model", flag_values=fv)
    fv(["prog", f"--instance_settings={tmp_path}/s.json", "--instance_steps=7",
        f"--model={tmp_path}/m.h5"])
    assert instance.config_from_flags(fv) == dataclasses.replace(chosen, steps=7)
    # without --instance_steps: the step count the settings were chosen with (not 0,
    # which would silently be the network alone), or an error naming the flag
    instance.save_settings(tmp_path / "s.json", chosen, model=str(tmp_path / "m.h5"),
                           chosen_with_steps=15)
    fv.unparse_flags()
    fv(["prog", f"--instance_settings={tmp_path}/s.json", f"--model={tmp_path}/m.h5"])
    assert instance.config_from_flags(fv) == dataclasses.replace(chosen, steps=15)
    instance.save_settings(tmp_path / "s.json", chosen)
    with pytest.raises(ValueError, match="s.json: no step count recorded "
                                         r"\(chosen_with_steps\): give --instance_steps"):
        instance.config_from_flags(fv)
    fv = flags.FlagValues()
    instance.define_flags(fv)
    flags.DEFINE_string("model", None, "model", flag_values=fv)
    fv(["prog", "--instance_steps=3", "--instance_window=13", "--instance_lr=0.5"])
    assert instance.config_from_flags(fv) == instance.InstanceConfig(3, lr=0.5, window=13)


def test_settings_file_round_trip_and_errors(tmp_path):
    chosen = instance.InstanceConfig(steps=50, lr=0.5, reg_weight=4.0, smoothing=1,
                                     space="displacement")
    path = tmp_path / "sweep.json"
    instance.save_settings(path, chosen, val_dice=0.78)
    loaded = instance.load_settings(path, steps=10)
    assert loaded == instance.InstanceConfig(steps=10, lr=0.5, reg_weight=4.0, smoothing=1,
                                             space="displacement")
    with pytest.raises(ValueError, match="cannot read"):
        instance.load_settings(tmp_path / "absent.json", 10)
    # settings recorded as another model's choice are refused for this one
    mine = tmp_path / "mine.json"
    instance.save_settings(mine, chosen, model=str(tmp_path / "a" / "best.keras"))
    assert instance.load_settings(mine, 10, tmp_path / "a" / ".." / "a" / "best.keras") == loaded
    with pytest.raises(ValueError, match=r"mine.json: instance settings chosen for .*a/best"
                                         r"\.keras, not .*b/best\.keras"):
        instance.load_settings(mine, 10, tmp_path / "b" / "best.keras")
    # the grid and window round-trip; a file written before they existed means the defaults
    coarse = instance.InstanceConfig(steps=20, window=3, resolution=2,
                                     gradient="straight-through")
    instance.save_settings(tmp_path / "coarse.json", coarse)
    assert instance.load_settings(tmp_path / "coarse.json", 20) == coarse
    older = {k: v for k, v in json.loads(path.read_text()).items()
             if k not in ("window", "resolution", "gradient")}
    (tmp_path / "older.json").write_text(json.dumps(older))
    assert instance.load_settings(tmp_path / "older.json", steps=10) == loaded
    (tmp_path / "bad.json").write_text('{"lr": 0.3}')
    with pytest.raises(ValueError, match="bad.json: instance settings lack similarity"):
        instance.load_settings(tmp_path / "bad.json", 10)
    (tmp_path / "neg.json").write_text(path.read_text().replace('"lr": 0.5', '"lr": -1'))
    with pytest.raises(ValueError, match="neg.json: --instance_lr must be positive"):
        instance.load_settings(tmp_path / "neg.json", 10)


def test_settings_in_words_name_how_the_correction_acts():
    composed = instance.InstanceConfig().describe()
    assert "composed after the network's deformation" in composed
    assert f"{instance.COMPOSED_SQUARINGS} squarings" in composed and "lr 1" in composed
    assert "to the network's velocity" in instance.InstanceConfig(space="velocity").describe()
    assert "window 5" in instance.InstanceConfig(window=5).describe()
    assert "straight-through" not in composed
    assert "differentiated as the identity (straight-through)" in instance.InstanceConfig(
        gradient="straight-through").describe()


def test_settings_follow_the_weights_not_the_path(tmp_path, monkeypatch):
    """A settings file names its model by the weights' sha256: a copy elsewhere (or the
    same file from another working folder) is the same model; other weights are not."""
    chosen = instance.InstanceConfig(steps=5, lr=0.5)
    (tmp_path / "a.keras").write_bytes(b"weights A")
    monkeypatch.chdir(tmp_path)
    instance.save_settings(tmp_path / "s.json", chosen, model="a.keras")  # relative
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "copy.keras").write_bytes(b"weights A")
    (elsewhere / "b.keras").write_bytes(b"weights B")
    monkeypatch.chdir(elsewhere)
    assert instance.load_settings(tmp_path / "s.json", 5, "copy.keras") == chosen
    assert instance.load_settings(tmp_path / "s.json", 5, tmp_path / "a.keras") == chosen
    with pytest.raises(ValueError, match="instance settings chosen for a.keras, not b.keras"):
        instance.load_settings(tmp_path / "s.json", 5, "b.keras")


def test_settings_follow_the_weights_through_another_file(tmp_path):
    """Settings chosen for one model file are taken for another file of the same weights
    (a converted copy: other bytes) and refused for other weights."""
    from vxm_tf import networks
    keras.utils.set_random_seed(0)
    model = networks.VxmDense((16, 16), nb_unet_features=[[4, 4], [4, 4, 4]], int_steps=2)
    networks.save_model(model, tmp_path / "a.keras")
    chosen = instance.InstanceConfig(steps=5, lr=0.5)
    instance.save_settings(tmp_path / "s.json", chosen, model=str(tmp_path / "a.keras"))
    assert "weights_sha256" in json.loads((tmp_path / "s.json").read_text())
    # the same weights in a model of another name: a file of other bytes
    copy = networks.VxmDense((16, 16), nb_unet_features=[[4, 4], [4, 4, 4]], int_steps=2,
                             name="renamed")
    copy.set_weights(model.get_weights())
    networks.save_model(copy, tmp_path / "converted.keras")
    assert (tmp_path / "converted.keras").read_bytes() != (tmp_path / "a.keras").read_bytes()
    assert instance.load_settings(tmp_path / "s.json", 5, tmp_path / "converted.keras") == chosen
    other = networks.VxmDense((16, 16), nb_unet_features=[[4, 4], [4, 4, 4]], int_steps=2)
    networks.save_model(other, tmp_path / "other.keras")
    with pytest.raises(ValueError, match="instance settings chosen for .*a.keras, not "):
        instance.load_settings(tmp_path / "s.json", 5, tmp_path / "other.keras")

import keras
import numpy as np
import pytest
from scipy import ndimage

from vxm_tf import losses


def image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 1.5).astype("float32")[None, ..., None]


def numpy_ncc(a, b, win):
    """Squared local correlation by its definition: box sums over a zero-padded window."""
    def box(x):
        return ndimage.uniform_filter(x, size=win, mode="constant") * win ** x.ndim
    a, b = a.astype("float64"), b.astype("float64")
    n = win ** a.ndim
    sa, sb = box(a), box(b)
    cross = box(a * b) - sa * sb / n
    var_a = box(a * a) - sa * sa / n
    var_b = box(b * b) - sb * sb / n
    return np.mean(np.maximum(cross, 1e-5) ** 2 / (np.maximum(var_a, 1e-5)
                                                   * np.maximum(var_b, 1e-5)))


@pytest.mark.parametrize("shape", [(40, 32), (20, 16, 18)])
def test_ncc_matches_its_definition(shape):
    a, b = image(shape, 0), image(shape, 1)
    expected = -numpy_ncc(a[0, ..., 0], 0.6 * a[0, ..., 0] + 0.4 * b[0, ..., 0], 5)
    got = float(losses.NCC(win=5)(a, 0.6 * a + 0.4 * b))
    assert got == pytest.approx(expected, rel=1e-4)


def test_ncc_compiled_by_xla_has_the_same_value_and_gradient():
    """Compiled by XLA, the loss still matches its definition and the gradient the
    graph-mode one."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares TensorFlow's graph mode with its XLA compilation")
    import tensorflow as tf
    a, b = image((20, 16, 18), 0), image((20, 16, 18), 1)

    def value_and_gradient(jit):
        @tf.function(jit_compile=jit)
        def run(moved):
            with tf.GradientTape() as tape:
                tape.watch(moved)
                loss = losses.NCC(win=5)(a, moved)
            return loss, tape.gradient(loss, moved)
        return [np.asarray(t) for t in run(tf.constant(b))]

    (graph_loss, graph_grad), (xla_loss, xla_grad) = (value_and_gradient(False),
                                                      value_and_gradient(True))
    assert float(xla_loss) == pytest.approx(-numpy_ncc(a[0, ..., 0], b[0, ..., 0], 5),
                                            rel=1e-4)
    assert float(xla_loss) == pytest.approx(float(graph_loss), rel=1e-5)
    # running sums round differently in the two compilations
    np.testing.assert_allclose(xla_grad, graph_grad, rtol=1e-2,
                               atol=1e-3 * np.abs(graph_grad).max())


def test_ncc_ignores_brightness_and_contrast_but_mse_does_not():
    a = image((48, 40))
    brighter = 1.7 * a + 0.2
    assert float(losses.NCC()(a, brighter)) == pytest.approx(-1.0, abs=1e-3)
    assert float(losses.NCC()(a, image((48, 40), 5))) > -0.5
    assert float(losses.MSE()(a, brighter)) > 0.1


def test_mse_is_the_mean_squared_difference_over_sigma_squared():
    a, b = image((16, 20), 0), image((16, 20), 1)
    expected = np.mean((a - b) ** 2) / 0.25
    assert float(losses.MSE(image_sigma=0.5)(a, b)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("ndims", [2, 3])
def test_grad_of_a_linear_field(ndims):
    """u(x) = c * x0 along axis 0: forward differences are c on axis 0, 0 elsewhere."""
    shape = (12, 10, 8)[:ndims]
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    field = np.zeros((1, *shape, ndims), "float32")
    field[..., 0] = 0.3 * grid[0]
    l2 = float(losses.Grad("l2")(np.zeros_like(field), field))
    l1 = float(losses.Grad("l1", loss_mult=2)(np.zeros_like(field), field))
    # each axis's mean runs over all ndims components: 1 of them is c, the rest 0
    assert l2 == pytest.approx(0.3 ** 2 / ndims / ndims, rel=1e-5)
    assert l1 == pytest.approx(2 * 0.3 / ndims / ndims, rel=1e-5)


def test_grad_is_zero_for_a_translation():
    field = np.full((1, 10, 10, 2), 2.5, "float32")
    assert float(losses.Grad("l2")(np.zeros_like(field), field)) == 0.0


def test_dice_of_identical_and_disjoint_maps():
    onehot = np.eye(3, dtype="float32")[np.random.default_rng(0).integers(0, 3, (1, 8, 8))]
    assert float(losses.Dice()(onehot, onehot)) == pytest.approx(-1.0)
    disjoint = onehot[..., [1, 2, 0]]
    assert float(losses.Dice()(onehot, disjoint)) == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_is_minus_the_hand_counted_dice_of_partial_overlaps():
    """Two labels drawn by hand: label 1 a 4x4 square against the same square moved by one
    column (overlap 12 of 16 + 16 voxels), label 2 a 2x2 square against a 2x4 rectangle
    containing it (4 of 4 + 8)."""
    true, pred = np.zeros((1, 10, 10, 2), "float32"), np.zeros((1, 10, 10, 2), "float32")
    true[0, 1:5, 1:5, 0], pred[0, 1:5, 2:6, 0] = 1, 1
    true[0, 6:8, 6:8, 1], pred[0, 6:8, 4:8, 1] = 1, 1
    by_hand = np.mean([2 * 12 / (16 + 16), 2 * 4 / (4 + 8)])
    assert float(losses.Dice()(true, pred)) == pytest.approx(-by_hand, rel=1e-6)
    seg = np.zeros((1, 10, 10, 1), "int32")
    seg[0, 1:5, 1:5, 0], seg[0, 6:8, 6:8, 0] = 4, 9  # the same maps as label ids
    assert float(losses.Dice([4, 9])(seg, pred)) == pytest.approx(-by_hand, rel=1e-6)


def test_dice_of_label_ids_one_hot_encodes_the_listed_labels():
    seg = np.random.default_rng(1).integers(0, 4, (2, 8, 8, 1))
    onehot = np.eye(4, dtype="float32")[seg[..., 0]]
    labels = [3, 1]  # channel order follows the list; label 2 and background ignored
    pred = onehot[..., labels]
    assert float(losses.Dice(labels)(seg, pred)) == pytest.approx(-1.0)
    assert float(losses.Dice(labels)(seg, onehot[..., [1, 3]])) == pytest.approx(
        float(losses.Dice()(onehot[..., labels], onehot[..., [1, 3]])), abs=1e-6)
    assert float(losses.Dice(labels)(seg, onehot[..., [2, 0]])) == pytest.approx(0, abs=1e-6)


def test_hybrid_is_the_weighted_sum():
    a, b = image((24, 24), 0), image((24, 24), 1)
    hybrid = float(losses.Hybrid(ncc_weight=0.5, mse_weight=2.0, win=7)(a, b))
    expected = 0.5 * float(losses.NCC(win=7)(a, b)) + 2.0 * float(losses.MSE()(a, b))
    assert hybrid == pytest.approx(expected, rel=1e-5)


def test_losses_compute_in_float32_from_half_precision_inputs():
    a = keras.ops.cast(image((32, 32), 0), "float16")
    b = keras.ops.cast(image((32, 32), 1), "float16")
    for loss in (losses.NCC(), losses.MSE(), losses.Hybrid()):
        value = loss(a, b)
        assert value.dtype == "float32" and np.isfinite(float(value))


@pytest.mark.parametrize("loss", [losses.NCC(win=[5, 7]), losses.MSE(image_sigma=0.1),
                                  losses.Grad("l2", loss_mult=2), losses.Dice(),
                                  losses.Dice(labels=[1, 5, 3]),
                                  losses.Hybrid(ncc_weight=0.3, mse_weight=3.0, win=5)])
def test_losses_serialise(loss):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize("make, message", [
    (lambda: losses.NCC(win=0), "0"),
    (lambda: losses.Grad("l3"), "l3"),
    (lambda: losses.MSE(image_sigma=-1), "-1"),
    (lambda: losses.Hybrid(ncc_weight=-1), "-1"),
])
def test_bad_loss_arguments_quote_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_ncc_window_of_wrong_length_names_it():
    with pytest.raises(ValueError, match=r"\[5, 5, 5\].*2D"):
        losses.NCC(win=[5, 5, 5])(image((16, 16)), image((16, 16)))


def test_ncc_of_a_flat_background_with_an_offset_stays_a_correlation():
    """A flat, non-zero background (an intensity offset, as intensity augmentation makes)
    has no local variance: its squared correlation is clamped there, at most 1, as with a
    zero background, however far into the image the window lies. (Running sums, whose
    rounding grows with everything before the window, gave values up to 4 and above.)"""
    rng = np.random.default_rng(0)
    base = np.zeros((1, 160, 192, 1), np.float32)
    base[:, 40:120, 50:140] = rng.uniform(0.2, 1, (1, 80, 90, 1))
    a, b = base + 0.17, np.roll(base, 3, axis=1) * 1.3 - 0.11
    cc = keras.ops.convert_to_numpy(losses.NCC(win=9).ncc(a, b))
    assert cc.max() <= 1 + 1e-3
    assert np.abs(cc[0, 5:30, 5:40] - 1).max() < 1e-3  # flat in both, inside: clamped to 1

import keras
import numpy as np
import pytest
from scipy import ndimage

from vxm_tf import layers, ops


def smooth_field(shape, amplitude, seed=0):
    """A smooth random displacement (1, *shape, D) in voxels, max about `amplitude`."""
    rng = np.random.default_rng(seed)
    field = rng.normal(size=(len(shape), *shape))
    field = np.stack([ndimage.gaussian_filter(f, sigma=3) for f in field])
    field *= amplitude / np.abs(field).max()
    return np.moveaxis(field, 0, -1)[None].astype("float32")


def scipy_warp(image, disp, order):
    """Reference: map_coordinates at x + disp(x), edge voxels repeated outside."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in image.shape], indexing="ij"))
    coords = grid + np.moveaxis(disp, -1, 0)
    return ndimage.map_coordinates(image, coords, order=order, mode="nearest")


@pytest.mark.parametrize("shape", [(40, 36), (20, 18, 16)])
@pytest.mark.parametrize("interp_method, order", [("linear", 1), ("nearest", 0)])
def test_transformer_equals_map_coordinates(shape, interp_method, order):
    rng = np.random.default_rng(1)
    image = ndimage.gaussian_filter(rng.random(shape), 1).astype("float32")
    disp = smooth_field(shape, amplitude=4.0)
    warped = layers.SpatialTransformer(interp_method=interp_method)([image[None, ..., None],
                                                                     disp])
    expected = scipy_warp(image, disp[0], order)
    np.testing.assert_allclose(np.asarray(warped)[0, ..., 0], expected, atol=1e-5)


def test_transformer_warps_every_channel_and_batch_item_by_its_own_field():
    rng = np.random.default_rng(2)
    images = rng.random((2, 24, 20, 3)).astype("float32")
    disp = np.concatenate([smooth_field((24, 20), 3, seed=s) for s in (0, 1)])
    warped = np.asarray(layers.SpatialTransformer()([images, disp]))
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(warped[b, ..., c], scipy_warp(images[b, ..., c],
                                                                     disp[b], 1), atol=1e-5)


def test_transformer_fill_value_outside_and_xy_indexing():
    image = np.arange(20, dtype="float32").reshape(1, 4, 5, 1)
    shift_down = np.zeros((1, 4, 5, 2), "float32")
    shift_down[..., 0] = 2.0  # read two rows further down
    filled = np.asarray(layers.SpatialTransformer(fill_value=-1)([image, shift_down]))
    np.testing.assert_array_equal(filled[0, :2, :, 0], image[0, 2:, :, 0])
    np.testing.assert_array_equal(filled[0, 2:, :, 0], -1)
    edge = np.asarray(layers.SpatialTransformer()([image, shift_down]))
    np.testing.assert_array_equal(edge[0, 2:, :, 0], np.repeat(image[0, 3:, :, 0], 2, 0))
    xy = np.asarray(layers.SpatialTransformer(indexing="xy")([image, shift_down[..., ::-1]]))
    np.testing.assert_array_equal(xy, edge)


def test_nearest_warp_never_invents_labels():
    rng = np.random.default_rng(3)
    labels = rng.choice([0, 2, 7, 41], size=(1, 20, 18, 16, 1)).astype("float32")
    disp = smooth_field((20, 18, 16), amplitude=5.0) + rng.normal(0, 0.3, (1, 20, 18, 16, 3))
    warped = layers.SpatialTransformer(interp_method="nearest")([labels, disp.astype("float32")])
    assert set(np.unique(warped)) <= {0, 2, 7, 41}


@pytest.mark.parametrize("shape", [(32, 24), (16, 16, 12)])
def test_zero_velocity_integrates_to_identity(shape):
    zero = np.zeros((1, *shape, len(shape)), "float32")
    np.testing.assert_array_equal(np.asarray(layers.VecInt(int_steps=7)(zero)), zero)


@pytest.mark.parametrize("shape", [(48, 40), (24, 24, 20)])
def test_exp_v_composed_with_exp_minus_v_is_near_identity(shape):
    vel = smooth_field(shape, amplitude=3.0)
    forward = layers.VecInt(int_steps=7)(vel)
    backward = layers.VecInt(int_steps=7)(-vel)
    # (phi_v o phi_-v)(x) = x + b(x) + f(x + b(x))
    composed = np.asarray(backward + ops.transform(forward, backward))
    interior = (slice(None),) + (slice(6, -6),) * len(shape)  # fields reach 3 voxels outside
    assert np.abs(forward).max() > 2.0
    error = np.abs(composed[interior])
    assert error.max() < 0.05 * np.abs(forward).max()
    assert error.mean() < 0.01 * np.abs(forward).max()


def test_integration_of_a_constant_field_is_a_translation():
    vel = np.zeros((1, 32, 32, 2), "float32")
    vel[..., 1] = 1.5
    disp = np.asarray(layers.VecInt(int_steps=5)(vel))
    np.testing.assert_allclose(disp, vel, atol=1e-5)


def test_rescale_transform_resizes_and_scales_vectors():
    vel = np.zeros((1, 8, 10, 2), "float32")
    vel[..., 0] = 1.0
    vel[..., 1] = -0.5
    up = np.asarray(layers.RescaleTransform(2.0)(vel))
    assert up.shape == (1, 16, 20, 2)
    np.testing.assert_allclose(up[..., 0], 2.0)
    np.testing.assert_allclose(up[..., 1], -1.0)
    down = np.asarray(layers.RescaleTransform(0.5)(up))
    np.testing.assert_allclose(down, vel, atol=1e-6)


def test_resize_aligns_corners_like_the_original():
    ramp = np.arange(5, dtype="float32").reshape(1, 5, 1)
    resized = np.asarray(ops.resize(ramp, 2.0))[0, :, 0]
    np.testing.assert_allclose(resized, np.linspace(0, 4, 10), atol=1e-6)


@pytest.mark.parametrize("layer", [
    layers.SpatialTransformer(interp_method="nearest", fill_value=0.5),
    layers.VecInt(int_steps=4),
    layers.RescaleTransform(0.5, interp_method="nearest"),
    layers.Negate(),
])
def test_layers_serialise(layer):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == layer.get_config()


def test_layers_stay_float32_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")
    image = keras.ops.cast(np.random.rand(1, 16, 16, 1), "bfloat16")
    disp = keras.ops.cast(smooth_field((16, 16), 2.0), "bfloat16")
    assert layers.SpatialTransformer()([image, disp]).dtype == "float32"
    assert layers.VecInt()(disp).dtype == "float32"
    assert layers.RescaleTransform(2)(disp).dtype == "float32"


@pytest.mark.parametrize("make, message", [
    (lambda: layers.SpatialTransformer(interp_method="cubic"), "cubic"),
    (lambda: layers.SpatialTransformer(indexing="yx"), "yx"),
    (lambda: layers.VecInt(int_steps=-1), "-1"),
    (lambda: layers.VecInt(method="ode"), "ode"),
    (lambda: layers.RescaleTransform(0), "0"),
])
def test_bad_arguments_quote_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_transformer_rejects_field_of_wrong_dimension():
    with pytest.raises(ValueError, match=r"\(B, \*spatial, 2\).*\(1, 8, 8, 3\)"):
        layers.SpatialTransformer()([np.zeros((1, 8, 8, 1), "float32"),
                                     np.zeros((1, 8, 8, 3), "float32")])


def test_nan_displacement_gives_nan_not_an_out_of_bounds_read():
    image = np.random.rand(1, 8, 8, 1).astype("float32")
    disp = np.zeros((1, 8, 8, 2), "float32")
    disp[0, 2, 3] = np.nan
    linear = np.asarray(layers.SpatialTransformer()([image, disp]))
    assert np.isnan(linear[0, 2, 3, 0]) and np.isfinite(np.delete(linear.ravel(), 2 * 8 + 3)).all()
    nearest = np.asarray(layers.SpatialTransformer(interp_method="nearest")([image, disp]))
    assert np.isfinite(nearest).all()

import keras
import numpy as np
import pytest
from scipy import ndimage

from vxm_tf import losses, networks, views
from vxm_tf import ops as vxm_ops

SMALL = [[8, 8, 8], [8, 8, 8, 8, 8]]


def blob_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 2).astype("float32")


@pytest.mark.parametrize("inshape, int_resolution", [((32, 24), 2), ((16, 16, 8), 1)])
def test_vxmdense_outputs(inshape, int_resolution):
    model = networks.VxmDense(inshape, nb_unet_features=SMALL, int_resolution=int_resolution)
    moved, flow = [tuple(o.shape[1:]) for o in model.outputs]
    assert moved == (*inshape, 1)
    assert flow == (*[n // int_resolution for n in inshape], len(inshape))
    pair = [np.random.rand(2, *inshape, 1).astype("float32") for _ in range(2)]
    assert model.register(*pair).shape == (2, *inshape, len(inshape))


def test_bidir_adds_the_warped_fixed_image():
    model = networks.VxmDense((16, 16), nb_unet_features=SMALL, bidir=True)
    assert len(model.outputs) == 3
    assert tuple(model.outputs[1].shape[1:]) == (16, 16, 1)


def test_clean_target_view_warps_the_clean_scan_by_the_field_of_the_augmented_pair():
    model = networks.VxmDense((24, 16), nb_unet_features=SMALL)
    # a visible field: random weights in the flow head
    head = model.get_layer("vxm_dense_flow")
    head.kernel.assign(np.random.default_rng(0).normal(0, 0.05, head.kernel.shape))
    view = views.clean_target_model(model)
    assert view.output_names == model.output_names
    moving, fixed, clean = [blob_image((1, 24, 16, 1), seed) for seed in range(3)]
    moved_clean, flow = view.predict_on_batch([moving, fixed, clean])
    warp = model.register(moving, fixed)
    assert np.abs(warp).max() > 0.1
    expected = vxm_ops.transform(clean, warp)
    np.testing.assert_allclose(moved_clean, keras.ops.convert_to_numpy(expected), atol=1e-5)
    np.testing.assert_allclose(flow, model.predict_on_batch([moving, fixed])[1], atol=1e-6)
    with pytest.raises(ValueError, match="unidirectional"):
        views.clean_target_model(networks.VxmDense((16, 16), nb_unet_features=SMALL,
                                                      bidir=True))


def test_default_unet_matches_the_original_layout():
    model = networks.VxmDense((32, 32))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [16, 32, 32, 32, 32, 32, 32, 32, 32, 16, 16, 2]
    assert model.get_layer("vxm_dense_flow").kernel.shape == (3, 3, 16, 2)


def test_integer_features_grow_per_level():
    encoder, decoder = networks.unet_features(8, nb_levels=3, feat_mult=2, nb_conv_per_level=2)
    assert encoder == [8, 8, 16, 16]
    assert decoder == [32, 32, 16, 16, 8, 8]
    unet = networks.Unet((16, 16, 2), nb_features=8, nb_levels=3, feat_mult=2)
    assert tuple(unet.output.shape[1:]) == (16, 16, 8)


def test_keras_file_round_trip_gives_identical_outputs(tmp_path):
    model = networks.VxmDense((16, 16, 16), nb_unet_features=SMALL, int_steps=5)
    kernel, bias = model.get_layer("vxm_dense_flow").get_weights()
    model.get_layer("vxm_dense_flow").set_weights([kernel * 1e4, bias])
    pair = [np.random.rand(1, 16, 16, 16, 1).astype("float32") for _ in range(2)]
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, networks.VxmDense)
    assert restored.get_config() == model.get_config()
    for a, b in zip(model.predict_on_batch(pair), restored.predict_on_batch(pair)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.register(*pair), restored.register(*pair))


def test_apply_transform_with_nearest_keeps_label_values():
    model = networks.VxmDense((32, 32), nb_unet_features=SMALL)
    kernel, bias = model.get_layer("vxm_dense_flow").get_weights()
    model.get_layer("vxm_dense_flow").set_weights([kernel * 1e5, bias])
    labels = np.random.default_rng(0).choice([0, 3, 9], (1, 32, 32, 1)).astype("float32")
    moving, fixed = blob_image((1, 32, 32, 1), 0), blob_image((1, 32, 32, 1), 1)
    warped = model.apply_transform(moving, fixed, labels, interp_method="nearest")
    assert set(np.unique(warped)) <= {0, 3, 9}
    assert not np.array_equal(warped, labels)


def test_training_recovers_a_known_shift():
    """fixed = moving shifted 2 voxels down; a short fit finds a displacement near +2."""
    moving = blob_image((40, 40), 3)
    fixed = np.roll(moving, 2, axis=0)
    model = networks.VxmDense((40, 40), nb_unet_features=SMALL, int_resolution=1)
    model.compile(keras.optimizers.Adam(3e-3), loss=[losses.MSE(), losses.Grad("l2")],
                  loss_weights=[1.0, 0.01])
    inputs = [moving[None, ..., None], fixed[None, ..., None]]
    targets = [fixed[None, ..., None], np.zeros((1, 40, 40, 2), "float32")]
    before = model.evaluate(inputs, targets, verbose=0)[1]
    model.fit(inputs, targets, epochs=150, verbose=0)
    after = model.evaluate(inputs, targets, verbose=0)[1]
    warp = model.register(*inputs)[0, 8:-8, 8:-8]
    assert after < 0.2 * before
    assert np.median(warp[..., 0]) == pytest.approx(-2.0, abs=0.5)
    assert np.median(np.abs(warp[..., 1])) < 0.5


def test_mixed_precision_keeps_the_transformer_in_float32():
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = networks.VxmDense((16, 16), nb_unet_features=SMALL)
    assert model.get_layer("vxm_dense_unet_enc_conv_0_0").compute_dtype == "bfloat16"
    moved, flow = model.predict_on_batch([np.random.rand(1, 16, 16, 1)] * 2)
    assert moved.dtype == np.float32 and flow.dtype == np.float32


@pytest.mark.parametrize("inshape, message", [
    ((64,), r"2D or 3D.*\(64,\)"),
    ((8, 8, 8, 8), r"2D or 3D.*\(8, 8, 8, 8\)"),
    ((30, 32), r"\(30, 32\) must be divisible by 16"),
])
def test_bad_inshape_names_the_shape(inshape, message):
    with pytest.raises(ValueError, match=message):
        networks.VxmDense(inshape)


def test_register_rejects_mismatched_pairs_and_channels():
    model = networks.VxmDense((16, 16), nb_unet_features=SMALL)
    one = np.zeros((1, 16, 16, 1), "float32")
    with pytest.raises(ValueError, match=r"moving \(1, 16, 16, 1\) and fixed \(1, 32, 32, 1\)"):
        model.register(one, np.zeros((1, 32, 32, 1), "float32"))
    with pytest.raises(ValueError, match=r"moving \(1, 16, 16, 2\)"):
        model.register(np.zeros((1, 16, 16, 2), "float32"), one)


def test_bad_feature_arguments():
    with pytest.raises(ValueError, match="nb_unet_levels"):
        networks.VxmDense((16, 16), nb_unet_features=16)
    with pytest.raises(ValueError, match="nb_unet_levels"):
        networks.VxmDense((16, 16), nb_unet_features=SMALL, nb_unet_levels=3)


def test_load_rejects_files_that_are_not_models(tmp_path):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not hdf5")
    with pytest.raises(ValueError, match="notes.h5"):
        networks.VxmDense.load(bogus)

"""Parity with the original VoxelMorph (voxelmorph 0.2), run as a subprocess oracle.

Runs when the `reference` extra is installed (`make install` installs it; CI does).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from vxm_tf import hypermorph, layers, losses, networks, original, templates

pytestmark = pytest.mark.reference

HAVE_REFERENCE = all(importlib.util.find_spec(m) for m in ("voxelmorph", "neurite", "tf_keras"))
SHAPES = {2: (24, 20), 3: (12, 16, 10)}
RTOL = 1e-5


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    inputs = {}
    for nd, shape in SHAPES.items():
        b = 2
        inputs[f"vol_{nd}d"] = rng.random((b, *shape, 3), dtype=np.float32)
        inputs[f"seg_{nd}d"] = rng.integers(0, 6, (b, *shape, 1)).astype(np.float32)
        # displacements of a few voxels, some reaching outside the image
        inputs[f"disp_{nd}d"] = rng.normal(0, 3, (b, *shape, nd)).astype(np.float32)
        inputs[f"vel_{nd}d"] = rng.normal(0, 1.5, (b, *shape, nd)).astype(np.float32)
        inputs[f"img_a_{nd}d"] = rng.random((b, *shape, 1), dtype=np.float32)
        inputs[f"img_b_{nd}d"] = (0.5 * inputs[f"img_a_{nd}d"]
                                  + 0.5 * rng.random((b, *shape, 1), dtype=np.float32))
        labels_a = rng.integers(0, 4, (b, *shape))
        labels_b = rng.integers(0, 4, (b, *shape))
        inputs[f"onehot_a_{nd}d"] = np.eye(4, dtype=np.float32)[labels_a]
        inputs[f"onehot_b_{nd}d"] = np.eye(4, dtype=np.float32)[labels_b]
    inputs["model_inshape"] = np.array([32, 48])
    inputs["model_moving"] = rng.random((2, 32, 48, 1), dtype=np.float32)
    inputs["model_fixed"] = rng.random((2, 32, 48, 1), dtype=np.float32)
    inputs["hyper_values"] = np.array([[0.2], [0.9]], dtype=np.float32)
    inputs["transform_disp"] = rng.normal(0, 3, (2, 32, 48, 2)).astype(np.float32)
    matrix = np.tile(np.eye(2, 3, dtype=np.float32), (2, 1, 1))
    inputs["transform_matrix"] = matrix + rng.normal(0, 0.05, matrix.shape).astype(np.float32)
    inputs["cond_pheno"] = np.array([[0.2, 1.0], [0.9, 0.0]], dtype=np.float32)
    return inputs


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    if not HAVE_REFERENCE:
        pytest.skip("the reference extra (voxelmorph==0.2, neurite==0.2, tf-keras) is not "
                    "installed: pip install -e '.[reference]'")
    workdir = tmp_path_factory.mktemp("oracle")
    inputs = make_inputs()
    np.savez(workdir / "inputs.npz", **inputs)
    script = Path(__file__).with_name("reference_oracle.py")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    run = subprocess.run([sys.executable, str(script), str(workdir / "inputs.npz"),
                          str(workdir / "outputs.npz"), str(workdir)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return inputs, dict(np.load(workdir / "outputs.npz")), workdir


def assert_close(actual, expected, rtol=RTOL):
    actual = np.asarray(actual)
    assert actual.shape == expected.shape
    scale = max(np.abs(expected).max(), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("nd", [2, 3])
def test_spatial_transformer_matches_original(oracle, nd):
    inputs, expected, _ = oracle
    vol, seg, disp = inputs[f"vol_{nd}d"], inputs[f"seg_{nd}d"], inputs[f"disp_{nd}d"]
    assert_close(layers.SpatialTransformer()([vol, disp]), expected[f"linear_{nd}d"])
    nearest = layers.SpatialTransformer(interp_method="nearest")([seg, disp])
    np.testing.assert_array_equal(np.asarray(nearest), expected[f"nearest_{nd}d"])
    filled = layers.SpatialTransformer(fill_value=-1.0)([vol, disp])
    assert_close(filled, expected[f"fill_{nd}d"])


@pytest.mark.parametrize("nd", [2, 3])
def test_vecint_and_rescale_match_original(oracle, nd):
    inputs, expected, _ = oracle
    vel = inputs[f"vel_{nd}d"]
    assert_close(layers.VecInt(int_steps=7)(vel), expected[f"vecint_{nd}d"])
    assert_close(layers.RescaleTransform(0.5)(vel), expected[f"half_{nd}d"])
    assert_close(layers.RescaleTransform(2.0)(vel), expected[f"double_{nd}d"])


@pytest.mark.parametrize("nd", [2, 3])
def test_losses_match_original(oracle, nd):
    inputs, expected, _ = oracle
    a, b, vel = inputs[f"img_a_{nd}d"], inputs[f"img_b_{nd}d"], inputs[f"vel_{nd}d"]
    assert_close(losses.NCC().loss(a, b), expected[f"ncc_{nd}d"])
    assert_close(losses.NCC(win=5).loss(a, b), expected[f"ncc5_{nd}d"])
    assert_close(np.mean(losses.MSE().loss(a, b)), expected[f"mse_{nd}d"])
    assert_close(losses.Grad("l1").loss(None, vel), expected[f"grad_l1_{nd}d"])
    assert_close(losses.Grad("l2", loss_mult=2).loss(None, vel), expected[f"grad_l2_{nd}d"])
    dice = losses.Dice().loss(inputs[f"onehot_a_{nd}d"], inputs[f"onehot_b_{nd}d"])
    assert_close(np.mean(dice), expected[f"dice_{nd}d"])


@pytest.mark.parametrize("filename", ["original_weights.h5", "original_model.h5"])
def test_vxmdense_loads_original_weights(oracle, filename):
    inputs, expected, workdir = oracle
    path = workdir / filename
    if filename == "original_model.h5":
        model = networks.VxmDense.load(path)
    else:
        model = networks.VxmDense(tuple(inputs["model_inshape"]), int_steps=7, int_resolution=2)
        original.load_original_weights(model, path)
    moving, fixed = inputs["model_moving"], inputs["model_fixed"]
    moved, preint = model.predict_on_batch([moving, fixed])
    assert np.abs(expected["model_warp"]).max() > 0.5, "the oracle's field should not be ~0"
    assert_close(preint, expected["model_preint"], rtol=1e-4)
    assert_close(moved, expected["model_moved"], rtol=1e-4)
    assert_close(model.register(moving, fixed), expected["model_warp"], rtol=1e-4)


def test_hypervxmdense_loads_original_model(oracle):
    """HyperMorph: the original's saved HyperVxmDense (hyper-convolutions, per-sample
    hyperparameters) gives the same outputs in vxm_tf, and at a fixed value as well."""
    inputs, expected, workdir = oracle
    model = hypermorph.HyperVxmDense.load(workdir / "original_hyper.h5")
    assert isinstance(model, hypermorph.HyperVxmDense) and model.nb_hyp_units == 16
    moving, fixed, hyp = inputs["model_moving"], inputs["model_fixed"], inputs["hyper_values"]
    moved, preint = model.predict_on_batch([moving, fixed, hyp])
    assert np.abs(expected["hyper_warp"]).max() > 0.5, "the oracle's field should not be ~0"
    # the two samples' hyperparameters give different fields
    assert np.abs(expected["hyper_preint"][0] - expected["hyper_preint"][1]).max() > 1e-3
    assert_close(preint, expected["hyper_preint"])
    assert_close(moved, expected["hyper_moved"])
    warp = model.get_registration_model().predict_on_batch([moving, fixed, hyp])
    assert_close(warp, expected["hyper_warp"])
    # every loader takes the original's file: VxmDense.load, and the commands' loader
    assert isinstance(networks.VxmDense.load(workdir / "original_hyper.h5"),
                      hypermorph.HyperVxmDense)
    assert_close(hypermorph.load(str(workdir / "original_hyper.h5"), 0.9).register(
        moving[1:], fixed[1:]), expected["hyper_warp"][1:])
    fixed_model = model.at_lambda(0.9)
    assert_close(fixed_model.register(moving[1:], fixed[1:]), expected["hyper_warp"][1:])


def test_template_creation_loads_original_model(oracle):
    """The original's saved TemplateCreation (template, registration network, mean stream)
    gives the same four outputs in vxm_tf, and its registration network registers alike."""
    inputs, expected, workdir = oracle
    model = templates.TemplateCreation.load(workdir / "original_template.h5")
    scans = inputs["model_moving"]
    outputs = model.predict_on_batch(scans)
    assert np.abs(expected["template_3"]).max() > 0.5, "the oracle's field should not be ~0"
    assert np.abs(expected["template_2"]).max() > 0.1, "the mean stream should not be ~0"
    for k, actual in enumerate(outputs):
        assert_close(actual, expected[f"template_{k}"])
    assert_close(model.register(scans), expected["template_3"])
    network = model.registration_network()
    atlas = np.repeat(model.get_atlas()[None, ..., None], len(scans), axis=0)
    assert_close(network.register(atlas, scans), expected["template_3"])


def test_conditional_template_creation_loads_original_model(oracle):
    """The original's saved ConditionalTemplateCreation gives the same outputs, and the
    same templates for two attribute vectors (which differ)."""
    inputs, expected, workdir = oracle
    model = templates.ConditionalTemplateCreation.load(workdir / "original_cond_template.h5")
    pheno, base, scans = inputs["cond_pheno"], inputs["model_fixed"], inputs["model_moving"]
    outputs = model.predict_on_batch([pheno, base, scans])
    assert len(outputs) == 4
    for k, actual in enumerate(outputs):
        assert_close(actual, expected[f"cond_{k}"])
    assert np.abs(expected["cond_2"]).max() > 0.5, "the oracle's field should not be ~0"
    template = expected["cond_template"]
    assert np.abs(template[0] - template[1]).max() > 1e-3, "attributes change the template"
    assert_close(model.get_template_model().predict_on_batch([pheno, base]), template)
    assert_close(model.template(pheno[:1], base[0])[0], template[0])


def test_transform_matches_original(oracle):
    inputs, expected, _ = oracle
    vol = inputs["model_fixed"]
    dense = networks.Transform(vol.shape[1:-1])
    assert_close(dense.predict_on_batch([vol, inputs["transform_disp"]]),
                 expected["transform_dense"])
    affine = networks.Transform(vol.shape[1:-1], affine=True)
    assert_close(affine.predict_on_batch([vol, inputs["transform_matrix"]]),
                 expected["transform_affine"])


def test_load_original_weights_rejects_other_architecture(oracle, tmp_path):
    _, _, workdir = oracle
    model = networks.VxmDense((32, 48), nb_unet_features=[[8, 8, 8, 8], [8, 8, 8, 8, 8, 8]])
    with pytest.raises(ValueError, match="vxm_dense_unet_enc_conv_0_0"):
        original.load_original_weights(model, workdir / "original_weights.h5")


SHARED = Path(__file__).resolve().parents[2] / "shared"
PRETRAINED = SHARED / "models" / "vxm_dense_brain_T1_3D_mse.h5"
OASIS3D = SHARED / "data" / "neurite-oasis-3d"


def test_pretrained_brain_model_matches_original_on_real_scans(tmp_path):
    """The authors' 3D model (unet_half_res, int_downsize) on the two real OASIS scans at
    160x192x224: voxelmorph 0.2 (tools/original_vxm.py) and vxm_tf give the same field
    and moved image."""
    if not HAVE_REFERENCE:
        pytest.skip("the reference extra (voxelmorph==0.2, neurite==0.2, tf-keras) is not "
                    "installed: pip install -e '.[reference]'")
    if not PRETRAINED.exists() or not OASIS3D.is_dir():
        pytest.skip(f"needs {PRETRAINED} and {OASIS3D} (../shared beside the repository)")
    from vxm_tf import io
    moving, fixed = (io.load_volume(OASIS3D / f"OASIS_OAS1_000{k}_MR1" / "aligned_norm.nii.gz")
                     .data[None] for k in (1, 2))
    np.savez(tmp_path / "pair.npz", moving=moving, fixed=fixed)
    script = Path(__file__).resolve().parents[1] / "tools" / "original_vxm.py"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    run = subprocess.run([sys.executable, str(script), str(PRETRAINED),
                          str(tmp_path / "pair.npz"), str(tmp_path / "out.npz"), "--no-warmup"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    expected = np.load(tmp_path / "out.npz")
    model = networks.VxmDense.load(PRETRAINED)
    assert model.get_config()["svf_resolution"] == 2
    assert model.get_config()["int_resolution"] == 2
    warp = model.register(moving[..., None], fixed[..., None])
    # the model's own transformer: one pass of the network, not two
    moved = keras.ops.convert_to_numpy(model.get_layer(f"{model.name}_transformer")(
        [moving[..., None], warp]))
    assert np.abs(expected["warps"]).max() > 2.0, "the original's field should move voxels"
    np.testing.assert_allclose(warp, expected["warps"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(moved[..., 0], expected["moved"], rtol=0, atol=1e-4)

"""The model code is `keras.ops` only: under JAX it gives TensorFlow's answers."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vxm_tf import networks

sys.path.insert(0, str(Path(__file__).parent))
from backend_run import compute  # noqa: E402


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed (the test extra installs it)")
def test_jax_backend_agrees_with_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    inputs = {
        "image": rng.random((2, 20, 16, 12, 2), dtype=np.float32),
        "disp": rng.normal(0, 2, (2, 20, 16, 12, 3)).astype(np.float32),
        "vel": rng.normal(0, 1, (2, 20, 16, 12, 3)).astype(np.float32),
        "moving": rng.random((1, 16, 16, 16, 1), dtype=np.float32),
        "fixed": rng.random((1, 16, 16, 16, 1), dtype=np.float32),
    }
    model = networks.VxmDense((16, 16, 16), nb_unet_features=[[8, 8, 8], [8, 8, 8, 8, 8]])
    kernel, bias = model.get_layer("vxm_dense_flow").get_weights()
    model.get_layer("vxm_dense_flow").set_weights([kernel * 2e4, bias])
    np.savez(tmp_path / "inputs.npz", **inputs)
    model.save(tmp_path / "model.keras")
    expected = compute(inputs, model)

    script = Path(__file__).with_name("backend_run.py")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "inputs.npz"),
                          str(tmp_path / "model.keras"), str(tmp_path / "jax.npz")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    got = dict(np.load(tmp_path / "jax.npz"))
    assert str(got.pop("backend")) == "jax"
    assert np.abs(expected["warp"]).max() > 0.5
    assert np.abs(expected["instance"] - expected["warp"]).max() > 0.01
    for name, value in expected.items():
        scale = max(np.abs(value).max(), 1e-6)
        # Adam's first steps are sign-like, so a gradient that is ~0 in one backend can
        # move a voxel by up to lr in the other: instance optimisation agrees less tightly
        tolerance = 2e-3 if name == "instance" else 2e-5
        np.testing.assert_allclose(got[name], value, rtol=0, atol=tolerance * scale,
                                   err_msg=name)


def _run_without_tensorflow(module, *args):
    """`python -m module args` under KERAS_BACKEND=jax in a process where importing
    TensorFlow raises."""
    blocker = Path(__file__).with_name("no_tensorflow")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(blocker), str(Path(__file__).parents[1])])}
    run = subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                         text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed (the test extra installs it)")
def test_jax_backend_trains_evaluates_and_registers_without_tensorflow(tmp_path):
    nib = pytest.importorskip("nibabel")
    blocked = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).with_name("no_tensorflow"))})
    assert blocked.returncode != 0 and "blocked" in blocked.stderr

    run_dir = tmp_path / "run"
    data = ["--dataset=synthetic", "--synthetic_shape=32,32", "--synthetic_labels=4"]
    _run_without_tensorflow("vxm_tf.train", *data, "--train=4", "--val=3", "--test=0",
                            "--epochs=2", "--steps_per_epoch=4", "--enc=8,8,8,8",
                            "--dec=8,8,8,8,8,8,8", f"--model_dir={run_dir}")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved_precision"] == "float32"
    history = (run_dir / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_dice" in history[0]
    assert not (run_dir / "tensorboard").exists()

    _run_without_tensorflow("vxm_tf.evaluate", f"--model={run_dir}/best.keras", *data,
                            "--test=3", f"--out_dir={tmp_path / 'eval'}")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["pairs"] == 6

    rng = np.random.default_rng(0)
    for name in ("moving", "fixed"):
        nib.save(nib.Nifti1Image(rng.random((32, 32)).astype(np.float32), np.eye(4)),
                 str(tmp_path / f"{name}.nii.gz"))
    _run_without_tensorflow("vxm_tf.register", f"--model={run_dir}/best.keras",
                            f"--moving={tmp_path / 'moving.nii.gz'}",
                            f"--fixed={tmp_path / 'fixed.nii.gz'}",
                            f"--moved={tmp_path / 'moved.nii.gz'}")
    assert nib.load(str(tmp_path / "moved.nii.gz")).shape[:2] == (32, 32)


JAX_MIRRORED = """
import sys, keras
from vxm_tf import configs, trainer
config = configs.Config()
config.data = configs.DataConfig(synthetic_shape=(32, 32), synthetic_labels=4, train=4,
                                 val=3, test=2)
config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]])
config.train = configs.TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2,
                                   strategy="mirrored", verbose=0, model_dir=sys.argv[1])
result = trainer.train_and_evaluate(config, log=lambda _: None)
distribution = keras.distribution.distribution()
print(type(distribution).__name__, distribution.device_mesh.devices.size,
      len(result["history"]["loss"]))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed (the test extra installs it)")
def test_jax_mirrored_is_data_parallel_over_the_local_devices(tmp_path):
    blocker = Path(__file__).with_name("no_tensorflow")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join([str(blocker), str(Path(__file__).parents[1])])}
    run = subprocess.run([sys.executable, "-c", JAX_MIRRORED, str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-3:] == ["DataParallel", "2", "1"]

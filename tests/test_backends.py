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

# JAX subprocesses on the CPU: XLA's LLVM back end unoptimised (the same operations, a
# quarter less time for these tiny models, most of whose time is compilation)
FAST_COMPILE = "--xla_backend_optimization_level=0"
JAX_ENV = {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE}


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
    env = {**os.environ, **JAX_ENV}
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
    env = {**os.environ, **JAX_ENV,
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
from vxm_tf.training import devices
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
    env = {**os.environ, **JAX_ENV,
           "XLA_FLAGS": f"--xla_force_host_platform_device_count=2 {FAST_COMPILE}",
           "PYTHONPATH": os.pathsep.join([str(blocker), str(Path(__file__).parents[1])])}
    run = subprocess.run([sys.executable, "-c", JAX_MIRRORED, str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-3:] == ["DataParallel", "2", "1"]


JAX_PROCESS = """
import sys, keras
from vxm_tf import configs, trainer
from vxm_tf.training import devices
config = configs.Config()
config.data = configs.DataConfig(synthetic_shape=(32, 32), synthetic_labels=4, train=4,
                                 val=3, test=2)
config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]])
config.train = configs.TrainConfig(epochs=3, steps_per_epoch=3, batch_size=2, lr=1e-3,
                                   strategy=sys.argv[2], verbose=0, model_dir=sys.argv[1],
                                   time_limit=float(sys.argv[3]))
result = trainer.train_and_evaluate(config, log=lambda _: None)
print("processes", devices.process_shard()[1], "epochs", len(result["history"]["loss"]),
      "val_dice", result["history"]["val_dice"][-1])
"""


def _weights(path):
    import keras

    return [np.asarray(w) for w in keras.saving.load_model(path).weights]


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed (the test extra installs it)")
def test_two_jax_processes_train_as_one_process_on_the_same_global_batch(tmp_path):
    """jax.distributed over 127.0.0.1 (gloo on CPU): each process feeds half of every
    batch of 2 pairs; both end with the weights of one process fed whole batches. Only the
    chief has a --time_limit (one epoch of three): the other process stops with it."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    blocker = Path(__file__).with_name("no_tensorflow")
    env = {**os.environ, **JAX_ENV,  # one CPU device per process
           "PYTHONPATH": os.pathsep.join([str(blocker), str(Path(__file__).parents[1])])}
    cluster = {"KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
               "KERAS_DISTRIBUTION_NUM_PROCESSES": "2"}
    workers = [subprocess.Popen(
        [sys.executable, "-c", JAX_PROCESS, str(tmp_path / "multi"), "multi_worker",
         "0.001" if k == 0 else "0"],
        env={**env, **cluster, "KERAS_DISTRIBUTION_PROCESS_ID": str(k)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    single = subprocess.run([sys.executable, "-c", JAX_PROCESS, str(tmp_path / "single"),
                             "default", "0.001"], capture_output=True, text=True, env=env,
                            timeout=600)
    outputs = [w.communicate(timeout=300) for w in workers]  # a hang: a process left alone
    reports = []  # the scripts' last lines (gloo prints its own lines before)
    for worker, (stdout, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
        reports.append(stdout.strip().splitlines()[-1].split())
        assert reports[-1][:4] == ["processes", "2", "epochs", "1"]
    assert single.returncode == 0, single.stderr[-3000:]
    chief = _weights(tmp_path / "multi" / "last.keras")
    other = _weights(tmp_path / "multi" / "worker-1" / "last.keras")
    alone = _weights(tmp_path / "single" / "last.keras")
    for a, b, c in zip(chief, other, alone):
        np.testing.assert_array_equal(a, b)  # the processes stay in step
        np.testing.assert_allclose(a, c, atol=1e-5)  # and train as one
    assert any(np.abs(c).max() > 0 for c in alone)
    # the run is the chief's: validation Dice as a single process scores it
    assert reports[0][-1] == single.stdout.split()[-1]


def _tensorflow_import_check(order):
    """Import TensorFlow and vxm_tf in `order` in a fresh interpreter without
    TF_ENABLE_ONEDNN_OPTS; returns (its stderr, the variable as TensorFlow saw it)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    code = "; ".join(f"import {name}" for name in order) + (
        "; import os; print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True)
    return run.stderr, run.stdout.strip().splitlines()[-1]


def test_vxm_tf_turns_on_onednn_or_says_why_it_could_not():
    """TensorFlow leaves oneDNN off on CPUs without AVX-512, where 3D convolutions then run
    about 4x slower; `import vxm_tf` turns it on, and says so when TensorFlow came first."""
    stderr, seen = _tensorflow_import_check(["vxm_tf", "tensorflow"])
    assert seen == "1" and "imported before vxm_tf" not in stderr
    stderr, _ = _tensorflow_import_check(["tensorflow", "vxm_tf"])
    cpu = Path("/proc/cpuinfo")
    if cpu.exists() and " avx512f" not in cpu.read_text():
        assert "imported before vxm_tf" in stderr and "TF_ENABLE_ONEDNN_OPTS=1" in stderr
    else:
        assert "imported before vxm_tf" not in stderr

"""The VoxelMorph authors' pretrained 3D brain model (../shared/models): conversion to
.keras, loading under JAX, and `vxm_tf.evaluate` on the real neurite-OASIS 3D pair.

Skips with the reason when ../shared is not beside the repository."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vxm_tf import networks

SHARED = Path(__file__).resolve().parents[2] / "shared"
PRETRAINED = SHARED / "models" / "vxm_dense_brain_T1_3D_mse.h5"
OASIS3D = SHARED / "data" / "neurite-oasis-3d"
TOOLS = Path(__file__).resolve().parents[1] / "tools"

needs_model = pytest.mark.skipif(not PRETRAINED.exists(),
                                 reason=f"{PRETRAINED} is absent (../shared beside the repo)")


def run(args, **env):
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env}, timeout=900)


@needs_model
def test_original_config_is_translated():
    model = networks.VxmDense.load(PRETRAINED)
    config = model.get_config()
    assert (config["svf_resolution"], config["int_resolution"], config["int_steps"]) == (2, 2, 7)
    assert tuple(model.get_layer("vxm_dense_flow").output.shape[1:]) == (80, 96, 112, 3)
    same = networks.VxmDense((160, 192, 224), unet_half_res=True, int_downsize=2)
    assert same.get_config() == config
    assert [w.shape for w in same.weights] == [w.shape for w in model.weights]


@needs_model
def test_converted_model_loads_under_jax_with_the_same_weights(tmp_path, capsys):
    sys.path.insert(0, str(TOOLS))
    import convert_original

    out = tmp_path / "brain.keras"
    convert_original.main([str(PRETRAINED), str(out)])  # the command line: the test below
    assert "svf_resolution 2" in capsys.readouterr().out
    assert not list(tmp_path.glob(".tmp-*"))
    script = ("import sys, numpy as np, keras; import vxm_tf.networks; "
              "m = keras.saving.load_model(sys.argv[1], compile=False); "
              "np.savez(sys.argv[2], backend=keras.backend.backend(), "
              "**{f'w{k}': np.asarray(w) for k, w in enumerate(m.weights)})")
    done = run(["-c", script, out, tmp_path / "w.npz"], KERAS_BACKEND="jax",
               JAX_PLATFORMS="cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    got = dict(np.load(tmp_path / "w.npz"))
    assert str(got.pop("backend")) == "jax"
    expected = networks.VxmDense.load(PRETRAINED).weights
    assert len(got) == len(expected)
    for k, w in enumerate(expected):
        np.testing.assert_array_equal(got[f"w{k}"], np.asarray(w))


@needs_model
@pytest.mark.parametrize("make_out, message", [
    (lambda t: PRETRAINED, "would overwrite the original model"),
    (lambda t: t / "brain.h5", "must end in .keras"),
    (lambda t: t / "missing" / "brain.keras", "does not exist"),
])
def test_converter_errors_are_one_line_and_write_nothing(tmp_path, make_out, message):
    sys.path.insert(0, str(TOOLS))
    import convert_original

    with pytest.raises(SystemExit) as stop:  # what the program prints as it exits
        convert_original.main([str(PRETRAINED), str(make_out(tmp_path))])
    assert isinstance(stop.value.code, str) and len(stop.value.code.splitlines()) == 1
    assert message in stop.value.code
    assert list(tmp_path.iterdir()) == []


def test_converter_names_a_missing_file(tmp_path):
    """Through the real command line: one line on stderr, a failure status."""
    done = run([TOOLS / "convert_original.py", tmp_path / "none.h5", tmp_path / "o.keras"])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1 and "none.h5: no such file" in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not (PRETRAINED.exists() and OASIS3D.is_dir()),
                    reason=f"needs {PRETRAINED} and {OASIS3D} (../shared beside the repo)")
def test_evaluate_scores_the_original_h5_on_the_real_pair(tmp_path):
    """The issue's command: data flags from the command line (no run config); one of the
    two directions (`--pairs`), the other registers alike."""
    pair = tmp_path / "pair.txt"
    pair.write_text("OASIS_OAS1_0001_MR1 OASIS_OAS1_0002_MR1\n")
    done = run(["-m", "vxm_tf.evaluate", f"--model={PRETRAINED}", "--dataset=oasis",
                f"--data_dir={OASIS3D}", "--train=0", "--val=0", "--test=2", "--nosurface",
                "--figures=0", f"--pairs={pair}", f"--out_dir={tmp_path / 'eval'}"])
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["pairs"] == 1 and len(summary["labels"]) == 35
    assert 0.44 < summary["dice_before"] < 0.47
    assert summary["dice_after"] > summary["dice_before"] + 0.25
    assert summary["folding_percent"] < 0.01

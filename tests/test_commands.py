"""The console commands: each `--help` lists the command's own flags (grouped) and none of
absl's, TensorFlow's or the test framework's; logs written to a file hold no escape codes."""

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vxm_tf import cli

BIN = Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

COMMANDS = {
    "vxm-register": ("register", ["--model", "--moving", "--fixed", "--moved", "--warp",
                                  "--moving_list", "--affine=affine", "--instance_steps",
                                  "--instance_lr", "--instance_settings", "--hyper_lambda"],
                     ["model:", "input/output:", "instance optimisation:"]),
    "vxm-warp": ("warp", ["--moving", "--warp", "--moved", "--interp=linear"],
                 ["input/output:"]),
    "vxm-train": ("train", ["--dataset=synthetic", "--data_dir", "--lambda=1.0",
                            "--similarity=ncc", "--epochs=5", "--model_dir", "--init_model",
                            "--aug_rotate", "--enc", "--[no]resume", "--verbose=1",
                            "--[no]hyper", "--hyper_oversample=0.4", "--template=none",
                            "--attributes_csv"],
                  ["data:", "augmentation:", "model:", "loss:", "training:"]),
    "vxm-evaluate": ("evaluate", ["--model", "--split=test", "--out_dir", "--data_dir",
                                  "--instance_steps", "--perturb", "--hyper_lambda"],
                     ["model:", "evaluation:", "instance optimisation:"]),
    "vxm-tune": ("tune", ["--tuner=random", "--lambda_min", "--tune_dir", "--lambda=1.0"],
                 ["tuning:", "training:"]),
    "vxm-choose-lambda": ("choose_lambda", ["--model", "--out", "--grid", "--min_dice",
                                            "--split=val", "--data_dir"],
                          ["model:", "choice:"]),
    "vxm-template": ("template", ["--model", "--out_dir", "--values"], ["model and output:"]),
}


# the commands whose `python -m` form is run too (each start imports TensorFlow: seconds)
BOTH_WAYS = ("vxm-register", "vxm-train")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_commands_flags_and_nothing_foreign(command):
    module, expected, groups = COMMANDS[command]
    script = shutil.which(command, path=str(BIN))
    assert script, f"{command} is not installed as a console script (pip install -e .)"
    by_script = subprocess.run([script, "--help"], capture_output=True, text=True, env=ENV)
    runs = [by_script]
    if command in BOTH_WAYS:  # `python -m vxm_tf.X` is the same program (one start each)
        by_module = subprocess.run([sys.executable, "-m", f"vxm_tf.{module}", "--help"],
                                   capture_output=True, text=True, env=ENV)
        runs.append(by_module)
    for done in runs:
        assert done.returncode == 0, done.stderr[-1000:]
        for flag in expected:
            assert f"  {flag}" in done.stdout, f"{command} --help lacks {flag}"
        for group in groups:
            assert f"\n{group}\n" in done.stdout
        for foreign in ("--test_srcdir", "--xml_output_file", "--only_check_args",
                        "--pdb_post_mortem", "Try --helpfull"):
            assert foreign not in done.stdout, f"{command} --help shows {foreign}"
    if command in BOTH_WAYS:
        assert by_script.stdout == by_module.stdout
    if command in ("vxm-evaluate", "vxm-choose-lambda"):  # scoring: no training flags
        assert "  --lr=" not in by_script.stdout and "  --aug_rotate" not in by_script.stdout
        assert "  --seed=0" in by_script.stdout


def test_progress_bars_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    assert cli.fit_verbosity(1, Terminal()) == 1
    assert cli.fit_verbosity(1, io.StringIO()) == 2
    assert cli.fit_verbosity(0, io.StringIO()) == 0
    assert cli.fit_verbosity(2, Terminal()) == 2


@pytest.mark.slow
def test_a_training_log_written_to_a_file_has_no_escape_codes(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        done = subprocess.run(
            [str(BIN / "vxm-train"), "--synthetic_shape=16,16", "--synthetic_labels=3",
             "--train=4", "--val=2", "--test=0", "--val_pairs=2", "--epochs=2",
             "--steps_per_epoch=3", "--enc=4,4", "--dec=4,4,4", f"--model_dir={tmp_path}/run"],
            stdout=out, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path)
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    assert "Epoch 2/2" in text and "done:" in text
    for code in ("\x1b", "\r", "\b"):
        assert code not in text, f"{code!r} in a log written to a file"
    assert "retracing" not in text.lower()

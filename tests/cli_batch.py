"""Run an entry point once per argument list, all in one process: the CLI tests start one
Python (and import TensorFlow once) for a table of cases instead of one per case.

    python tests/cli_batch.py vxm_tf.commands.register < runs.json

`runs.json` is a JSON list of argument lists. Each run goes through the entry point's own
`cli.run` path (absl parsing, one-line errors, `sys.exit`), with the flags reset to their
defaults in between; for each, one line `CLI_BATCH {"code": ..., "stderr": ...}` on stdout
(an exception that escapes is reported as code "traceback").
"""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import traceback

from absl import app, flags

from vxm_tf import cli

MARK = "CLI_BATCH "


def run_all(module_name, runs):
    module = importlib.import_module(module_name)
    module.define_flags()
    for args in runs:
        flags.FLAGS.unparse_flags()
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                app.run(module.main, argv=[module_name, *args], flags_parser=cli.parse_flags)
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
            except Exception:  # noqa: BLE001 - the test shows it
                code = "traceback"
                stderr.write(traceback.format_exc())
        print(MARK + json.dumps({"code": code, "stderr": stderr.getvalue()}), flush=True)


def parse(stdout):
    """The runs' results from the batch's stdout, in order."""
    return [json.loads(line[len(MARK):]) for line in stdout.splitlines()
            if line.startswith(MARK)]


def run(module_name, runs, timeout=900):
    """Each argument list of `runs` through `module_name`'s command line, in one new
    Python process: a list of {"code", "stderr", "lines"} ("lines": stderr's non-blank
    lines)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    batch = subprocess.run([sys.executable, __file__, module_name], input=json.dumps(runs),
                           capture_output=True, text=True, env=env, timeout=timeout)
    results = parse(batch.stdout)
    if len(results) != len(runs):
        raise AssertionError(f"the batch stopped after {len(results)} of {len(runs)} runs: "
                             f"{batch.stderr[-3000:]}")
    for result in results:
        result["lines"] = [line for line in result["stderr"].splitlines() if line.strip()]
    return results


if __name__ == "__main__":
    run_all(sys.argv[1], json.loads(sys.stdin.read()))

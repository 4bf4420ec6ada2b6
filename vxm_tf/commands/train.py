"""Train VxmDense: `vxm-train --flagfile=flags/synthetic.cfg --flagfile=flags/ncc.cfg`.

Flags: `vxm-train --help`. The run directory (--model_dir) receives the
checkpoints, logs and the resolved configuration; --resume continues an interrupted run.
"""

import sys

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import configs, trainer  # noqa: E402

FLAGS = flags.FLAGS
# exit status of a run that --time_limit ended before its last epoch (checkpointed, no
# model.keras; --resume continues it), so that scripts can tell it from a finished run
STOPPED = 3


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    configs.define_flags()


def main(argv):
    cli.check_args(argv)
    config = cli.call(configs.config_from_flags, FLAGS)
    result = cli.call(trainer.train_and_evaluate, config,
                      errors=(ValueError, trainer.TrainingError))
    history = result["history"]
    summary = f"loss {history['loss'][-1]:.4f}"
    if history.get("val_dice"):
        summary += (f", validation Dice {history['val_dice'][-1]:.4f} (best "
                    f"{max(history['val_dice']):.4f}, kept as best.keras)")
    epochs = len(history["loss"])
    ended = "stopped" if result["stopped_after"] else "done"
    print(f"{ended}: {result['run_dir']}: {epochs} epoch{'' if epochs == 1 else 's'}, {summary}"
          + (f"; --resume continues it (exit status {STOPPED})" if result["stopped_after"]
             else ""))
    if result["stopped_after"]:
        sys.exit(STOPPED)


def console():
    """The `vxm-train` command (also `python -m vxm_tf.train`)."""
    define_flags()
    cli.run(main, __doc__, configs.flag_groups())


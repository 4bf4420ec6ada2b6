"""Sweep lambda with Keras Tuner: `vxm-tune --flagfile=flags/tune.cfg`.

Uses the training flags (data, model, loss, optimisation) plus the search flags below.
Outputs in --tune_dir: trials.csv and trials.md (lambda, held-out Dice, folding, loss,
seconds per trial), lambda_sweep.png and best.keras. Rerunning with the same --tune_dir resumes.
Distributed: start one process with KERASTUNER_TUNER_ID=chief and workers with
KERASTUNER_TUNER_ID=tuner0, tuner1, ..., all with KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT pointing at the chief and the same --tune_dir.
"""

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import configs, data, tuning  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    configs.define_flags()
    configs.define_flags_of(tuning.TuneConfig)


def main(argv):
    cli.check_args(argv)
    try:
        config = configs.config_from_flags(FLAGS)
        tune = configs.values_from_flags(tuning.TuneConfig, FLAGS, seed=FLAGS.seed)
        tuning.check_tune_config(tune)
        rows = tuning.run_search(config, tune)
    except (configs.ConfigError, data.DatasetError, ValueError) as err:
        cli.fail(str(err))
    for row in rows:
        print(f"lambda {row['lambda']:.4g}: held-out Dice {row['val_dice']:.4f}, folding "
              f"{row['val_folding']:.4f}%")


def console():
    """The `vxm-tune` command (also `python -m vxm_tf.tune`)."""
    define_flags()
    # a trial's length, folder and starting point are the search's (--tune_epochs,
    # --tune_dir), so the training run's own are not shown
    hidden = ["epochs", "model_dir", "resume", "time_limit", "val_pairs", "init_model"]
    cli.run(main, __doc__, [("tuning", configs.flags_of(tuning.TuneConfig)),
                            *configs.flag_groups()], hide=hidden)


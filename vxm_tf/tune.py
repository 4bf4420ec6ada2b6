"""Sweep lambda with Keras Tuner: `python -m vxm_tf.tune --flagfile=flags/tune.cfg`.

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
from vxm_tf import data, experiment, tuning  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    experiment.define_flags()
    t = tuning.TuneConfig()
    flags.DEFINE_enum("tuner", t.tuner, tuning.TUNERS, "search algorithm")
    flags.DEFINE_integer("trials", t.trials, "trials (random and bayesian)")
    flags.DEFINE_integer("tune_epochs", t.epochs, "epochs per trial")
    flags.DEFINE_float("lambda_min", t.lambda_min, "lambda range, lower end (log-uniform)")
    flags.DEFINE_float("lambda_max", t.lambda_max, "lambda range, upper end")
    flags.DEFINE_bool("tune_lr", t.tune_lr, "also search the learning rate")
    flags.DEFINE_bool("tune_window", t.tune_window, "also search the NCC window")
    flags.DEFINE_integer("holdout", t.holdout, "training subjects held out to score trials")
    flags.DEFINE_integer("holdout_pairs", t.holdout_pairs, "held-out pairs scored")
    flags.DEFINE_enum("objective", t.objective, tuning.OBJECTIVES, "what trials maximise")
    flags.DEFINE_float("folding_weight", t.folding_weight,
                       "dice_minus_folding: Dice points lost per % of folded voxels")
    flags.DEFINE_string("tune_dir", t.directory, "tuning folder (resumable)")


def main(argv):
    cli.check_args(argv)
    try:
        config = experiment.config_from_flags(FLAGS)
        tune = tuning.TuneConfig(
            tuner=FLAGS.tuner, trials=FLAGS.trials, epochs=FLAGS.tune_epochs,
            lambda_min=FLAGS.lambda_min, lambda_max=FLAGS.lambda_max, tune_lr=FLAGS.tune_lr,
            tune_window=FLAGS.tune_window, holdout=FLAGS.holdout,
            holdout_pairs=FLAGS.holdout_pairs, objective=FLAGS.objective,
            folding_weight=FLAGS.folding_weight, directory=FLAGS.tune_dir, seed=FLAGS.seed)
        tuning.check_tune_config(tune)
        rows = tuning.run_search(config, tune)
    except (experiment.ConfigError, data.DatasetError, ValueError) as err:
        cli.fail(str(err))
    for row in rows:
        print(f"lambda {row['lambda']:.4g}: held-out Dice {row['val_dice']:.4f}, folding "
              f"{row['val_folding']:.4f}%")


if __name__ == "__main__":
    define_flags()
    cli.run(main)

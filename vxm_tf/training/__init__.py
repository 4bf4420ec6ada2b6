"""Training: the parts of a run that `vxm_tf.trainer`'s loop puts together.

    devices     precision, distribution strategies, process shards, what trains
    callbacks   validation Dice, checkpoints, non-finite loss, step timing, time limit
    rundir      the run folder: lock, start epoch, recorded config, resume check
    memory      the CPU memory check before a run
    template    a template run's starting image, attributes and scan streams, and the
                templates a trained run writes (`vxm-template`)
"""


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why."""

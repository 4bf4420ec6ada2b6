"""What `fit` reads: the pair source through `tf.data` under TensorFlow, else through a
`keras.utils.PyDataset` (`PairSequence`), with the same batches in the same order."""

import os

import keras

from vxm_tf.data.pairs import PairSequence


def fit_data(source, steps_per_epoch=None, initial_epoch=0, workers=None):
    """What `fit` reads from `source` under the current backend: a `tf.data.Dataset` under
    TensorFlow, a `PairSequence` (with `workers` threads) under every other backend. A
    repeating source starts at batch `initial_epoch * steps_per_epoch`, as an
    uninterrupted run would have reached it. `workers` defaults to half the CPU cores,
    2 to 8 (a GPU step at 128^3 is shorter than one thread's batch)."""
    if workers is None:
        workers = min(8, max(2, (os.cpu_count() or 2) // 2))
    if keras.backend.backend() == "tensorflow":
        from vxm_tf.data.pipeline import source_dataset

        return source_dataset(source, first_batch=initial_epoch * (steps_per_epoch or 0),
                              workers=workers)
    return PairSequence(source, steps_per_epoch if source.repeat else None, initial_epoch,
                        workers=workers)

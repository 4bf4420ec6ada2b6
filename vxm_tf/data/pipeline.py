"""`tf.data` adapter of the pair source (TensorFlow backend only; imports TensorFlow).

Batch `k` of the stream is `PairSource.batch(k)`, computed in a numpy function by parallel
map calls in order, then prefetched: the same batches as `PairSequence` gives any backend.
"""

import numpy as np
import tensorflow as tf

from vxm_tf.data.pairs import PairSource


def _specs(source):
    """Flat dtypes and shapes of a batch (batch dimension left open), and the sizes of its
    parts (inputs, targets, and loss weights where the source gives them)."""
    parts = source.batch(0)
    flat = [a for part in parts for a in part]
    return [tf.as_dtype(a.dtype) for a in flat], [(None, *a.shape[1:]) for a in flat], \
        [len(part) for part in parts]


def pair_dataset(volumes, pairs, batch_size=1, shuffle=True, seed=0, augmentation=None,
                 flow_shape=None, bidir=False, with_segs=False, repeat=False,
                 drop_remainder=False, first_batch=0):
    """Stream pairs of `volumes` as a prefetched `tf.data.Dataset` of batches (arguments
    as `PairSource` and `source_dataset`)."""
    return source_dataset(PairSource(
        volumes, pairs, batch_size=batch_size, shuffle=shuffle, seed=seed,
        augmentation=augmentation, flow_shape=flow_shape, bidir=bidir, with_segs=with_segs,
        repeat=repeat, drop_remainder=drop_remainder), first_batch)


def source_dataset(source, first_batch=0, workers=2):
    """A `PairSource` as a `tf.data.Dataset`; `first_batch` starts a repeating stream
    part-way (a resumed run starts at `initial_epoch * steps_per_epoch`).

    `workers` batches are made in parallel and as many wait ready: bounded, because
    tf.data's AUTOTUNE buffers up to half the machine's memory (large 3D batches with
    segmentation targets can exhaust it)."""
    dtypes, shapes, sizes = _specs(source)
    ends = np.cumsum([0, *sizes])
    indices = (tf.data.Dataset.range(first_batch, np.iinfo(np.int64).max) if source.repeat
               else tf.data.Dataset.range(source.batches_per_pass))

    def load(index):
        return [a for part in source.batch(int(index)) for a in part]

    def element(index):
        flat = tf.numpy_function(load, [index], dtypes)
        for tensor, shape in zip(flat, shapes):
            tensor.set_shape(shape)
        return tuple(tuple(flat[a:b]) for a, b in zip(ends[:-1], ends[1:]))

    return indices.map(element, num_parallel_calls=workers,
                       deterministic=True).prefetch(workers)

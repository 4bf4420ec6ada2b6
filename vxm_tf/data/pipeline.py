"""`tf.data` streams of (moving, fixed) pairs from subjects held in memory.

The N volumes of a split sit in memory once; a pair is two indices into them, so the
N (N - 1) pairs of an epoch are never materialised. Elements are what `VxmDense.fit`
expects: inputs `(moving, fixed)` `(B, *spatial, 1)`, targets `(fixed, zero field)` (or
`(fixed, moving, zero field)` when bidirectional); or, with `with_segs`, the pair's
segmentations in place of the targets, for validation and evaluation.
"""

import numpy as np
import tensorflow as tf

from vxm_tf.data.augment import Augmentation, augment_intensity, augment_spatial, left_right_swap


def _augment_pair_fn(volumes, augmentation, with_clean):
    """A numpy function (i, j, seed) -> augmented (moving, fixed, moving_seg, fixed_seg),
    plus (moving_clean, fixed_clean) without the intensity changes when `with_clean`."""
    lr_table = left_right_swap(volumes.label_names) if volumes.label_names else None
    segs = volumes.segs if volumes.segs is not None else np.zeros_like(volumes.images, np.int32)

    def fn(i, j, seed):
        rng = np.random.default_rng(np.uint64(seed))
        images, labels, clean = [], [], []
        for k in (i, j):
            image, seg = augment_spatial(volumes.images[k], segs[k], augmentation, rng,
                                         lr_table)
            clean.append(image)
            images.append(augment_intensity(image, augmentation, rng))
            labels.append(seg)
        return (*images, *labels, *(clean if with_clean else []))

    return fn


def pair_dataset(volumes, pairs, batch_size=1, shuffle=True, seed=0, augmentation=None,
                 flow_shape=None, bidir=False, with_segs=False, repeat=False,
                 drop_remainder=False):
    """Stream pairs of `volumes` (a `Volumes`) as a batched, prefetched `tf.data.Dataset`.

    Args:
        pairs: `(P, 2)` (moving index, fixed index) into `volumes`.
        batch_size: pairs per batch.
        shuffle: reshuffle the pairs every epoch, from `seed`.
        seed: fixes the shuffle order and the augmentation draws.
        augmentation: `Augmentation` applied to each subject of a pair independently.
            With `clean_targets`, inputs are `(moving, fixed, moving_clean)` and the image
            targets the fixed (and moving) scans without their intensity changes.
        flow_shape: `(*spatial', D)` shape of the zero target of the regularised field
            (needed unless `with_segs`).
        bidir: targets `(fixed, moving, zeros)` for a bidirectional model.
        with_segs: yield `((moving, fixed), (moving_seg, fixed_seg))` instead of targets;
            segmentations are int32 `(B, *spatial)`.
        repeat: loop forever (use with `steps_per_epoch`).
    """
    pairs = np.asarray(pairs, dtype=np.int32).reshape(-1, 2)
    if len(pairs) == 0:
        raise ValueError("no pairs to stream")
    if pairs.min() < 0 or pairs.max() >= len(volumes):
        raise ValueError(f"pair indices must lie in [0, {len(volumes) - 1}], got "
                         f"[{pairs.min()}, {pairs.max()}]")
    if with_segs and volumes.segs is None:
        raise ValueError("with_segs needs segmentations, and these volumes have none")
    if not with_segs and flow_shape is None:
        raise ValueError("flow_shape is needed for the zero-field target")
    augmentation = augmentation or Augmentation()
    clean_targets = augmentation.clean_targets and not with_segs
    if clean_targets and bidir:
        raise ValueError("clean_targets works with unidirectional models only")
    shape = volumes.shape
    images = tf.constant(volumes.images)
    segs = tf.constant(volumes.segs if volumes.segs is not None
                       else np.zeros((1,) * (1 + len(shape)), np.int32))

    ds = tf.data.Dataset.from_tensor_slices(pairs)
    if shuffle:
        ds = ds.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if augmentation.enabled:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, seeds))
        fn = _augment_pair_fn(volumes, augmentation, clean_targets)

        def load(pair, element_seed):
            out = tf.numpy_function(fn, [pair[0], pair[1], element_seed],
                                    [tf.float32, tf.float32, tf.int32, tf.int32]
                                    + [tf.float32, tf.float32] * clean_targets)
            for tensor in out:
                tensor.set_shape(shape)
            return (*out, *([] if clean_targets else out[:2]))
    else:
        def load(pair):
            moving, fixed = tf.gather(images, pair[0]), tf.gather(images, pair[1])
            return (moving, fixed, tf.gather(segs, pair[0]) if with_segs else 0,
                    tf.gather(segs, pair[1]) if with_segs else 0, moving, fixed)

    def to_element(moving, fixed, moving_seg, fixed_seg, moving_clean, fixed_clean):
        moving, fixed = moving[..., None], fixed[..., None]
        if with_segs:
            return (moving, fixed), (moving_seg, fixed_seg)
        zeros = tf.zeros(flow_shape, tf.float32)
        if clean_targets:
            return (moving, fixed, moving_clean[..., None]), (fixed_clean[..., None], zeros)
        return (moving, fixed), ((fixed, moving, zeros) if bidir else (fixed, zeros))

    ds = ds.map(lambda *a: to_element(*load(*a)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)

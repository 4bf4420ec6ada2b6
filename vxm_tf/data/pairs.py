"""The pair source: batches of (moving, fixed) pairs as numpy arrays, for any backend.

`PairSource` turns a `Volumes` split and its list of pairs into batches; a batch depends
only on the seed and its position in the stream, so a resumed run sees exactly the batches
an uninterrupted one would have seen. Two thin adapters feed `fit`:
`PairSequence` (a `keras.utils.PyDataset`, every backend, threads as workers) and
`vxm_tf.data.pipeline.pair_dataset` (`tf.data`, TensorFlow only).

Batches are what `VxmDense.fit` expects: inputs `(moving, fixed)` `(B, *spatial, 1)`,
targets `(fixed, zero field)` (or `(fixed, moving, zero field)` when bidirectional; with
clean targets inputs `(moving, fixed, moving_clean)` and targets `(fixed_clean, zeros)`;
with seg targets, for semi-supervised training, inputs `(moving, fixed, moving_seg)` and
targets `(fixed, zeros, fixed_seg)`, segmentations int32 `(B, *spatial, 1)`; for HyperMorph,
inputs `(moving, fixed, h)`, targets `(fixed, zeros)` and loss weights `(1 - h, h)`); or,
with `with_segs`, the pair's int32 segmentations `(B, *spatial)` in place of targets.
"""


import keras
import numpy as np

from vxm_tf.data.augment import Augmentation, augment_intensity, augment_spatial, left_right_swap

# seeds HyperMorph's draws apart from the augmentation's (seeded [seed, pass, position])
HYPER_STREAM = 7919


def hyper_draws(rng, count, oversample=0.4):
    """`count` values of HyperMorph's `h` as the original's train_hypermorph.py draws them: with
    probability `oversample` an end point (0 or 1, alike), else uniform on [0, 1].
    Returns float32 `(count, 1)`."""
    ends = rng.random(count) < oversample
    values = np.where(ends, rng.integers(0, 2, count), rng.random(count))
    return values.astype(np.float32)[:, None]


class PairSource:
    """Batches of pairs of `volumes`, numpy in and out.

    Args:
        volumes: a `Volumes` split.
        pairs: `(P, 2)` (moving index, fixed index) into `volumes`.
        batch_size: pairs per batch.
        shuffle: a fresh order of the pairs for every pass over them, drawn from `seed`.
        seed: fixes the orders and the augmentation draws.
        augmentation: `Augmentation` applied to each subject of a pair independently.
        flow_shape: `(*spatial', D)` of the zero target of the regularised field (needed
            unless `with_segs`).
        bidir: targets `(fixed, moving, zeros)` for a bidirectional model.
        with_segs: batches `((moving, fixed), (moving_seg, fixed_seg))`.
        seg_targets: the segmentations join the training inputs and targets
            (`views.seg_training_model`).
        repeat: an endless stream of pairs (pass after pass, batches spanning passes);
            otherwise one pass, its last batch smaller unless `drop_remainder`.
        shard: (index, count): this process's part of every batch in a multi-process run,
            the `index`-th of `count` equal slices (`batch_size` pairs is the global batch,
            that all the processes' parts make in process order).
        hyper_oversample: HyperMorph training (`vxm_tf.hypermorph`): each pair draws its
            smoothness weight `h` (`hyper_draws`: an end point with this probability), the
            inputs gain `h (B, 1)` and the batch becomes `(inputs, targets, weights)` with
            per-pair loss weights `(1 - h, h)` for the similarity and Grad terms.
    """

    def __init__(self, volumes, pairs, batch_size=1, shuffle=True, seed=0, augmentation=None,
                 flow_shape=None, bidir=False, with_segs=False, repeat=False,
                 drop_remainder=False, seg_targets=False, shard=(0, 1),
                 hyper_oversample=None):
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) == 0:
            raise ValueError("no pairs to stream")
        if pairs.min() < 0 or pairs.max() >= len(volumes):
            raise ValueError(f"pair indices must lie in [0, {len(volumes) - 1}], got "
                             f"[{pairs.min()}, {pairs.max()}]")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= shard[0] < shard[1] or batch_size % shard[1] or (
                shard[1] > 1 and not repeat):
            raise ValueError(f"shard {shard}: a repeating stream whose batch_size "
                             f"({batch_size}) the shard count divides")
        if (with_segs or seg_targets) and volumes.segs is None:
            raise ValueError("segmentations are needed, and these volumes have none")
        if not with_segs and flow_shape is None:
            raise ValueError("flow_shape is needed for the zero-field target")
        self.augmentation = augmentation or Augmentation()
        self.clean_targets = self.augmentation.clean_targets and not with_segs
        if (self.clean_targets or seg_targets) and bidir:
            raise ValueError("clean_targets and seg_targets work with unidirectional models "
                             "only")
        if self.clean_targets and seg_targets:
            raise ValueError("clean_targets and seg_targets do not go together")
        self.seg_targets = seg_targets and not with_segs
        self.volumes, self.pairs, self.batch_size = volumes, pairs, int(batch_size)
        self.shuffle, self.seed, self.repeat = shuffle, int(seed), repeat
        self.flow_shape = None if flow_shape is None else tuple(flow_shape)
        self.bidir, self.with_segs, self.drop_remainder = bidir, with_segs, drop_remainder
        self.shard = tuple(shard)
        if hyper_oversample is not None and (with_segs or bidir or self.clean_targets
                                             or self.seg_targets):
            raise ValueError("hyper_oversample works with unidirectional image pairs only")
        self.hyper_oversample = hyper_oversample
        self.lr_table = left_right_swap(volumes.label_names) if volumes.label_names else None
        self._orders = {}

    @property
    def batches_per_pass(self):
        """Batches in one pass over the pairs (without `repeat`: the whole stream)."""
        whole, rest = divmod(len(self.pairs), self.batch_size)
        return whole + (1 if rest and not self.drop_remainder else 0)

    def _order(self, sweep):
        """The pair order of pass `sweep` (cached: the last few passes only)."""
        if not self.shuffle:
            return np.arange(len(self.pairs))
        if sweep not in self._orders:
            if len(self._orders) > 4:
                self._orders.pop(min(self._orders))
            rng = np.random.default_rng([self.seed, sweep])
            self._orders[sweep] = rng.permutation(len(self.pairs))
        return self._orders[sweep]

    def _positions(self, index):
        """(pass, position in that pass) of each pair of batch `index` of the stream."""
        if not self.repeat and not 0 <= index < self.batches_per_pass:
            raise IndexError(f"batch {index} of a pass of {self.batches_per_pass}")
        first = index * self.batch_size
        count = self.batch_size if self.repeat else min(self.batch_size,
                                                        len(self.pairs) - first)
        part = count // self.shard[1]
        first += self.shard[0] * part
        return [divmod(g, len(self.pairs)) for g in range(first, first + part)]

    def pair_indices(self, index):
        """`(P, 2)` (moving, fixed) indices of the pairs of batch `index` of the stream."""
        return np.array([self.pairs[self._order(sweep)[position]]
                         for sweep, position in self._positions(index)], dtype=np.int64)

    def _subject(self, k, rng):
        """Subject `k` augmented: (image, seg, image before intensity changes)."""
        image = self.volumes.images[k]
        seg = None if self.volumes.segs is None else self.volumes.segs[k]
        if not self.augmentation.enabled:
            return image, seg, image
        image, seg = augment_spatial(image, seg, self.augmentation, rng, self.lr_table)
        return augment_intensity(image, self.augmentation, rng), seg, image

    def batch(self, index):
        """Batch `index` of the stream: `(inputs, targets)` tuples of numpy arrays (and
        the loss weights, with `hyper_oversample`)."""
        moving, fixed, moving_seg, fixed_seg, moving_clean, fixed_clean = ([] for _ in range(6))
        for sweep, position in self._positions(index):
            i, j = self.pairs[self._order(sweep)[position]]
            rng = np.random.default_rng([self.seed, sweep, position])
            for k, images, segs, cleans in ((i, moving, moving_seg, moving_clean),
                                            (j, fixed, fixed_seg, fixed_clean)):
                image, seg, clean = self._subject(k, rng)
                images.append(image)
                segs.append(seg)
                cleans.append(clean)
        stack = lambda arrays: np.stack(arrays)[..., None].astype(np.float32)  # noqa: E731
        moving, fixed = stack(moving), stack(fixed)
        if self.with_segs:
            return (moving, fixed), (np.stack(moving_seg).astype(np.int32),
                                     np.stack(fixed_seg).astype(np.int32))
        zeros = np.zeros((len(moving), *self.flow_shape), np.float32)
        if self.seg_targets:
            moving_seg, fixed_seg = (np.stack(segs)[..., None].astype(np.int32)
                                     for segs in (moving_seg, fixed_seg))
            return (moving, fixed, moving_seg), (fixed, zeros, fixed_seg)
        if self.clean_targets:
            return (moving, fixed, stack(moving_clean)), (stack(fixed_clean), zeros)
        if self.hyper_oversample is not None:  # each pair's own draw, by its position
            h = np.concatenate([hyper_draws(np.random.default_rng([self.seed, sweep, position,
                                                                   HYPER_STREAM]),
                                            1, self.hyper_oversample)
                                for sweep, position in self._positions(index)])
            return (moving, fixed, h), (fixed, zeros), (1 - h[:, 0], h[:, 0])
        return (moving, fixed), ((fixed, moving, zeros) if self.bidir else (fixed, zeros))


class PairSequence(keras.utils.PyDataset):
    """`PairSource` as a `keras.utils.PyDataset` (every backend): epochs of
    `steps_per_epoch` batches from a repeating source, or one pass of a finite one.

    `initial_epoch` places a resumed run where the interrupted one stopped in the stream.
    Extra keyword arguments (`workers`, `max_queue_size`) go to `PyDataset`.
    """

    def __init__(self, source, steps_per_epoch=None, initial_epoch=0, **kwargs):
        super().__init__(**kwargs)
        if source.repeat and not steps_per_epoch:
            raise ValueError("a repeating pair source needs steps_per_epoch")
        self.source = source
        self.steps = int(steps_per_epoch or source.batches_per_pass)
        self.epoch = int(initial_epoch)

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} of an epoch of {self.steps}")
        offset = self.epoch * self.steps if self.source.repeat else 0
        return self.source.batch(offset + index)

    def on_epoch_end(self):
        self.epoch += 1

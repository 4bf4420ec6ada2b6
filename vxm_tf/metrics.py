"""Registration metrics on numpy arrays; nothing here knows about Keras.

Label maps are integer arrays `(*spatial)`. Labels are ids other than 0 (background).
"""

import numpy as np


def dice(seg_a, seg_b, labels=None):
    """Dice overlap 2 |A & B| / (|A| + |B|) per label.

    Args:
        seg_a, seg_b: label maps of the same shape.
        labels: ids to score; default every non-zero id present in either map.

    Returns:
        `{label: dice}`; a label absent from both maps scores NaN (undefined).
    """
    seg_a, seg_b = np.asarray(seg_a), np.asarray(seg_b)
    if seg_a.shape != seg_b.shape:
        raise ValueError(f"label maps differ in shape: {seg_a.shape} vs {seg_b.shape}")
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(seg_a), np.unique(seg_b)) if v != 0]
    scores = {}
    for label in labels:
        a, b = seg_a == label, seg_b == label
        total = a.sum() + b.sum()
        scores[int(label)] = 2.0 * np.logical_and(a, b).sum() / total if total else np.nan
    return scores


def mean_dice(seg_a, seg_b, labels=None):
    """Mean of `dice` over the labels present in either map."""
    return float(np.nanmean(list(dice(seg_a, seg_b, labels).values())))

"""Registration metrics on numpy arrays; nothing here knows about Keras.

Label maps are integer arrays `(*spatial)`. Labels are ids other than 0 (background).
"""

from collections.abc import Sequence

import numpy as np

from vxm_tf.surfaces import robust_hausdorff


def _label_maps(seg_a, seg_b, labels):
    """Arrays of equal shape and the labels to score (default: non-zero ids in either)."""
    seg_a, seg_b = np.asarray(seg_a), np.asarray(seg_b)
    if seg_a.shape != seg_b.shape:
        raise ValueError(f"label maps differ in shape: {seg_a.shape} vs {seg_b.shape}")
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(seg_a), np.unique(seg_b)) if v != 0]
    return seg_a, seg_b, labels


def dice(seg_a: np.ndarray, seg_b: np.ndarray, labels: Sequence[int] | None = None
         ) -> dict[int, float]:
    """Dice overlap 2 |A & B| / (|A| + |B|) per label.

    Args:
        seg_a, seg_b: label maps of the same shape.
        labels: ids to score; default every non-zero id present in either map.

    Returns:
        `{label: dice}`; a label absent from both maps scores NaN (undefined).
    """
    seg_a, seg_b, labels = _label_maps(seg_a, seg_b, labels)
    scores = {}
    for label in labels:
        a, b = seg_a == label, seg_b == label
        total = a.sum() + b.sum()
        scores[int(label)] = 2.0 * np.logical_and(a, b).sum() / total if total else np.nan
    return scores


def mean_dice(seg_a: np.ndarray, seg_b: np.ndarray, labels: Sequence[int] | None = None
              ) -> float:
    """Mean of `dice` over the labels present in either map."""
    return float(np.nanmean(list(dice(seg_a, seg_b, labels).values())))


def hausdorff(seg_a: np.ndarray, seg_b: np.ndarray, labels: Sequence[int] | None = None,
              spacing_mm: Sequence[float] | None = None, percent: float = 100.0
              ) -> dict[int, float]:
    """Hausdorff distance in mm per label, or its `percent` percentile (95: HD95).

    The definition of the Learn2Reg evaluation, DeepMind's `surface-distance`
    (`compute_robust_hausdorff`), computed by `vxm_tf.surfaces`: surface elements are
    weighted by their area. A label absent from both maps scores NaN, one absent from just
    one map scores inf.

    Args:
        seg_a, seg_b: label maps of the same shape, 2D or 3D.
        labels: ids to score; default every non-zero id present in either map.
        spacing_mm: voxel size per axis in mm (default 1).

    Returns:
        `{label: distance in mm}`.
    """
    seg_a, seg_b, labels = _label_maps(seg_a, seg_b, labels)
    spacing_mm = tuple(spacing_mm) if spacing_mm is not None else (1.0,) * seg_a.ndim
    if len(spacing_mm) != seg_a.ndim:
        raise ValueError(f"spacing_mm {spacing_mm} does not match {seg_a.ndim}D label maps")
    scores = {}
    for label in labels:
        a, b = seg_a == label, seg_b == label
        if not a.any() or not b.any():
            scores[int(label)] = np.inf if a.any() or b.any() else np.nan
            continue
        scores[int(label)] = robust_hausdorff(a, b, spacing_mm, percent)
    return scores


def jacobian_determinant(disp: np.ndarray) -> np.ndarray:
    """Determinant of the Jacobian of x -> x + disp(x), `(*spatial)`.

    Args:
        disp: `(*spatial, D)` displacement in voxels; derivatives by central differences
            (one-sided at the borders), per voxel.
    """
    disp = np.asarray(disp, dtype=np.float64)
    ndims = disp.shape[-1]
    if disp.ndim != ndims + 1 or ndims not in (2, 3):
        raise ValueError(f"displacement must be (*spatial, D) with D = 2 or 3 spatial axes, "
                         f"got shape {disp.shape}")
    grads = np.stack([np.stack(np.gradient(disp[..., i]), axis=-1) for i in range(ndims)],
                     axis=-2)
    return np.linalg.det(grads + np.eye(ndims))


def folding_percent(disp: np.ndarray) -> float:
    """Percentage of voxels where the deformation folds (Jacobian determinant <= 0)."""
    return float(100.0 * np.mean(jacobian_determinant(disp) <= 0))


def sd_log_jacobian(disp: np.ndarray) -> float:
    """Standard deviation of the log Jacobian determinant (clipped to [1e-9, 1e9])."""
    return float(np.std(np.log(np.clip(jacobian_determinant(disp), 1e-9, 1e9))))

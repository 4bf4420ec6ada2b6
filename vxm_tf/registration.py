"""Register pairs of in-memory volumes with a model, in batches; used by validation and
evaluation alike."""

import numpy as np
from keras import ops

from vxm_tf import metrics
from vxm_tf import ops as vxm_ops


def register_pairs(model, volumes, pairs, batch_size=8):
    """Yield `(pair, warp, moved_seg)` for each (moving, fixed) index pair.

    warp: `(*spatial, D)` displacement in voxels; moved_seg: the moving segmentation
    warped with nearest interpolation (None when the volumes have no segmentations).
    """
    pairs = [tuple(p) for p in pairs]
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        moving = volumes.images[[i for i, _ in chunk]][..., None]
        fixed = volumes.images[[j for _, j in chunk]][..., None]
        warps = model.register(moving, fixed)
        moved_segs = [None] * len(chunk)
        if volumes.segs is not None:
            segs = volumes.segs[[i for i, _ in chunk]][..., None].astype(np.float32)
            moved = vxm_ops.transform(segs, warps, interp_method="nearest")
            moved_segs = ops.convert_to_numpy(moved)[..., 0].astype(np.int32)
        yield from zip(chunk, warps, moved_segs)


def validation_dice(model, volumes, pairs, batch_size=8):
    """Mean Dice over labels and pairs of the moved against the fixed segmentations."""
    labels = volumes.labels
    scores = [metrics.mean_dice(moved, volumes.segs[j], labels)
              for (_, j), _, moved in register_pairs(model, volumes, pairs, batch_size)]
    return float(np.mean(scores))

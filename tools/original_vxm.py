"""Run the original VoxelMorph (voxelmorph 0.2 on tf-keras) on pairs of volumes, in a
process of its own (it must never share one with Keras 3); needs the `reference` extra.

    python tools/original_vxm.py MODEL.h5 INPUTS.npz OUTPUTS.npz [--no-warmup]

INPUTS.npz holds `moving` and `fixed` arrays `(N, *spatial)`; OUTPUTS.npz gets `warps`
`(N, *spatial, D)` from the original's `register`, `seconds` per pair (batch 1, after one
warm-up call, which `--no-warmup` skips when only the outputs matter) and `moved`
`(N, *spatial)`, the original's moved images: vxm_tf's reports score the original with
their own metrics, and the parity test compares both outputs.
"""

import inspect
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
inspect.getargspec = lambda f: inspect.getfullargspec(f)[:4]  # neurite 0.2 on Python 3.11

import numpy as np  # noqa: E402


def main(model_path, in_path, out_path, warmup=True):
    import voxelmorph as vxm
    model = vxm.networks.VxmDense.load(model_path)
    pairs = np.load(in_path)
    moving, fixed = pairs["moving"][..., None], pairs["fixed"][..., None]
    if warmup:
        model.register(moving[:1], fixed[:1])
    warps, seconds, moved = [], [], []
    for k in range(len(moving)):
        start = time.perf_counter()
        warps.append(model.register(moving[k:k + 1], fixed[k:k + 1])[0])
        seconds.append(time.perf_counter() - start)
        moved.append(model.predict([moving[k:k + 1], fixed[k:k + 1]], verbose=0)[0][0, ..., 0])
    np.savez(out_path, warps=np.stack(warps), seconds=np.array(seconds),
             moved=np.stack(moved))


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[4:] not in ([], ["--no-warmup"]):
        sys.exit(__doc__)
    main(*sys.argv[1:4], warmup=sys.argv[4:] != ["--no-warmup"])

"""ANTs SyN on pairs of arrays, run in the `baselines` environment (`make baselines`).

    .venv-ants/bin/python tools/ants_register.py IN.npz OUT.npz [--transform SyN]

IN.npz holds `moving` and `fixed` `(P, *spatial)` float32 arrays on one voxel grid. Each
pair is registered by `ants.registration` with antspyx's defaults for the transform
(affine initialisation, then SyN), as many threads as ITK is given
(ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS). The result is written as `warps` `(P, *spatial, D)`:
for every fixed voxel, the displacement in voxels to where it samples the moving image
(the convention of `vxm_tf.registration`), read by warping the moving grid's index ramps
with the registration's forward transforms; `seconds` per pair; `version`.
Its own process and environment: antspyx pins older numpy and scipy than vxm_tf uses.
"""

import argparse
import time

import ants
import numpy as np

PAD = 32


def displacement(fixed, moving, transform):
    """ANTs registration of `moving` onto `fixed` (unit spacing, identity direction) ->
    `(warp (*spatial, D) in voxels, seconds)`."""
    fixed_image, moving_image = ants.from_numpy(fixed), ants.from_numpy(moving)
    start = time.perf_counter()
    result = ants.registration(fixed_image, moving_image, type_of_transform=transform)
    seconds = time.perf_counter() - start
    # index ramps over the moving grid widened by PAD voxels on every side, so that a
    # point mapped just outside the image still reads its coordinate (not the fill value)
    grid = np.indices([n + 2 * PAD for n in moving.shape], dtype=np.float32) - PAD
    origin = (-float(PAD),) * moving.ndim
    coords = [ants.apply_transforms(fixed_image, ants.from_numpy(ramp, origin=origin),
                                    result["fwdtransforms"], interpolator="linear").numpy()
              for ramp in grid]
    identity = np.indices(fixed.shape, dtype=np.float32)
    return np.stack([c - i for c, i in zip(coords, identity)], axis=-1), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--transform", default="SyN")
    args = parser.parse_args()
    pairs = np.load(args.inputs)
    warps, seconds = [], []
    for moving, fixed in zip(pairs["moving"], pairs["fixed"]):
        warp, sec = displacement(fixed.astype(np.float32), moving.astype(np.float32),
                                 args.transform)
        warps.append(warp.astype(np.float32))
        seconds.append(sec)
        print(f"pair {len(warps)}: {sec:.1f} s", flush=True)
    np.savez(args.outputs, warps=np.stack(warps), seconds=np.asarray(seconds),
             version=str(ants.__version__))


if __name__ == "__main__":
    main()

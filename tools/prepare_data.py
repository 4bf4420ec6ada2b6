"""Resize and normalise a dataset into a cache folder with a manifest (`make data`).

    python tools/prepare_data.py --data_dir ../shared/data/neurite-oasis-3d \
        --out_dir cache/neurite-oasis-3d-128 --target_shape 128,128,128

Images are resized linearly, segmentations by nearest neighbour (no label invented; a
label that vanishes at the new size is reported). Each subject becomes `<name>.npz`
(vol, seg, affine) and `manifest.json` records sources, checksums, shapes and labels. A
second run with the same sources and settings rewrites nothing. Train on the result with
`--dataset=cache --data_dir=<out_dir>`.
"""

import argparse
import sys

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import data, experiment  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=("oasis", "list"), default="oasis")
    parser.add_argument("--data_dir", help="neurite-OASIS folder")
    parser.add_argument("--img_list", default="", help="list dataset: one entry per line")
    parser.add_argument("--img_prefix", default="")
    parser.add_argument("--img_suffix", default="")
    parser.add_argument("--seg_suffix", default="")
    parser.add_argument("--label_table", default="")
    parser.add_argument("--seg", default="default", help="OASIS segmentation (seg35, seg4..)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--target_shape", default="", help="e.g. 128,128,128 (default: keep)")
    parser.add_argument("--normalise", choices=data.volumes.NORMALISATIONS, default="minmax")
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(n) for n in args.target_shape.split(",") if n)
    except ValueError:
        parser.error(f"--target_shape must be comma-separated integers, got "
                     f"{args.target_shape!r}")
    if args.dataset == "oasis" and not args.data_dir:
        parser.error("--dataset=oasis needs --data_dir")
    config = experiment.DataConfig(
        dataset=args.dataset, data_dir=args.data_dir or "", seg=args.seg,
        img_list=args.img_list, img_prefix=args.img_prefix, img_suffix=args.img_suffix,
        seg_suffix=args.seg_suffix, label_table=args.label_table)
    try:
        dataset = experiment.build_dataset(config)
        data.prepare_cache(dataset, args.out_dir, shape or None, args.normalise)
    except (data.DatasetError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

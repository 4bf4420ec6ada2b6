"""Resize and normalise a dataset into a cache folder with a manifest (`make data`).

    python tools/prepare_data.py --data_dir ../shared/data/neurite-oasis-3d \
        --out_dir cache/neurite-oasis-3d-128 --target_shape 128,128,128

Data flags are the entry points' (`--dataset`, `--data_dir`, `--seg`, `--img_list`, ...,
`--target_shape`, `--normalise`); defaults here: `--dataset=oasis --normalise=minmax`.
Images are resized linearly, segmentations by nearest neighbour (no label invented; a
label that vanishes at the new size is reported). Each subject becomes `<name>.npz`
(vol, seg, affine) and `manifest.json` records sources, checksums, shapes and labels. A
second run with the same sources and settings rewrites nothing. Train on the result with
`--dataset=cache --data_dir=<out_dir>`.
"""

import sys
from pathlib import Path

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import configs, data, experiment  # noqa: E402

FLAGS = flags.FLAGS


# this tool's defaults where the shared flags default otherwise (for training)
DEFAULTS = {"dataset": "oasis", "normalise": "minmax"}


def define_flags():
    """The entry points' data flags (one definition, `configs.define_flags`) and
    `--out_dir`; `DEFAULTS` apply where a flag is not given."""
    configs.define_flags()
    if "out_dir" not in FLAGS:
        flags.DEFINE_string("out_dir", "", "cache folder to write (created)")


def prepare(fl):
    """Write the cache the parsed flags describe; `ValueError` / `DatasetError` naming the
    flag or file on bad input."""
    for name, value in DEFAULTS.items():
        if not fl[name].present:
            fl[name].value = value
    if not fl.out_dir:
        raise ValueError("--out_dir is required")
    if fl.dataset not in ("oasis", "list"):
        raise ValueError(f"--dataset={fl.dataset}: prepare_data reads oasis or list datasets")
    if Path(fl.out_dir).exists() and not Path(fl.out_dir).is_dir():
        raise ValueError(f"--out_dir={fl.out_dir} is a file, not a folder")
    config = configs.config_from_flags(fl, training=False).data
    if config.dataset == "oasis" and not config.data_dir:
        raise ValueError("--dataset=oasis needs --data_dir")
    dataset = experiment.build_dataset(config)
    data.prepare_cache(dataset, fl.out_dir, config.target_shape or None, config.normalise)


def main(argv=None):
    define_flags()
    argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    FLAGS.unparse_flags()  # a second call in one process starts from the defaults
    cli.check_args(cli.parse_flags(argv))
    try:
        prepare(FLAGS)
    except (data.DatasetError, configs.ConfigError, ValueError, OSError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()

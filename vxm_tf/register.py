"""Register two volumes: `python -m vxm_tf.register --model=M --moving=A --fixed=B --moved=C`.

Volumes of any size (.nii, .nii.gz, .mgz, .npz) are resampled to the model's input shape,
registered, and the deformation is brought back to the fixed image's grid: the moved image
(and `--moved_seg`, nearest) are written with the fixed image's affine, and `--warp` as a
NIfTI displacement field `(*fixed_shape, D)`: the moving-image voxel coordinate minus the
fixed voxel index (apply it with `python -m vxm_tf.warp`). All outputs are checked before
the work starts and written atomically.
"""

import os
from pathlib import Path

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()
import numpy as np  # noqa: E402

from vxm_tf import instance, io, networks, registration  # noqa: E402
from vxm_tf.data.volumes import (  # noqa: E402
    NORMALISATIONS,
    check_intensities,
    normalise_image,
)

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("model", None, "model file (.keras, or an original voxelmorph .h5)")
    flags.DEFINE_string("moving", None, "moving image")
    flags.DEFINE_string("fixed", None, "fixed image")
    flags.DEFINE_string("moved", None, "output: moving image warped onto the fixed one")
    flags.DEFINE_string("warp", "", "output: displacement field (NIfTI)")
    flags.DEFINE_string("moving_seg", "", "moving segmentation to warp (nearest)")
    flags.DEFINE_string("moved_seg", "", "output: warped moving segmentation")
    flags.DEFINE_enum("normalise", "minmax", NORMALISATIONS,
                      "intensity scaling of both images before registration (models are "
                      "trained on [0, 1])")
    instance.define_flags()


def check_outputs(paths, inputs=()):
    """Every output has a known suffix and a writable folder, no two outputs share a path,
    and no output would overwrite an input: checked before any work, so nothing is
    half-written."""
    seen = {Path(p).resolve(): p for p in inputs if p}
    for path in paths:
        if not path:
            continue
        if io.file_type(path) is None:
            raise io.VolumeError(f"{path}: unknown file type; expected one of "
                                 f"{', '.join(io.SUFFIXES)}")
        folder = Path(path).parent
        if not folder.is_dir():
            raise io.VolumeError(f"{path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise io.VolumeError(f"{path}: folder {folder} is not writable")
        if Path(path).resolve() in seen:
            raise ValueError(f"{path}: the same path is given for two files "
                             f"({seen[Path(path).resolve()]!r} already)")
        seen[Path(path).resolve()] = path


def register_files(model_path, moving_path, fixed_path, moved_path, warp_path="",
                   moving_seg_path="", moved_seg_path="", normalise="minmax",
                   instance_config=None):
    """Register `moving_path` onto `fixed_path` and write the requested outputs
    (`instance_config`: optional test-time instance optimisation)."""
    if bool(moving_seg_path) != bool(moved_seg_path):
        raise ValueError("--moving_seg and --moved_seg go together")
    check_outputs([moved_path, warp_path, moved_seg_path],
                  inputs=[model_path, moving_path, fixed_path, moving_seg_path])
    model = networks.VxmDense.load(model_path)
    moving, fixed = io.load_volume(moving_path), io.load_volume(fixed_path)
    ndims = len(model.inshape)
    for volume in (moving, fixed):
        if volume.data.ndim != ndims:
            raise ValueError(f"{volume.path}: a {volume.data.ndim}D image, but the model "
                             f"registers {ndims}D images")
        check_intensities(volume.data, volume.path, normalise)
    seg = io.load_volume(moving_seg_path, labels=True) if moving_seg_path else None
    if seg is not None and seg.data.shape != moving.data.shape:
        raise ValueError(f"{moving_seg_path}: shape {seg.data.shape} differs from the "
                         f"moving image's {moving.data.shape}")
    coords = registration.register_volumes(
        model, normalise_image(moving.data, normalise), normalise_image(fixed.data, normalise),
        instance_config)
    io.save_volume(moved_path, registration.resample(moving.data, coords, 1), fixed.affine)
    if warp_path:
        disp = coords - registration.identity_coordinates(fixed.data.shape)
        io.save_volume(warp_path, disp.astype(np.float32), fixed.affine,
                       source_shape=moving.data.shape)
    if seg is not None:
        io.save_volume(moved_seg_path, registration.resample(seg.data, coords, 0),
                       fixed.affine)


def main(argv):
    cli.check_args(argv, required=("model", "moving", "fixed", "moved"))
    try:
        register_files(FLAGS.model, FLAGS.moving, FLAGS.fixed, FLAGS.moved, FLAGS.warp,
                       FLAGS.moving_seg, FLAGS.moved_seg, FLAGS.normalise,
                       instance.config_from_flags(FLAGS))
    except (ValueError, OSError) as err:
        cli.fail(str(err))
    print(f"wrote {FLAGS.moved}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)

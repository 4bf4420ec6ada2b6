"""Apply a saved displacement: `python -m vxm_tf.warp --moving=A --warp=W --moved=C`.

`--warp` is a field written by `python -m vxm_tf.register --warp` (or by ANTs / ITK): world
millimetres on the fixed grid, so any image in the moving scan's world space (its
segmentation, another contrast, another voxel size) can be warped with it; the output has
the warp's grid and affine. Label maps: `--interp=nearest`.
"""

from pathlib import Path

import numpy as np
from absl import flags

from vxm_tf import cli, files, geometry, io

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("moving", None, "image or label map to warp")
    flags.DEFINE_string("warp", None, "displacement field in world mm (vxm_tf.register "
                        "--warp, or ANTs)")
    flags.DEFINE_string("moved", None, "output")
    flags.DEFINE_enum("interp", "linear", ("linear", "nearest"), "interpolation: nearest for "
                      "label maps (an integer image of at most 256 values is refused unless "
                      "--interp is given)")
    flags.mark_flags_as_required(["moving", "warp", "moved"])


# below this fraction of the field's points inside the image, the image is not in the
# world space the field maps into (another subject's scan, or a wrong affine)
MIN_INSIDE = 0.2


# an integer image with at most this many values is taken for a label map
LABEL_VALUES = 256


def warp_file(moving_path, warp_path, moved_path, interp=None):
    """Warp the image or label map `moving_path` by the displacement `warp_path` (world mm on
    its grid) and write `moved_path` on the warp's grid with its affine; `interp` linear or
    nearest (None: linear, except that an integer image of at most `LABEL_VALUES` values, a
    label map, is refused: linear interpolation would blend its labels into new values).
    The output may not be one of the inputs; nothing is written on an error."""
    if not Path(moved_path).parent.is_dir():
        raise io.VolumeError(f"{moved_path}: folder {Path(moved_path).parent} does not exist")
    files.check_not_inputs(moved_path, {"--moving": moving_path, "--warp": warp_path},
                           "--moved")
    if io.file_type(moved_path) is None:
        raise io.VolumeError(f"{moved_path}: unknown file type; expected one of "
                             f"{', '.join(io.SUFFIXES)}")
    labels = interp == "nearest"
    moving = io.load_volume(moving_path, labels=labels)
    warp = io.load_displacement(warp_path)
    ndims = moving.data.ndim
    field = warp.data
    if ndims == 2:
        if field.shape[2] != 1:
            raise ValueError(f"{warp_path}: a 3D field ({field.shape[:3]}) for the 2D image "
                             f"{moving_path}")
        field = field[:, :, 0]
    coords = geometry.moving_coordinates(field, warp.affine, moving.affine, ndims)
    inside = geometry.inside_fraction(coords, moving.data.shape)
    if inside < MIN_INSIDE:
        raise ValueError(f"{moving_path}: only {inside:.0%} of {warp_path}'s points fall "
                         "inside this image: it is not in the space the field maps into (the "
                         "moving scan it was registered from)")
    if interp is None:
        values = np.unique(moving.data)
        integers = np.array_equal(values, np.round(values))
        if integers and len(values) <= LABEL_VALUES:
            raise ValueError(f"{moving_path} looks like a label map ({len(values)} integer "
                             "values): pass --interp=nearest (or --interp=linear to blend "
                             "them anyway)")
    cval = 0 if labels else float(moving.data.min())
    io.save_volume(moved_path, geometry.sample(moving.data, coords, 0 if labels else 1, cval),
                   warp.affine)


def main(argv):
    cli.check_args(argv)
    cli.call(warp_file, FLAGS.moving, FLAGS.warp, FLAGS.moved,
             FLAGS.interp if FLAGS["interp"].present else None)
    print(f"wrote {FLAGS.moved}")


def console():
    """The `vxm-warp` command (also `python -m vxm_tf.warp`)."""
    define_flags()
    cli.run(main, __doc__, [("input/output", ["moving", "warp", "moved", "interp"])])


if __name__ == "__main__":
    console()

"""Apply a saved displacement: `python -m vxm_tf.warp --moving=A --warp=W --moved=C`.

`--warp` is a field written by `python -m vxm_tf.register --warp` (moving-voxel coordinate
minus fixed voxel index, on the fixed grid); the output has the warp's shape and affine.
Label maps: `--interp=nearest`.
"""

from pathlib import Path

from absl import flags

from vxm_tf import cli, io, registration

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("moving", None, "image or label map to warp")
    flags.DEFINE_string("warp", None, "displacement field (*shape, D) from vxm_tf.register")
    flags.DEFINE_string("moved", None, "output")
    flags.DEFINE_enum("interp", "linear", ("linear", "nearest"), "interpolation")


def warp_file(moving_path, warp_path, moved_path, interp="linear"):
    if not Path(moved_path).parent.is_dir():
        raise io.VolumeError(f"{moved_path}: folder {Path(moved_path).parent} does not exist")
    labels = interp == "nearest"
    moving = io.load_volume(moving_path, labels=labels)
    warp = io.load_displacement(warp_path)
    ndims = warp.data.shape[-1]
    if moving.data.ndim != ndims:
        raise ValueError(f"{warp_path}: a {ndims}D displacement for the {moving.data.ndim}D "
                         f"volume {moving_path}")
    if warp.source_shape is not None and tuple(moving.data.shape) != warp.source_shape:
        raise ValueError(f"{moving_path}: shape {tuple(moving.data.shape)}, but {warp_path} "
                         f"maps into an image of shape {warp.source_shape} (the moving image "
                         "it was registered from)")
    grid = registration.identity_coordinates(warp.data.shape[:-1])
    moved = registration.resample(moving.data, grid + warp.data, 0 if labels else 1)
    io.save_volume(moved_path, moved, warp.affine)


def main(argv):
    cli.check_args(argv, required=("moving", "warp", "moved"))
    try:
        warp_file(FLAGS.moving, FLAGS.warp, FLAGS.moved, FLAGS.interp)
    except (ValueError, OSError) as err:
        cli.fail(str(err))
    print(f"wrote {FLAGS.moved}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)

"""Apply a saved displacement: `vxm-warp --moving=A --warp=W --moved=C`.

`--warp` is a field written by `vxm-register --warp` (or by ANTs / ITK): world
millimetres on the fixed grid, so any image in the moving scan's world space (its
segmentation, another contrast, another voxel size) can be warped with it; the output has
the warp's grid and affine. Label maps: `--interp=nearest`.
"""

from absl import flags

from vxm_tf import cli, workflows

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


def main(argv):
    cli.check_args(argv)
    cli.call(workflows.warp_file, FLAGS.moving, FLAGS.warp, FLAGS.moved,
             FLAGS.interp if FLAGS["interp"].present else None)
    print(f"wrote {FLAGS.moved}")


def console():
    """The `vxm-warp` command (also `python -m vxm_tf.warp`)."""
    define_flags()
    cli.run(main, __doc__, [("input/output", ["moving", "warp", "moved", "interp"])])


"""Register two scans: `vxm-register --model=M --moving=A --fixed=B --moved=C`.

Scans (.nii, .nii.gz, .mgz, .npz) of any size, orientation and voxel size are registered in
world coordinates (their affines): the moving scan is pre-aligned to the fixed one
(`--affine=affine|rigid|none`), resampled onto the model's grid over the fixed scan's box,
deformed by the network, and the composed transform brings it onto the fixed grid in one
interpolation. Outputs, all on the fixed grid with the fixed affine: the moved image (float32),
`--moved_seg` (nearest), `--warp` (the displacement in world mm, ITK / ANTs layout: see
`io.save_displacement`; apply it with `vxm-warp`), `--affine_out` (the
pre-alignment as a 4x4 RAS matrix taking fixed-space points to moving-space points), and
`--inverse_warp` on the moving grid (fixed-space images onto the moving scan). All
outputs are checked before the work starts and written atomically.
"""

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

from vxm_tf import affine, hypermorph, instance, workflows  # noqa: E402
from vxm_tf.data.volumes import NORMALISATIONS  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("model", None, "model file (.keras, or an original voxelmorph .h5) or "
                        "registered name (vxm-models list)")
    flags.DEFINE_string("moving", None, "moving image")
    flags.DEFINE_string("moving_list", None, "instead of --moving: a text file of moving "
                        "scans, one per line (`image` or `image seg`), all registered onto "
                        "--fixed in one process; outputs go to --out_dir")
    flags.DEFINE_string("out_dir", None, "with --moving_list: folder for each scan's "
                        "NAME_moved.nii.gz, NAME_warp.nii.gz, NAME_affine.txt and, with a "
                        "seg, NAME_moved_seg.nii.gz")
    flags.DEFINE_string("fixed", None, "fixed image")
    flags.DEFINE_string("moved", None, "output: moving image warped onto the fixed one")
    flags.DEFINE_string("warp", "", "output: displacement field (NIfTI)")
    flags.DEFINE_string("moving_seg", "", "moving segmentation to warp (nearest)")
    flags.DEFINE_string("moved_seg", "", "output: warped moving segmentation")
    flags.DEFINE_enum("affine", "affine", affine.KINDS, "pre-alignment of the moving scan "
                      "before the network: affine (12 parameters), rigid, or none (scans "
                      "already aligned in world coordinates)")
    flags.DEFINE_string("inverse_warp", "", "output: the inverse displacement on the moving "
                        "scan's grid (world mm, as --warp), mapping fixed-space images such "
                        "as an atlas's labels onto the moving scan with vxm_tf.warp")
    flags.DEFINE_string("affine_out", "", "output: the pre-alignment as a 4x4 text matrix "
                        "(RAS mm, fixed-space point -> moving-space point)")
    flags.DEFINE_enum("normalise", "auto", NORMALISATIONS,
                      "intensity scaling of both images before registration (models are "
                      "trained on [0, 1]): auto keeps the two as they are when both are in "
                      "[0, 1], else min-max scales both (the same for both scans, and said)")
    instance.define_flags()
    hypermorph.define_flags()
    flags.mark_flags_as_required(["model", "fixed"])
    flags.mark_flags_as_mutual_exclusive(["moving", "moving_list"], required=True)
    cli.require_together("moving", "moved")
    cli.require_together("moving_list", "out_dir")


def main(argv):
    cli.check_args(argv)
    instance_config = cli.call(instance.config_from_flags, FLAGS)
    affine_config = cli.call(affine.AffineConfig, FLAGS.affine)
    if FLAGS.moving_list:
        single = [f"--{name}" for name in ("moved", "warp", "moving_seg", "moved_seg",
                                           "inverse_warp", "affine_out") if FLAGS[name].value]
        if single:  # each scan's outputs are named in --out_dir, its seg in the list
            cli.fail(f"--moving_list writes NAME_moved.nii.gz, NAME_warp.nii.gz, "
                     "NAME_affine.txt (and NAME_moved_seg.nii.gz for a listed seg) into "
                     f"--out_dir; {', '.join(single)} belong to one --moving scan")
        failed = cli.call(workflows.register_list, FLAGS.model, FLAGS.moving_list, FLAGS.fixed,
                          FLAGS.out_dir, FLAGS.normalise, instance_config, affine_config,
                          print, FLAGS.hyper_lambda)
        if failed:
            cli.fail(f"{len(failed)} scan(s) of {FLAGS.moving_list} failed: "
                     f"{', '.join(failed)}")
        return
    cli.call(workflows.register_files, FLAGS.model, FLAGS.moving, FLAGS.fixed, FLAGS.moved,
             FLAGS.warp, FLAGS.moving_seg, FLAGS.moved_seg, FLAGS.normalise, instance_config,
             affine_config, FLAGS.affine_out, FLAGS.inverse_warp, print, FLAGS.hyper_lambda)
    written = [FLAGS.moved, FLAGS.warp, FLAGS.moved_seg, FLAGS.inverse_warp, FLAGS.affine_out]
    print(f"wrote {', '.join(path for path in written if path)}")


FLAG_GROUPS = [
    ("model", ["model", "hyper_lambda"]),
    ("input/output", ["moving", "fixed", "moved", "warp", "moving_seg", "moved_seg",
                      "inverse_warp", "affine_out", "moving_list", "out_dir"]),
    ("pre-alignment and intensities", ["affine", "normalise"]),
    ("instance optimisation", list(instance.FLAG_NAMES)),
]


def console():
    """The `vxm-register` command (also `python -m vxm_tf.register`)."""
    define_flags()
    cli.run(main, __doc__, FLAG_GROUPS)


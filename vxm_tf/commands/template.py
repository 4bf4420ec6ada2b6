"""Write the templates of a trained template model as NIfTI images.

    vxm-template --model=runs/oasis2d-template/model.keras --out_dir=templates
    vxm-template --model=runs/oasis2d-cond/model.keras --values=20,40,60,80 --out_dir=ages

An unconditional model (`vxm-train --template=unconditional`) has one template; a
conditional one (`--template=conditional --attributes=Age`) one for each set of attribute
values: with one attribute, `--values` lists values (`20,40,60`); with several, it lists
sets separated by `;`, each in the attributes' order (`20,F;80,M` for `Age,M/F`). Each is
written with the training scans' affine, from the run's `template.json`.
"""

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

from vxm_tf import data  # noqa: E402
from vxm_tf.training import template  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("model", None, "a template model: a registered name (vxm-models "
                        "list) or a .keras file in its run folder")
    flags.DEFINE_string("out_dir", None, "folder for template*.nii.gz")
    flags.DEFINE_string("values", "", "conditional models: attribute values, e.g. 20,40,60 "
                        "(one attribute) or 20,F;80,M (several)")
    flags.mark_flags_as_required(["model", "out_dir"])


def main(argv):
    cli.check_args(argv)
    paths = cli.call(template.write_templates, FLAGS.model, FLAGS.out_dir, FLAGS.values,
                     errors=(ValueError, OSError, data.DatasetError))
    print(f"wrote {', '.join(paths)}")


def console():
    """The `vxm-template` command (also `python -m vxm_tf.template`)."""
    define_flags()
    cli.run(main, __doc__, [("model and output", ["model", "out_dir", "values"])])


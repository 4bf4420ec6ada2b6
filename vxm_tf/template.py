"""Write the templates of a trained template model as NIfTI images.

    vxm-template --model=runs/oasis2d-template/model.keras --out_dir=templates
    vxm-template --model=runs/oasis2d-cond/model.keras --values=20,40,60,80 --out_dir=ages

An unconditional model (`vxm-train --template=unconditional`) has one template; a
conditional one (`--template=conditional --attributes=Age`) one for each set of attribute
values: with one attribute, `--values` lists values (`20,40,60`); with several, it lists
sets separated by `;`, each in the attributes' order (`20,F;80,M` for `Age,M/F`). Each is
written with the training scans' affine, from the run's `template.json`.
"""

import re
from pathlib import Path

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

import numpy as np  # noqa: E402

from vxm_tf import data, files, io, templates  # noqa: E402
from vxm_tf.training import template as template_training  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("model", None, "a template model (.keras) in its run folder")
    flags.DEFINE_string("out_dir", None, "folder for template*.nii.gz")
    flags.DEFINE_string("values", "", "conditional models: attribute values, e.g. 20,40,60 "
                        "(one attribute) or 20,F;80,M (several)")
    flags.mark_flags_as_required(["model", "out_dir"])


def parse_values(text, columns):
    """`--values` as a list of per-template value lists, one value per column."""
    if not text.strip():
        raise ValueError(f"--values: give the {', '.join(columns)} of each template")
    if len(columns) == 1:
        sets = [[v.strip()] for v in re.split("[,;]", text) if v.strip()]
    else:
        sets = [[v.strip() for v in part.split(",")] for part in text.split(";")
                if part.strip()]
    wrong = [s for s in sets if len(s) != len(columns)]
    if wrong:
        raise ValueError(f"--values: each set needs {len(columns)} values "
                         f"({', '.join(columns)}), got {','.join(wrong[0])}")
    if len({tuple(s) for s in sets}) != len(sets):
        raise ValueError(f"--values={text}: a set is given twice")
    return sets


def outside_training(sets, columns, encoding):
    """The numeric values of `sets` outside the range the model was trained on, as
    'Age=95 (trained on 18 to 89)' lines."""
    notes = []
    for values in sets:
        for column, value in zip(columns, values):
            spec = encoding[column]
            if "min" in spec and not spec["min"] <= float(value) <= spec["max"]:
                notes.append(f"{column}={value} (trained on {spec['min']:g} to "
                             f"{spec['max']:g})")
    return notes


def file_name(columns, values):
    """`template_Age-20_MF-F.nii.gz`: the columns and values, safe as a file name."""
    parts = [f"{re.sub('[^A-Za-z0-9]', '', c)}-{re.sub('[^A-Za-z0-9.]', '', v)}"
             for c, v in zip(columns, values)]
    return "template_" + "_".join(parts) + ".nii.gz"


def write_templates(model_path, out_dir, values_text="", log=print):
    """Write the model's template(s) into `out_dir` (created once everything is checked);
    returns the paths written. `log` gets a warning for values outside the training range."""
    if Path(model_path).is_dir():
        raise ValueError(f"--model={model_path}: a folder, not a model file (.keras)")
    run = Path(model_path).parent
    try:
        settings, base = template_training.read(run)
    except (OSError, ValueError):
        raise ValueError(f"--model={model_path}: no template.json and base_template.nii.gz "
                         "beside it (a --template run's folder)") from None
    files.check_output_folder(out_dir)
    model = _load(model_path, settings["template"])
    affine = np.array(settings["affine"])
    if settings["template"] == "unconditional":
        if values_text:
            raise ValueError("--values: an unconditional template has no attributes")
        Path(out_dir).mkdir(exist_ok=True)
        path = str(Path(out_dir) / "template.nii.gz")
        io.save_volume(path, model.get_atlas(), affine)
        return [path]
    columns, encoding = settings["columns"], settings["encoding"]
    sets = parse_values(values_text, columns)
    encoded = np.array([[data.encode_attribute(v, encoding[c], c, "--values")
                         for c, v in zip(columns, s)] for s in sets], np.float32)
    for note in outside_training(sets, columns, encoding):
        log(f"warning: {note}: the template extrapolates beyond its training subjects")
    images = model.template(encoded, base)
    Path(out_dir).mkdir(exist_ok=True)  # everything checked: the outputs go in
    paths = [str(Path(out_dir) / file_name(columns, s)) for s in sets]
    with files.all_or_nothing():
        for path, image in zip(paths, images):
            io.save_volume(path, image[..., 0], affine)
    return paths


def _load(model_path, kind):
    cls = (templates.TemplateCreation if kind == "unconditional"
           else templates.ConditionalTemplateCreation)
    return cls.load(model_path)


def main(argv):
    cli.check_args(argv)
    paths = cli.call(write_templates, FLAGS.model, FLAGS.out_dir, FLAGS.values,
                     errors=(ValueError, OSError, data.DatasetError))
    print(f"wrote {len(paths)} template(s): {', '.join(paths)}")


def console():
    """The `vxm-template` command (also `python -m vxm_tf.template`)."""
    define_flags()
    cli.run(main, __doc__, [("model and output", ["model", "out_dir", "values"])])


if __name__ == "__main__":
    console()

"""Template training's own parts of a run (`--template`): the starting template, the
attributes, the scan streams, and the template images written at the end.

A template run's folder holds, besides the usual files, `template.json` (the attributes
and their encoding, for `vxm-template`), `base_template.nii.gz` (the mean training scan:
where an unconditional template starts, and what a conditional one adds its attribute
image to) and, at the end, `template.nii.gz` (unconditional) with the data's affine.
`write_templates` writes a trained run's templates (`vxm-template`): the one template of an
unconditional model (with its label map `template_seg.nii.gz` where the model's folder has
one, as the shipped template has), or a conditional model's templates for given attribute
values.
"""

import json
import re
from pathlib import Path

import numpy as np

from vxm_tf import data, files, io, templates

SETTINGS, BASE, LABELS = "template.json", "base_template.nii.gz", "template_seg.nii.gz"


def mean_image(volumes):
    """The mean of a split's images `(*spatial)` float32 (read one at a time)."""
    total = np.zeros(volumes.shape, np.float64)
    for k in range(len(volumes)):
        total += volumes.images[k]
    return (total / len(volumes)).astype(np.float32)


def data_affine(config):
    """The voxel-to-world affine of the training scans as loaded (the first training
    subject's, scaled to `--target_shape`); identity for the synthetic dataset."""
    from vxm_tf import experiment

    if config.dataset == "synthetic":
        return np.eye(4)
    dataset = experiment.build_dataset(config)
    subjects = data.split_subjects(dataset, config.train, config.test, config.val,
                                   config.train_list or None, config.test_list or None,
                                   config.val_list or None)["train"]
    first = io.load_volume(subjects[0].image)
    affine = np.array(first.affine, dtype=np.float64)
    if config.target_shape:
        zoom = np.array(first.data.shape, float) / np.array(config.target_shape, float)
        affine[:3, :len(zoom)] = affine[:3, :len(zoom)] * zoom
    return affine


def start(config, run_dir, train, resumed, others=()):
    """The run's template settings `{'columns', 'encoding', 'affine'}` and base template:
    made from the training split (written to `run_dir`) or, when `resumed`, read back.
    The attributes of the `others` splits (validation) are checked before anything is
    written."""
    if resumed:
        return read(run_dir)
    columns = [c.strip() for c in config.data.attributes.split(",") if c.strip()]
    encoding = None
    if columns:
        _, encoding = data.read_attributes(config.data.attributes_csv, columns, train.names)
        for volumes in others:
            data.read_attributes(config.data.attributes_csv, columns, volumes.names, encoding)
    base = mean_image(train)
    affine = data_affine(config.data)
    settings = {"template": config.model.template, "columns": columns, "encoding": encoding,
                "affine": affine.tolist()}
    io.save_volume(str(Path(run_dir) / BASE), base, affine)
    files.write_json(Path(run_dir) / SETTINGS, settings)
    return settings, base


def read(run_dir):
    """`(settings, base template)` of a template run (`OSError` when they are missing,
    `ValueError` naming the file when its settings are not a template run's)."""
    path = Path(run_dir) / SETTINGS
    settings = json.loads(path.read_text())
    kind = settings.get("template") if isinstance(settings, dict) else None
    if kind not in ("unconditional", "conditional") or "affine" not in settings or (
            kind == "conditional" and not (settings.get("columns")
                                           and isinstance(settings.get("encoding"), dict))):
        raise ValueError(f"{path}: not a template run's settings (template, columns, "
                         "encoding, affine)")
    return settings, io.load_volume(str(Path(run_dir) / BASE)).data.astype(np.float32)


def source(config, settings, base, volumes, **kwargs):
    """The `data.ScanSource` of a split for this run (`kwargs`: batch and stream)."""
    attributes = None
    if settings["columns"]:
        attributes, _ = data.read_attributes(config.data.attributes_csv, settings["columns"],
                                             volumes.names, settings["encoding"])
    return data.ScanSource(volumes, attributes=attributes,
                           base=base if attributes is not None else None, **kwargs)


def finish(model, settings, run_dir):
    """Write the learned template of an unconditional run as `template.nii.gz`."""
    if settings["template"] == "unconditional":
        io.save_volume(str(Path(run_dir) / "template.nii.gz"), in_range(model.get_atlas()),
                       np.array(settings["affine"]))


def parse_values(text, columns):
    """`--values` as a list of per-template value lists, one value per column."""
    if not text.strip():
        raise ValueError(f"--values: give the {', '.join(columns)} of each template")
    if len(columns) == 1:
        sets = [[v.strip()] for v in re.split("[,;]", text) if v.strip()]
    else:
        sets = [[v.strip() for v in part.split(",")] for part in text.split(";")
                if part.strip()]
    if not sets:
        raise ValueError(f"--values={text}: no values in it; give the {', '.join(columns)} "
                         "of each template")
    wrong = [s for s in sets if len(s) != len(columns)]
    if wrong:
        raise ValueError(f"--values: each set needs {len(columns)} values "
                         f"({', '.join(columns)}), got {','.join(wrong[0])}")
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
    """`template_Age-20_MF-F.nii.gz`: the columns and values, safe as a file name (a
    value keeps its sign: `Age--5` for -5; a number is written plainly, so `+20`, `20.0`
    and `20` all name `Age-20`)."""
    parts = [f"{re.sub('[^A-Za-z0-9]', '', c)}-{re.sub('[^A-Za-z0-9.+-]', '', _plain(v))}"
             for c, v in zip(columns, values)]
    return "template_" + "_".join(parts) + ".nii.gz"


def _plain(value):
    """A finite number in its shortest positional form (`+20.0` -> `20`); text as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    if not np.isfinite(number):
        return value
    return np.format_float_positional(number, trim="-")


def write_templates(model_path, out_dir, values_text="", log=print):
    """Write the template(s) of a template run's model (a path, or a registered template
    model's name) into `out_dir` (created once
    everything is checked) with the training scans' affine; returns the paths written.
    `values_text`: a conditional model's attribute values, `20,40,60` for one attribute or
    `20,F;80,M` (sets separated by `;`, in the attributes' order) for several; nothing for
    an unconditional model. `log` gets a warning for values outside the training range."""
    from vxm_tf import models

    model_path = models.resolve(model_path)  # a registered name: its folder in the package
    if Path(model_path).is_dir():
        raise ValueError(f"--model={model_path}: a folder, not a model file (.keras)")
    run = Path(model_path).parent
    if not Path(model_path).is_file():
        raise ValueError(f"--model={model_path}: no such file")
    try:
        settings, base = read(run)
    except ValueError as err:
        raise ValueError(f"--model={model_path}: {err}") from None
    except OSError:
        raise ValueError(f"--model={model_path}: no template.json and base_template.nii.gz "
                         "beside it (a --template run's folder)") from None
    if not str(out_dir).strip():
        raise ValueError("--out_dir is empty: give a folder")
    files.check_output_folder(out_dir)
    if Path(out_dir).resolve() == run.resolve():
        raise ValueError(f"--out_dir={out_dir}: the model's own folder (its template files "
                         "would be replaced); give another")
    affine = np.array(settings["affine"])
    if settings["template"] == "unconditional":
        if values_text:
            raise ValueError("--values: an unconditional template has no attributes")
        written = [str(Path(out_dir) / "template.nii.gz")]
        if (run / LABELS).is_file():  # a shipped template's label map
            written.append(str(Path(out_dir) / LABELS))
        _check_free(written)
        model = _load(model_path, settings["template"])
        Path(out_dir).mkdir(exist_ok=True)
        with files.all_or_nothing():
            io.save_volume(written[0], in_range(model.get_atlas()), affine)
            if len(written) > 1:
                labels = io.load_volume(str(run / LABELS))
                io.save_volume(written[1], labels.data.astype(np.int32), affine)
        return written
    columns, encoding = settings["columns"], settings["encoding"]
    sets = parse_values(values_text, columns)
    encoded = np.array([[data.encode_attribute(v, encoding[c], c, "--values")
                         for c, v in zip(columns, s)] for s in sets], np.float32)
    if len(np.unique(encoded, axis=0)) != len(encoded):  # 70 and 70.0: one template
        raise ValueError(f"--values={values_text}: a set is given twice")
    for note in outside_training(sets, columns, encoding):
        log(f"warning: {note}: the template extrapolates beyond its training subjects")
    paths = [str(Path(out_dir) / file_name(columns, s)) for s in sets]
    if len(set(paths)) != len(paths):
        same = next(p for p in paths if paths.count(p) > 1)
        raise ValueError(f"--values={values_text}: two sets would both be written as {same}")
    _check_free(paths)
    images = _load(model_path, settings["template"]).template(encoded, base)
    Path(out_dir).mkdir(exist_ok=True)  # everything checked: the outputs go in
    with files.all_or_nothing():
        for path, image in zip(paths, images):
            io.save_volume(path, in_range(image[..., 0]), affine)
    return paths


def in_range(image):
    """A template image clipped to [0, 1], the training scans' range (a learned template
    strays a little outside it: -0.01 here and there)."""
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _check_free(paths):
    """`ValueError` when a folder stands where an output goes (found before any is
    written)."""
    for path in paths:
        if Path(path).is_dir():
            raise ValueError(f"{path}: a folder stands there; move it or give another "
                             "--out_dir")


def _load(model_path, kind):
    cls = (templates.TemplateCreation if kind == "unconditional"
           else templates.ConditionalTemplateCreation)
    return cls.load(model_path)

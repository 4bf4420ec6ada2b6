"""Template training's own parts of a run (`--template`): the starting template, the
attributes, the scan streams, and the template images written at the end.

A template run's folder holds, besides the usual files, `template.json` (the attributes
and their encoding, for `vxm-template`), `base_template.nii.gz` (the mean training scan:
where an unconditional template starts, and what a conditional one adds its attribute
image to) and, at the end, `template.nii.gz` (unconditional) with the data's affine.
"""

import json
from pathlib import Path

import numpy as np

from vxm_tf import data, files, io

SETTINGS, BASE = "template.json", "base_template.nii.gz"


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
    """`(settings, base template)` of a template run (`OSError` when they are missing)."""
    settings = json.loads((Path(run_dir) / SETTINGS).read_text())
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
        io.save_volume(str(Path(run_dir) / "template.nii.gz"), model.get_atlas(),
                       np.array(settings["affine"]))

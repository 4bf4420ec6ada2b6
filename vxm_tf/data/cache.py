"""A dataset resized and normalised once into a folder of npz files with a manifest
(`prepare_cache`, `tools/prepare_data.py`), and read back as a dataset (`cached_dataset`,
`--dataset=cache`)."""

import json
from pathlib import Path

import numpy as np

from vxm_tf import files
from vxm_tf.data.datasets import Dataset, DatasetError, Subject
from vxm_tf.data.volumes import load_subject
from vxm_tf.io import voxel_size

MANIFEST = "manifest.json"


def prepare_cache(dataset, out_dir, target_shape=None, normalise="minmax", log=print):
    """Resize and normalise every subject of `dataset` into `out_dir` (npz + manifest).

    Each subject becomes `<name>.npz` (`vol` float32, `seg` int16, `affine`); the manifest
    records sources and their sha256, shape, labels, lost labels and output checksums.
    A subject whose sources and settings match the manifest is not redone, so a second
    run is a no-op. Returns the cached `Dataset`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"target_shape": list(target_shape) if target_shape else None,
                "normalise": normalise}
    old = read_manifest(out_dir) if (out_dir / MANIFEST).exists() else {}
    old_entries = old.get("subjects", {}) if old.get("settings") == settings else {}
    entries, done = {}, 0
    for subject in dataset.subjects:
        sources = {"image": subject.image, "image_sha256": files.sha256(subject.image)}
        if subject.seg:
            sources.update(seg=subject.seg, seg_sha256=files.sha256(subject.seg))
        out_path = out_dir / f"{subject.name}.npz"
        previous = old_entries.get(subject.name)
        if (previous and previous["sources"] == sources and out_path.exists()
                and files.sha256(out_path) == previous["sha256"]):
            entries[subject.name] = previous
            continue
        image, seg, affine, lost = load_subject(subject, target_shape, normalise)
        if lost:
            names = [dataset.label_names.get(v, str(v)) for v in lost]
            log(f"{subject.name}: labels lost at shape {image.shape}: {', '.join(names)}")
        arrays = {"vol": image, "affine": affine}
        if seg is not None:
            arrays["seg"] = seg.astype(np.int16)
        save_npz(out_path, arrays)
        entries[subject.name] = {
            "sources": sources, "shape": list(image.shape),
            "voxel_size": list(voxel_size(affine, image.ndim)),
            "labels": [] if seg is None else [int(v) for v in np.unique(seg) if v],
            "lost_labels": lost, "file": out_path.name, "sha256": files.sha256(out_path)}
        done += 1
    manifest = {"dataset": dataset.name, "settings": settings,
                "label_names": {str(k): v for k, v in dataset.label_names.items()},
                "subjects": entries}
    if manifest != old:
        files.write_text(out_dir / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    log(f"{out_dir}: {done} subjects prepared, {len(entries) - done} already up to date")
    return cached_dataset(out_dir)


def read_manifest(out_dir):
    path = Path(out_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable cache manifest ({err})") from None


def cached_dataset(out_dir):
    """The `Dataset` of a folder written by `prepare_cache`, in the original order."""
    manifest = read_manifest(out_dir)
    subjects = [Subject(name, str(Path(out_dir) / e["file"]),
                        str(Path(out_dir) / e["file"]) if e["labels"] else None)
                for name, e in manifest["subjects"].items()]
    labels = {int(k): v for k, v in manifest.get("label_names", {}).items()}
    return Dataset(manifest["dataset"], subjects, labels, manifest.get("settings", {}))


def save_npz(path, arrays):
    """`arrays` (name -> array) as a compressed npz at `path`, written atomically."""
    with files.atomic_path(path) as tmp:
        np.savez_compressed(tmp, **arrays)


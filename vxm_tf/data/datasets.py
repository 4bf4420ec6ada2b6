"""Datasets as lists of subjects (image + optional segmentation file), splits and pairs.

Two on-disk layouts, as VoxelMorph users have them:
- neurite-OASIS (`subjects.txt`, one folder per subject, `aligned_norm` + `aligned_segNN`
  in 3D or `slice_norm` + `slice_segNN` in 2D, `segNN_labels.txt` colour tables);
- an image list file as in the original scripts: one entry per line, with an optional
  prefix and suffix, and an optional segmentation suffix.
"""

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from vxm_tf.io import SUFFIXES


class DatasetError(ValueError):
    """A dataset that cannot be used, with the file or setting named in the message."""


@dataclass(frozen=True)
class Subject:
    """One scan: `image` and optional `seg` file paths."""

    name: str
    image: str
    seg: str | None = None


@dataclass
class Dataset:
    """Subjects in a fixed order, with label names `{id: name}` when known, and for a cache
    the `settings` its manifest records (how tools/synth_from_labels.py rendered it)."""

    name: str
    subjects: list
    label_names: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.subjects:
            raise DatasetError(f"dataset {self.name!r} has no subjects")

    def __len__(self):
        return len(self.subjects)


def read_label_table(path):
    """FreeSurfer colour table (`ID Name R G B A` per line, `#` comments) -> {id: name}."""
    names = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read label table ({err.strerror})") from None
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) < 2 or not parts[0].isdigit():
            raise DatasetError(f"{path}:{number}: expected 'ID Name R G B A', got {line!r}")
        names[int(parts[0])] = parts[1]
    return names


def read_list(path, numbered=False):
    """Non-empty, non-comment lines of a text file (`numbered`: as `(line number, line)`,
    counting every line of the file, for messages)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read list ({err.strerror})") from None
    kept = [(n, line.strip()) for n, line in enumerate(lines, 1)
            if line.strip() and not line.startswith("#")]
    return kept if numbered else [line for _, line in kept]


def oasis_dataset(root, ndims=None, seg="default"):
    """neurite-OASIS folder (v1.0 3D or 2D layout).

    Args:
        root: folder holding `subjects.txt` and one folder per subject.
        ndims: 2 or 3; None picks 2 when the first subject has `slice_norm.nii.gz`.
        seg: segmentation name ('seg35', 'seg4' in 3D; 'seg24', 'seg4' in 2D), 'default'
            (seg35 in 3D, seg24 in 2D) or None for images only.
    """
    root = Path(root)
    if not (root / "subjects.txt").is_file():
        raise DatasetError(f"{root}: no subjects.txt; not a neurite-OASIS folder")
    names = read_list(root / "subjects.txt")
    if not names:
        raise DatasetError(f"{root / 'subjects.txt'}: empty subject list")
    if ndims is None:
        ndims = 2 if (root / names[0] / "slice_norm.nii.gz").exists() else 3
    if ndims not in (2, 3):
        raise DatasetError(f"ndims must be 2 or 3, got {ndims!r}")
    prefix = "slice" if ndims == 2 else "aligned"
    if seg == "default":
        seg = "seg24" if ndims == 2 else "seg35"
    subjects = [Subject(n, str(root / n / f"{prefix}_norm.nii.gz"),
                        str(root / n / f"{prefix}_{seg}.nii.gz") if seg else None)
                for n in names]
    labels = read_label_table(root / f"{seg}_labels.txt") if seg else {}
    return Dataset(f"{root.name}-{seg or 'images'}", subjects, labels)


def list_dataset(list_file, prefix="", suffix="", seg_suffix=None, label_table=None):
    """Image list as in the original scripts: path = prefix + entry + suffix.

    With `seg_suffix`, each subject's segmentation is prefix + entry + seg_suffix.
    """
    entries = read_list(list_file)
    if not entries:
        raise DatasetError(f"{list_file}: empty subject list")
    subjects = []
    for entry in entries:
        image = f"{prefix}{entry}{suffix}"
        if not image.lower().endswith(SUFFIXES):
            raise DatasetError(f"{list_file}: entry {entry!r} gives {image!r}, not one of "
                               f"{', '.join(SUFFIXES)} (set --img_suffix?)")
        seg_path = f"{prefix}{entry}{seg_suffix}" if seg_suffix else None
        subjects.append(Subject(Path(entry).name.split(".")[0], image, seg_path))
    labels = read_label_table(label_table) if label_table else {}
    return Dataset(Path(list_file).stem, subjects, labels)


def split_subjects(dataset, train=48, test=11, val=0, train_list=None, test_list=None,
                   val_list=None):
    """Split subjects: the first `train`, then the next `test`, then the next `val`.

    The default is the blog's protocol on neurite-OASIS (48 train, 11 test, subjects in
    `subjects.txt` order). A `*_list` file of subject names replaces the count of that split.
    Returns {'train': [...], 'val': [...], 'test': [...]} of `Subject`.
    """
    by_name = {s.name: s for s in dataset.subjects}
    lists = {"train": train_list, "test": test_list, "val": val_list}
    counts = {"train": train, "test": test, "val": val}
    splits, taken = {}, 0
    needed = sum(counts[s] for s in counts if not lists[s])
    for split in ("train", "test", "val"):
        if lists[split]:
            names = read_list(lists[split])
            missing = [n for n in names if n not in by_name]
            if missing:
                raise DatasetError(f"{lists[split]}: {len(missing)} subjects not in dataset "
                                   f"{dataset.name!r}, e.g. {missing[:3]}")
            splits[split] = [by_name[n] for n in names]
            continue
        count = counts[split]
        if count < 0:
            raise DatasetError(f"{split} split size must be non-negative, got {count}")
        if taken + count > len(dataset):
            raise DatasetError(f"splits need {needed} subjects (--train={train}, "
                               f"--test={test}, --val={val}) but dataset {dataset.name!r} has "
                               f"{len(dataset)}")
        splits[split] = dataset.subjects[taken:taken + count]
        taken += count
    return splits


def all_pairs(count):
    """Every ordered pair (moving, fixed) of distinct indices: count * (count - 1) pairs."""
    return [(i, j) for i, j in itertools.product(range(count), repeat=2) if i != j]


def atlas_pairs(count, atlas_index):
    """Scan-to-atlas pairs: every index but the atlas as moving, the atlas as fixed."""
    return [(i, atlas_index) for i in range(count) if i != atlas_index]

"""Synthetic T1-like 3D subjects with real anatomy, from SynthSeg training label maps.

    python tools/synth_from_labels.py --label_dir ../shared/data/synthseg-label-maps \
        --seg35_table ../shared/data/neurite-oasis-3d/seg35_labels.txt --out_dir cache/synth3d

For each label map (FreeSurfer aseg ids, 256^3, 1 mm) it draws a mean and a standard
deviation per tissue class, renders a T1-like image (brain only, as neurite-OASIS "norm"
images), blurs it, multiplies a smooth bias field, adds noise, scales to [0, 1], crops the
neurite-OASIS shape 160x192x224 around the brain and maps the FreeSurfer ids to the
35-label seg35 scheme by structure name. The output folder has the neurite-OASIS layout
(`subjects.txt`, `<subject>/aligned_norm.nii.gz`, `aligned_seg35.nii.gz`,
`seg35_labels.txt`), so `--dataset=oasis --data_dir=<out_dir>` reads it.

Intensity priors: SynthSeg's `prior_means_t1.npy` / `prior_stds_t1.npy` hold one column per
class of SynthSeg's contrast-specific grouping of `generation_labels.npy`. Give that
grouping with `--classes` and the priors are used (mean ~ N(row 0, row 1) of the means
file, likewise the standard deviation); without it (the shipped `generation_classes.npy`
has a different number of classes than the prior files have columns) each label's class
and intensity come from the T1 tissue table below (FreeSurfer-normalised, white matter 110).
"""

import argparse
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

OUT_SHAPE = (160, 192, 224)

# FreeSurfer aseg id -> (tissue, typical T1 intensity with white matter at 110)
TISSUES = {
    "white": 110, "cerebellar white": 100, "brainstem": 90, "cortex": 70,
    "cerebellar cortex": 75, "thalamus": 90, "caudate": 75, "putamen": 80, "pallidum": 95,
    "hippocampus": 70, "accumbens": 75, "ventral dc": 90, "csf": 30, "other": 60,
}
TISSUE_OF_ID = {
    2: "white", 41: "white", 7: "cerebellar white", 46: "cerebellar white", 16: "brainstem",
    3: "cortex", 42: "cortex", 8: "cerebellar cortex", 47: "cerebellar cortex",
    10: "thalamus", 49: "thalamus", 11: "caudate", 50: "caudate", 12: "putamen",
    51: "putamen", 13: "pallidum", 52: "pallidum", 17: "hippocampus", 53: "hippocampus",
    18: "hippocampus", 54: "hippocampus", 26: "accumbens", 58: "accumbens",
    28: "ventral dc", 60: "ventral dc", 4: "csf", 5: "csf", 43: "csf", 44: "csf", 14: "csf",
    15: "csf", 24: "csf", 72: "csf",
}
ALIASES = {"inf": "inferior", "lat": "lateral", "area": "", "vent": "ventricle"}


def normalise_name(name):
    """'Left-Inf-Lat-Ventricle' and 'left inferior lateral ventricle' -> same key."""
    words = re.split(r"[\s_\-]+", name.lower())
    return " ".join(w for w in (ALIASES.get(w, w) for w in words) if w)


def read_synthseg_table(path):
    """labels_table.txt ('labels structures' then 'ID name' lines) -> {id: name}."""
    names, started = {}, False
    for line in Path(path).read_text().splitlines():
        if line.strip().startswith("labels"):
            started = True
            continue
        parts = line.split(maxsplit=1)
        if started and len(parts) == 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1].strip()
    return names


def read_colour_table(path):
    names = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    return names


def seg35_lookup(freesurfer_names, seg35_names):
    """Lookup array FreeSurfer id -> seg35 id by structure name (0 where none matches)."""
    by_name = {normalise_name(n): k for k, n in seg35_names.items() if k}
    table = np.zeros(max(freesurfer_names) + 1, dtype=np.int32)
    for fs_id, name in freesurfer_names.items():
        table[fs_id] = by_name.get(normalise_name(name), 0)
    return table


def class_intensities(ids, rng, priors=None):
    """Per FreeSurfer id: (mean, std) drawn for this subject; 0 for non-brain ids."""
    draws = {}
    if priors is not None:
        labels, classes, means, stds = priors
        per_class = {c: (rng.normal(means[0, c], means[1, c]),
                         abs(rng.normal(stds[0, c], stds[1, c])))
                     for c in np.unique(classes)}
        for label, c in zip(labels, classes):
            draws[int(label)] = per_class[c]
    else:
        per_tissue = {t: (rng.normal(v, 8.0), abs(rng.normal(5.0, 1.5)))
                      for t, v in TISSUES.items()}
        for label in ids:
            if 0 < label < 500:
                draws[int(label)] = per_tissue[TISSUE_OF_ID.get(int(label), "other")]
    return draws


def crop_box(labels, shape):
    """Slices of `shape` centred on the non-zero labels' bounding box, inside the volume."""
    nonzero = np.argwhere(labels > 0)
    centre = (nonzero.min(0) + nonzero.max(0)) // 2
    box = []
    for c, n, size in zip(centre, labels.shape, shape):
        start = int(np.clip(c - size // 2, 0, max(n - size, 0)))
        box.append(slice(start, start + size))
    return tuple(box)


def synthesise(labels, rng, priors=None, bias=0.3, noise=0.02, blur=0.7):
    """T1-like image in [0, 1] for an integer FreeSurfer label map."""
    ids = np.unique(labels)
    draws = class_intensities(ids, rng, priors)
    means = np.zeros(int(ids.max()) + 1)
    stds = np.zeros_like(means)
    for label, (mean, std) in draws.items():
        if label <= ids.max():
            means[label], stds[label] = mean, std
    brain = (labels > 0) & (labels < 500)
    image = np.where(brain, means[labels] + stds[labels] * rng.standard_normal(labels.shape),
                     0.0)
    image = ndimage.gaussian_filter(image, blur)
    field = ndimage.gaussian_filter(rng.standard_normal([n // 16 for n in labels.shape]), 1)
    field = ndimage.zoom(field / max(field.std(), 1e-8), [n / m for n, m in
                                                          zip(labels.shape, field.shape)],
                         order=1)
    image = image * np.exp(bias * field)
    top = np.percentile(image[brain], 99.5) if brain.any() else 1.0
    image = np.clip(image / top, 0, 1) + rng.normal(0, noise, image.shape) * brain
    return np.clip(image, 0, 1).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label_dir", required=True, help="synthseg-label-maps folder")
    parser.add_argument("--seg35_table", required=True, help="neurite-OASIS seg35_labels.txt")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--classes", help="SynthSeg contrast-specific classes .npy")
    parser.add_argument("--count", type=int, default=0, help="subjects (default: all maps)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    label_dir, out_dir = Path(args.label_dir), Path(args.out_dir)
    maps = sorted(label_dir.glob("training_seg_*.nii.gz"))
    if not maps:
        sys.exit(f"error: {label_dir}: no training_seg_*.nii.gz label maps")
    maps = maps[:args.count] if args.count else maps
    priors = None
    if args.classes:
        classes = np.load(args.classes)
        means = np.load(label_dir / "prior_means_t1.npy")
        stds = np.load(label_dir / "prior_stds_t1.npy")
        if classes.max() + 1 != means.shape[1]:
            sys.exit(f"error: {args.classes}: {classes.max() + 1} classes, but the priors have "
                     f"{means.shape[1]} columns")
        priors = (np.load(label_dir / "generation_labels.npy"), classes, means, stds)
    seg35_names = read_colour_table(args.seg35_table)
    lookup = seg35_lookup(read_synthseg_table(label_dir / "labels_table.txt"), seg35_names)
    missing = sorted(set(seg35_names) - set(lookup.tolist()) - {0})
    print(f"seg35 labels with no FreeSurfer match (left as background): "
          f"{[seg35_names[k] for k in missing]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    names = []
    for path in maps:
        image = nib.load(str(path))
        labels = np.rint(np.asarray(image.dataobj)).astype(np.int32)
        box = crop_box(labels, OUT_SHAPE)
        labels = labels[box]
        seg = np.where(labels < len(lookup), lookup[np.minimum(labels, len(lookup) - 1)], 0)
        name = f"SYNTH_{path.name.split('.')[0].split('_')[-1]}"
        folder = out_dir / name
        folder.mkdir(exist_ok=True)
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3] @ np.array([b.start for b in box] + [1])
        nib.save(nib.Nifti1Image(synthesise(labels, rng, priors), affine),
                 str(folder / "aligned_norm.nii.gz"))
        nib.save(nib.Nifti1Image(seg.astype(np.uint8), affine),
                 str(folder / "aligned_seg35.nii.gz"))
        names.append(name)
        print(f"{name}: {len(np.unique(seg)) - 1} seg35 labels", flush=True)
    (out_dir / "subjects.txt").write_text("\n".join(names) + "\n")
    (out_dir / "seg35_labels.txt").write_text(Path(args.seg35_table).read_text())


if __name__ == "__main__":
    main()

"""A 3D training set with real anatomy: T1-like subjects rendered from SynthSeg label maps,
aligned to the neurite-OASIS space, as a cache `--dataset=cache` reads (`make data3d`).

    python tools/synth_from_labels.py --label_dir ../shared/data/synthseg-label-maps \
        --reference ../shared/data/neurite-oasis-3d/OASIS_OAS1_0001_MR1 \
        --intensity_dir ../shared/data/neurite-oasis-2d --out_dir cache/synth3d-128 \
        --target_shape 128,128,128 --renders 4 --val_maps 2

The label maps (FreeSurfer aseg ids, 256^3, 1 mm) are not in the neurite-OASIS space (a
map sits tilted by about 33 degrees and shifted against it). Each map is aligned by the
least-squares affine between the centroids of its seg35 structures and those of the
`--reference` subject's `aligned_seg35` (structures matched by name), then resampled
(nearest) onto the neurite-OASIS grid resized to `--target_shape`. Every map gives
`--renders` subjects, each with:
- a random smooth deformation of the label map itself (`--deform` mm at most, drawn on a
  coarse grid and interpolated), composed with the alignment in one nearest resampling;
- fresh intensities: per-structure means and spreads measured on the neurite-OASIS 2D
  training subjects (`--intensity_dir`, the first `--intensity_subjects` of subjects.txt:
  the 2D protocol's training split, never its test subjects), jittered per render, with a
  global contrast factor, a blur, a smooth bias field, a gamma and noise; outside the brain
  the image is 0, as in the skull-stripped neurite-OASIS `norm` images.
The last `--val_maps` maps are rendered after the others, so `--train=<renders x (maps -
val_maps)> --val=<renders x val_maps> --test=0` holds them out (flags/synth3d.cfg).
Labels follow seg35 (35 structures; those absent from a map stay background). The folder
also gets `alignment.png`: each aligned map's outline over the reference image.
"""

import argparse
import json
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from vxm_tf import files
from vxm_tf.data import cache as data_cache
from vxm_tf.data import volumes as vol_io

ALIASES = {"inf": "inferior", "lat": "lateral", "area": "", "vent": "ventricle"}
# FreeSurfer structures that the 2D neurite-OASIS labels lack, rendered as a structure
# of the same tissue that they have (by normalised name)
STAND_INS = {
    "cerebellum white matter": "cerebral white matter", "cerebellum cortex": "cerebral cortex",
    "amygdala": "hippocampus", "accumbens": "caudate", "4th ventricle": "3rd ventricle",
    "5th ventricle": "3rd ventricle", "csf": "lateral ventricle",
    "vessel": "choroid plexus", "ventricle": "lateral ventricle",
}


def normalise_name(name):
    """'Left-Inf-Lat-Ventricle' and 'left inferior lateral ventricle' -> same key."""
    words = re.split(r"[\s_\-]+", name.lower())
    return " ".join(w for w in (ALIASES.get(w, w) for w in words) if w)


def strip_side(name):
    """'left cerebral cortex' -> 'cerebral cortex'."""
    return re.sub(r"^(left|right) ", "", name)


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


def centroids(labels, ids):
    """{id: centroid (voxel coordinates)} of each id present in `labels`."""
    present = set(np.unique(labels).tolist())
    ids = [k for k in ids if k and k in present]
    found = ndimage.center_of_mass(np.ones(labels.shape), labels, ids)
    return {k: np.asarray(c) for k, c in zip(ids, found)}


def fit_affine(source, target):
    """(3, 4) least-squares affine `target ~ M @ [source, 1]` from matching points."""
    source, target = np.asarray(source, float), np.asarray(target, float)
    if len(source) < 4:
        raise ValueError(f"an affine needs at least 4 matching structures, got {len(source)}")
    design = np.concatenate([source, np.ones((len(source), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(design, target, rcond=None)
    return solution.T


def alignment(seg35_map, reference_seg35):
    """(3, 4) affine from reference voxels to map voxels (both seg35 label arrays) and
    the residual RMS distance in reference voxels."""
    ids = range(1, int(max(seg35_map.max(), reference_seg35.max())) + 1)
    ref, mov = centroids(reference_seg35, ids), centroids(seg35_map, ids)
    common = sorted(set(ref) & set(mov))
    matrix = fit_affine([ref[k] for k in common], [mov[k] for k in common])
    back = fit_affine([mov[k] for k in common], [ref[k] for k in common])
    residual = np.array([back @ np.append(mov[k], 1) - ref[k] for k in common])
    return matrix, float(np.sqrt((residual ** 2).sum(1).mean()))


def grid_to_reference(target_shape, reference_shape):
    """(3, 4) affine from voxels of the resized grid to reference voxels (area-aligned, as
    `vxm_tf.data.resize_volume`)."""
    scale = np.asarray(reference_shape, float) / np.asarray(target_shape, float)
    return np.concatenate([np.diag(scale), (0.5 * scale - 0.5)[:, None]], axis=1)


def compose(outer, inner):
    """(3, 4) affine `outer(inner(x))`."""
    return np.concatenate([outer[:, :3] @ inner[:, :3],
                           (outer[:, :3] @ inner[:, 3] + outer[:, 3])[:, None]], axis=1)


def random_displacement(shape, rng, amplitude, coarse=6):
    """Smooth random displacement `(3, *shape)`, each component at most `amplitude`."""
    if not amplitude:
        return np.zeros((3, *shape))
    field = []
    for _ in range(3):
        low = rng.uniform(-1, 1, (coarse,) * 3)
        smooth = ndimage.zoom(low, [n / coarse for n in shape], order=3, mode="nearest")
        field.append(amplitude * smooth / max(np.abs(smooth).max(), 1e-8))
    return np.stack(field)


def sample_labels(labels, matrix, shape, displacement=None):
    """Nearest resampling of `labels` at `matrix @ [x, 1] (+ displacement)` for every voxel
    x of `shape`."""
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    points = matrix[:, :3] @ grid + matrix[:, 3:]
    if displacement is not None:
        points += displacement.reshape(3, -1)
    return ndimage.map_coordinates(labels, points, order=0, mode="constant").reshape(shape)


def intensity_priors(intensity_dir, count):
    """{normalised structure name without side: (mean, spread)} measured on the first
    `count` subjects of a neurite-OASIS 2D folder (seg24 labels)."""
    root = Path(intensity_dir)
    names = read_colour_table(root / "seg24_labels.txt")
    subjects = (root / "subjects.txt").read_text().split()[:count]
    sums = {}
    for subject in subjects:
        image = np.asarray(nib.load(str(root / subject / "slice_norm.nii.gz")).dataobj)
        seg = np.asarray(nib.load(str(root / subject / "slice_seg24.nii.gz")).dataobj)
        seg = np.rint(seg).astype(np.int32)
        for k in np.unique(seg):
            if k:
                values = image[seg == k]
                key = strip_side(normalise_name(names[int(k)]))
                sums.setdefault(key, []).append((values.mean(), values.std()))
    return {key: tuple(np.mean(v, axis=0)) for key, v in sums.items()}


def priors_by_id(freesurfer_names, priors):
    """{FreeSurfer id: (mean, spread)} for brain structures; ids with no prior, directly or
    through `STAND_INS`, are left out (rendered as the cortex)."""
    out = {}
    for fs_id, name in freesurfer_names.items():
        key = strip_side(normalise_name(name))
        key = key if key in priors else STAND_INS.get(key, key)
        if 0 < fs_id < 500 and key in priors:
            out[fs_id] = priors[key]
    return out


def render(labels, priors, rng):
    """T1-like image (float32, neurite-OASIS intensity scale) of a FreeSurfer label map."""
    fallback = priors.get(3, (0.24, 0.04))
    size = int(labels.max()) + 1
    means, spreads = np.zeros(size), np.zeros(size)
    contrast = rng.uniform(0.85, 1.15)
    for k in np.unique(labels):
        if 0 < k < 500:
            mean, spread = priors.get(int(k), fallback)
            means[k] = contrast * max(mean + rng.normal(0, 0.02), 0.01)
            spreads[k] = spread * rng.uniform(0.6, 1.2)
    brain = (labels > 0) & (labels < 500)
    image = means[labels] + spreads[labels] * rng.standard_normal(labels.shape)
    image = ndimage.gaussian_filter(np.where(brain, image, 0.0), rng.uniform(0.3, 0.8))
    bias = np.exp(rng.uniform(0, 0.25) * ndimage.zoom(
        rng.standard_normal((4, 4, 4)), [n / 4 for n in labels.shape], order=3))
    image = np.clip(image * bias, 0, None) ** np.exp(rng.uniform(-0.15, 0.15))
    image = image + rng.uniform(0, 0.015) * rng.standard_normal(labels.shape)
    return np.clip(np.where(brain | (image > 0.02), image, 0), 0, 1).astype(np.float32)


_SETTINGS = {}


def _share(settings):
    """Pool initializer: the settings every render reads, sent once per worker."""
    _SETTINGS.update(settings)


def make_subject(task, settings=None):
    """One render: (name, image, seg35, alignment residual); run in a worker process."""
    path, render_index, seed = task
    settings = settings or _SETTINGS
    rng = np.random.default_rng([seed, render_index, int(re.findall(r"\d+", path.name)[-1])])
    labels = np.rint(np.asarray(nib.load(str(path)).dataobj)).astype(np.int32)
    lookup = np.asarray(settings["lookup"])
    seg35 = np.where(labels < len(lookup), lookup[np.minimum(labels, len(lookup) - 1)], 0)
    matrix, residual = alignment(seg35, settings["reference"])
    shape = tuple(settings["target_shape"])
    to_map = compose(matrix, grid_to_reference(shape, settings["reference"].shape))
    # map voxels are 1 mm; render 0 is the map itself
    deform = random_displacement(shape, rng, settings["deform"]) if render_index else None
    fs = sample_labels(labels, to_map, shape, deform)
    image = render(fs, settings["priors"], rng)
    seg = np.where(fs < len(lookup), lookup[np.minimum(fs, len(lookup) - 1)], 0)
    name = f"SYNTH_{path.name.split('.')[0].split('_')[-1]}_r{render_index}"
    return name, image, seg.astype(np.int16), residual


def overlay_figure(path, reference_image, segs, names, ventricles):
    """Mid-slices of the reference image with each aligned map's brain and `ventricles`
    (seg35 ids) outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, ax in enumerate(axes):
        middle = reference_image.shape[axis] // 2
        ax.imshow(np.take(reference_image, middle, axis).T, cmap="gray", origin="lower")
        for seg, colour in zip(segs, plt.cm.tab20(np.linspace(0, 1, len(segs)))):
            brain = ndimage.gaussian_filter((seg > 0).astype(float), 1.5)
            for outline in (brain, np.isin(seg, ventricles).astype(float)):
                ax.contour(np.take(outline, middle, axis).T, [0.5], colors=[colour],
                           linewidths=0.6)
        ax.set_axis_off()
        ax.set_title(f"axis {axis}, slice {middle}")
    fig.suptitle(f"{len(names)} label maps aligned to the reference: brain and lateral "
                 "ventricles outlined")
    fig.tight_layout()
    try:
        files.save_figure(fig, path, dpi=90)
    finally:
        plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label_dir", required=True, help="synthseg-label-maps folder")
    parser.add_argument("--reference", required=True,
                        help="a neurite-OASIS 3D subject folder (aligned_norm, aligned_seg35)")
    parser.add_argument("--intensity_dir", required=True,
                        help="neurite-OASIS 2D folder the intensity priors are measured on")
    parser.add_argument("--intensity_subjects", type=int, default=48,
                        help="first subjects of its subjects.txt (the 2D training split)")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--target_shape", default="128,128,128")
    parser.add_argument("--renders", type=int, default=4, help="subjects per label map")
    parser.add_argument("--val_maps", type=int, default=2, help="maps held out, last")
    parser.add_argument("--maps", type=int, default=0, help="use the first N maps (0: all)")
    parser.add_argument("--deform", type=float, default=3.0,
                        help="largest deformation of a map in mm (each component)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        shape = tuple(int(n) for n in args.target_shape.split(","))
    except ValueError:
        parser.error(f"--target_shape: comma-separated integers, got {args.target_shape!r}")
    if len(shape) != 3 or min(shape) < 8:
        parser.error(f"--target_shape: three sizes of at least 8, got {args.target_shape!r}")
    if args.renders < 1 or args.val_maps < 0 or args.deform < 0:
        parser.error("--renders must be at least 1, --val_maps and --deform non-negative")
    label_dir, reference = Path(args.label_dir), Path(args.reference)
    maps = sorted(label_dir.glob("training_seg_*.nii.gz"))
    maps = maps[:args.maps] if args.maps else maps
    if len(maps) <= args.val_maps:
        sys.exit(f"error: {label_dir}: {len(maps)} training_seg_*.nii.gz label maps, need "
                 f"more than --val_maps={args.val_maps}")
    for needed in (reference / "aligned_seg35.nii.gz", reference / "aligned_norm.nii.gz",
                   reference.parent / "seg35_labels.txt",
                   Path(args.intensity_dir) / "seg24_labels.txt"):
        if not needed.exists():
            sys.exit(f"error: {needed}: not found")
    seg35_names = read_colour_table(reference.parent / "seg35_labels.txt")
    fs_names = read_synthseg_table(label_dir / "labels_table.txt")
    settings = {
        "lookup": seg35_lookup(fs_names, seg35_names).tolist(),
        "reference": np.rint(np.asarray(nib.load(
            str(reference / "aligned_seg35.nii.gz")).dataobj)).astype(np.int32),
        "priors": priors_by_id(fs_names, intensity_priors(args.intensity_dir,
                                                          args.intensity_subjects)),
        "target_shape": shape, "deform": args.deform}
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_maps, val_maps = maps[:len(maps) - args.val_maps], maps[len(maps) - args.val_maps:]
    tasks = [(path, r, args.seed) for group in (train_maps, val_maps)
             for path in group for r in range(args.renders)]
    entries, residuals, aligned = {}, [], []
    affine = np.diag([*(np.array(settings["reference"].shape) / np.array(shape)), 1.0])
    with ProcessPoolExecutor(max(1, args.workers), initializer=_share,
                             initargs=(settings,)) as pool:
        for name, image, seg, residual in pool.map(make_subject, tasks):
            path = out_dir / f"{name}.npz"
            data_cache.save_npz(path, {"vol": image, "seg": seg, "affine": affine})
            entries[name] = {"sources": {"label_map": name.rsplit("_r", 1)[0]},
                             "shape": list(shape), "voxel_size": np.diag(affine)[:3].tolist(),
                             "labels": [int(v) for v in np.unique(seg) if v],
                             "lost_labels": [], "file": path.name,
                             "sha256": files.sha256(path)}
            if name.endswith("_r0"):
                residuals.append(residual)
                aligned.append(seg)
            print(f"{name}: {len(entries[name]['labels'])} seg35 labels, alignment residual "
                  f"{residual:.2f} voxels", flush=True)
    manifest = {"dataset": "synth3d", "settings": {
        **{k: v for k, v in vars(args).items() if k not in ("workers", "out_dir")},
        "train_subjects": len(train_maps) * args.renders,
        "val_subjects": len(val_maps) * args.renders},
        "label_names": {str(k): v for k, v in seg35_names.items()}, "subjects": entries}
    files.write_text(out_dir / data_cache.MANIFEST, json.dumps(manifest, indent=1) + "\n")
    ref_image = np.asarray(nib.load(str(reference / "aligned_norm.nii.gz")).dataobj,
                           dtype=np.float32)
    overlay_figure(out_dir / "alignment.png", vol_io.resize_volume(ref_image, shape),
                   aligned, [n for n in entries if n.endswith("_r0")],
                   [k for k, n in seg35_names.items() if normalise_name(n).endswith(
                       "lateral ventricle") and "inferior" not in normalise_name(n)])
    print(f"{out_dir}: {len(entries)} subjects ({manifest['settings']['train_subjects']} "
          f"training, {manifest['settings']['val_subjects']} validation); mean alignment "
          f"residual {np.mean(residuals):.2f} voxels of the reference")


if __name__ == "__main__":
    main()

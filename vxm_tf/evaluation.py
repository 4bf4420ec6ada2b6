"""Evaluate a registration model on pairs of in-memory volumes: overlap, surface distance,
deformation quality and speed, before (identity) and after registration."""

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from vxm_tf import files, metrics, registration

PAIR_FIELDS = ("moving", "fixed", "dice_before", "dice_after", "hd95_before", "hd95_after",
               "missing_before", "missing_after", "folding_percent", "sd_log_jacobian",
               "seconds")
LABEL_FIELDS = ("moving", "fixed", "label", "name", "dice_before", "dice_after",
                "hd_before", "hd_after", "hd95_before", "hd95_after")


def evaluate_pairs(model, volumes, pairs, surface=True, progress=None, moving_images=None,
                   instance_config=None):
    """Score `model` on (moving, fixed) index pairs of `volumes` (which need segmentations).

    Returns `(pair_rows, label_rows)`: one dict per pair (fields `PAIR_FIELDS`; Dice and
    HD95 averaged over the labels present in either map) and one per pair and label
    (`LABEL_FIELDS`). Distances are in mm from each fixed subject's voxel size; `surface`
    False skips the Hausdorff distances (NaN). `moving_images` (N, *spatial) replaces the
    images on the moving side only (e.g. intensity-perturbed copies); segmentations are
    never changed, so Dice measures alignment alone. `instance_config` adds test-time
    instance optimisation to every registration. Seconds are those of each pair's
    registration (batch 1, after one warm-up call).
    """
    if volumes.segs is None:
        raise ValueError("evaluation needs segmentations, and these volumes have none")
    pairs = [tuple(p) for p in pairs]
    moving_images = volumes.images if moving_images is None else moving_images

    def register(i, j, config=instance_config):
        return registration.displacements(model, moving_images[i:i + 1, ..., None],
                                          volumes.images[j:j + 1, ..., None], config)[0]
    # warm-up: the first call builds and compiles (one optimisation step is enough)
    register(*pairs[0], config=instance_config and dataclasses.replace(
        instance_config, steps=min(instance_config.steps, 1)))
    pair_rows, label_rows = [], []
    for n, (i, j) in enumerate(pairs):
        start = time.perf_counter()
        warp = register(i, j)
        seconds = time.perf_counter() - start
        pair_row, rows = score_pair(volumes, i, j, warp, surface=surface)
        pair_rows.append({**pair_row, "seconds": seconds})
        label_rows.extend(rows)
        if progress:
            progress(n + 1, len(pairs))
    return pair_rows, label_rows


def score_pair(volumes, i, j, warp, surface=True):
    """Scores of one registration of subject `i` onto subject `j` of `volumes` by the
    displacement `warp` `(*spatial, D)` in voxels, from any method (the moving segmentation
    is warped with nearest interpolation). Returns `(pair_row, label_rows)` as
    `evaluate_pairs`, without the seconds."""
    moved_seg = registration.warp_segmentations(volumes.segs[i][None], warp[None])[0]
    labels = volumes.labels
    fixed, moving = volumes.segs[j], volumes.segs[i]
    spacing = tuple(volumes.voxel_sizes[j])
    diagonal = float(np.linalg.norm(np.asarray(fixed.shape) * np.asarray(spacing)))
    scores, missing = {}, {}
    for when, seg in (("before", moving), ("after", moved_seg)):
        scores[f"dice_{when}"] = metrics.dice(seg, fixed, labels)
        present = set(np.unique(seg).tolist()) & set(np.unique(fixed).tolist())
        either = set(np.unique(seg).tolist()) | set(np.unique(fixed).tolist())
        missing[when] = sum(1 for k in labels if k in either and k not in present)
        for name, percent in (("hd", 100), ("hd95", 95)):
            distances = (metrics.hausdorff(seg, fixed, labels, spacing, percent) if surface
                         else dict.fromkeys(labels, np.nan))
            # a structure on one side only has no distance: it scores the image diagonal
            # (Learn2Reg's convention), so a destroyed structure never shrinks the mean
            scores[f"{name}_{when}"] = {k: diagonal if np.isinf(v) else v
                                        for k, v in distances.items()}
    label_rows = [{"moving": volumes.names[i], "fixed": volumes.names[j], "label": label,
                   "name": volumes.label_names.get(label, ""),
                   **{k: v[label] for k, v in scores.items()}} for label in labels]
    pair_row = {
        "moving": volumes.names[i], "fixed": volumes.names[j],
        **{k: _finite_mean(scores[k].values()) for k in
           ("dice_before", "dice_after", "hd95_before", "hd95_after")},
        "missing_before": missing["before"], "missing_after": missing["after"],
        "folding_percent": metrics.folding_percent(warp),
        "sd_log_jacobian": metrics.sd_log_jacobian(warp)}
    return pair_row, label_rows


def _finite_mean(values):
    values = np.asarray(list(values), dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def summarise(pair_rows, label_rows):
    """Means over pairs (and, per label, over pairs) of every score."""
    summary = {"pairs": len(pair_rows)}
    for field in PAIR_FIELDS[2:]:
        values = np.array([r[field] for r in pair_rows], dtype=float)
        known = values[~np.isnan(values)]  # HD95 is NaN throughout without surfaces
        summary[field] = float(known.mean()) if known.size else float("nan")
        summary[f"{field}_std"] = float(known.std()) if known.size else float("nan")
    per_label = {}
    for row in label_rows:
        entry = per_label.setdefault(row["label"], {"name": row["name"], "rows": []})
        entry["rows"].append(row)
    summary["labels"] = {
        str(label): {"name": e["name"], **{f: _finite_mean(r[f] for r in e["rows"])
                                           for f in LABEL_FIELDS[4:]}}
        for label, e in sorted(per_label.items())}
    return summary


def write_report(out_dir, pair_rows, label_rows, summary, title="Registration"):
    """per_pair.csv, per_label.csv, summary.json and summary.md in `out_dir` (atomic)."""
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        raise ValueError(f"{out_dir}: parent folder {out_dir.parent} does not exist")
    out_dir.mkdir(exist_ok=True)
    _write_csv(out_dir / "per_pair.csv", PAIR_FIELDS, pair_rows)
    _write_csv(out_dir / "per_label.csv", LABEL_FIELDS, label_rows)
    write_text(out_dir / "summary.json", json.dumps(json_safe(summary), indent=1,
                                                    allow_nan=False) + "\n")
    write_text(out_dir / "summary.md", markdown_summary(summary, title))


def json_safe(value):
    """`value` with every NaN float replaced by None (null in JSON, which has no NaN)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def markdown_summary(summary, title):
    s = summary
    lines = [f"# {title}", "", f"{s['pairs']} pairs; mean (standard deviation) over pairs.",
             "", "| | identity | registered |", "|---|---|---|",
             f"| Dice | {s['dice_before']:.3f} ({s['dice_before_std']:.3f}) | "
             f"{s['dice_after']:.3f} ({s['dice_after_std']:.3f}) |",
             f"| HD95 (mm) | {s['hd95_before']:.2f} | {s['hd95_after']:.2f} |",
             f"| structures on one side only (HD95: image diagonal) | "
             f"{s['missing_before']:.2f} | {s['missing_after']:.2f} |",
             f"| folding (% voxels, det J <= 0) | 0 | {s['folding_percent']:.3f} |",
             f"| SD log det J | 0 | {s['sd_log_jacobian']:.3f} |",
             f"| seconds per pair | | {s['seconds']:.4f} |", "",
             "| label | structure | Dice before | Dice after | HD95 before | HD95 after |",
             "|---|---|---|---|---|---|"]
    for label, e in s["labels"].items():
        lines.append(f"| {label} | {e['name']} | {e['dice_before']:.3f} | "
                     f"{e['dice_after']:.3f} | {e['hd95_before']:.2f} | {e['hd95_after']:.2f} |")
    return "\n".join(lines) + "\n"


write_text = files.write_text
_write_csv = files.write_csv


def models_and_test_pairs(specs):
    """Load `NAME=PATH` models and the test pairs of the data the first was trained on.

    Returns `({name: VxmDense}, volumes, pairs)`; the data come from the config.json of the
    first model's run directory. Raises `ValueError` naming what is wrong.
    """
    from vxm_tf import configs, experiment, hypermorph

    models = [spec.split("=", 1) for spec in specs]
    if not models or any(len(m) != 2 or not all(m) for m in models):
        raise ValueError(f"models are given as NAME=PATH, got {list(specs)}")
    config = configs.run_data_config(models[0][1])
    if config is None:
        raise ValueError(f"{models[0][1]}: no config.json beside it to find the test data")
    volumes = experiment.build_splits(config)["test"]
    pairs = experiment.split_pairs(volumes, atlas=bool(config.atlas))
    loaded = {name: hypermorph.load(path, source=f"{name}={path}") for name, path in models}
    return loaded, volumes, pairs

"""Evaluate a registration model on pairs of in-memory volumes: overlap, surface distance,
deformation quality and speed, before (identity) and after registration; and a model on a
dataset's split, with its report written to a folder (`evaluate_model`, `vxm-evaluate`)."""

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from vxm_tf import configs, data, files, metrics, models, registration
from vxm_tf import ops as vxm_ops

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


# the files of a report folder besides its example figures
REPORT_FILES = ("per_pair.csv", "per_label.csv", "summary.json", "summary.md",
                "dice_per_structure.png")


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
    from vxm_tf import experiment, hypermorph

    named = [spec.split("=", 1) for spec in specs]
    if not named or any(len(m) != 2 or not all(m) for m in named):
        raise ValueError(f"models are given as NAME=PATH, got {list(specs)}")
    names = [name for name, _ in named]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"models need distinct names: {', '.join(twice)} is given twice")
    config = configs.run_data_config(named[0][1])
    if config is None:
        raise ValueError(f"{named[0][1]}: no config.json beside it to find the test data")
    volumes = experiment.build_splits(config)["test"]
    pairs = experiment.split_pairs(volumes, atlas=bool(config.atlas))
    loaded = {name: hypermorph.load(path, source=f"{name}={path}") for name, path in named}
    for name, model in loaded.items():  # before any pair is registered
        if tuple(model.inshape) != tuple(volumes.shape):
            raise ValueError(f"{name}: the model takes images of shape "
                             f"{tuple(model.inshape)}, the test data are "
                             f"{tuple(volumes.shape)}")
    return loaded, volumes, pairs


def data_config(model_path, fl):
    """The `DataConfig` a model was trained with (its run's config.json), with the data
    flags given in `fl` (parsed absl `FlagValues` holding `configs.define_flags()`'s flags)
    applied over it; the flags alone for a model without a run. A registered model's data
    folder that is not here is a `DatasetError` saying how to point at it."""
    full = configs.config_from_flags(fl, training=False, check=False)
    config, saved = full.data, configs.run_data_config(model_path)
    given = {f.name for f in dataclasses.fields(config)
             if f.name in fl and fl[f.name].present}
    merged = config if saved is None else dataclasses.replace(
        saved, **{k: getattr(config, k) for k in given})
    configs.check_config(dataclasses.replace(full, data=merged), training=False)  # merged
    if saved is None:
        return merged
    name = models.name_of(model_path)
    if name and merged.data_dir and not Path(merged.data_dir).is_dir():
        raise data.DatasetError(
            f"{name} was trained and scored on {Path(merged.data_dir).name}, which is not at "
            f"{merged.data_dir}: give its folder with --data_dir (the neurite-OASIS archives: "
            "tools/fetch_oasis.py in the repository)")
    return merged


def default_out_dir(model_path, split, hyper_lambda=None, instance_steps=0, perturbation=""):
    """`eval-<split>/` beside a model file, `eval-<name>-<split>/` in the working folder for
    a registered model (never inside the package or the cache); a HyperMorph weight `h`
    adds `-h<h>`, instance optimisation `-instance<steps>`, a perturbation `-perturbed`,
    so that each is scored apart from the plain evaluation."""
    registered = models.name_of(model_path)
    at = ("" if hyper_lambda is None else f"-h{hyper_lambda:g}") + (
        f"-instance{instance_steps}" if instance_steps else "") + (
        "-perturbed" if perturbation else "")
    return (f"eval-{registered}-{split}{at}" if registered
            else str(Path(model_path).parent / f"eval-{split}{at}"))


def read_pairs(path, volumes, split="test"):
    """`[(i, j)]` indices into `volumes` from a file of 'moving fixed' subject names per
    line (of the `split` split), each pair once and no subject with itself; `DatasetError`
    naming the file and line otherwise."""
    index = {name: k for k, name in enumerate(volumes.names)}
    pairs = []
    for number, line in data.datasets.read_list(path, numbered=True):
        names = line.replace(",", " ").split()
        if len(names) != 2 or any(n not in index for n in names):
            raise data.DatasetError(f"{path}:{number}: expected two subject names of the "
                                    f"{split} split, got {line!r}")
        pair = (index[names[0]], index[names[1]])
        if pair[0] == pair[1] or pair in pairs:  # scored once, never against itself
            raise data.DatasetError(f"{path}:{number}: " + (
                f"{names[0]} paired with itself" if pair[0] == pair[1] else
                f"the pair {names[0]} {names[1]} is listed twice"))
        pairs.append(pair)
    if not pairs:
        raise data.DatasetError(f"--pairs={path}: no pairs listed")
    return pairs


def draw_figures(model, volumes, moving_images, pairs, label_rows, out_dir,
                 instance_config=None, count=5, seed=0, name="model"):
    """Write `count` example pairs (drawn with `seed`; `pair_<moving>_<fixed>.png`) and the
    per-structure Dice box plot (`dice_per_structure.png`, `name` labelling the model's
    boxes) into `out_dir`. `moving_images`: `(N, *inshape)`, the moving images as
    registered (perturbed or not); `pairs`: `[(i, j)]` into `volumes`; `label_rows`:
    `evaluate_pairs`' per-label rows."""
    from vxm_tf import figures  # matplotlib: only when drawing
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(pairs), min(count, len(pairs)), replace=False)
    drawn = []
    for n in sorted(chosen):
        i, j = pairs[n]
        moving, fixed = moving_images[i], volumes.images[j]
        warp = registration.displacements(model, moving[None, ..., None],
                                          fixed[None, ..., None], instance_config)
        moved = np.asarray(vxm_ops.transform(moving[None, ..., None], warp))[0, ..., 0]
        drawn.append(Path(out_dir) / f"pair_{volumes.names[i]}_{volumes.names[j]}.png")
        figures.pair_figure(moving, fixed, moved, warp[0], drawn[-1],
                            title=f"{volumes.names[i]} -> {volumes.names[j]}")
    figures.dice_boxplot({"identity": label_rows, name: label_rows},
                         Path(out_dir) / "dice_per_structure.png")
    return drawn


def evaluate_model(model_path, config, out_dir, split="test", pairs_path="", surface=True,
                   figure_count=5, perturbation="", seed=0, instance_config=None,
                   hyper_lambda=None, progress=None):
    """Score a model (file or registered name; `hyper_lambda`: a HyperMorph model's weight)
    on the pairs of `split` of the data `config` (`DataConfig`) describes, or on those
    listed in `pairs_path`, and write the report into `out_dir` (per_pair.csv,
    per_label.csv, summary.json, summary.md and figures: all or none).

    `surface`: compute Hausdorff distances (mm); `figure_count` example pairs drawn with
    `seed`; `perturbation`: `perturb.parse_perturbations`' text, applied to the moving
    images only (seeded by `seed`); `instance_config`: test-time instance optimisation;
    `progress(done, total)`: called as pairs are registered. Flags, the output folder and
    the model are checked before any pair is registered. Returns `summarise`'s summary."""
    from vxm_tf import experiment, hypermorph, instance, perturb
    if int(figure_count) != figure_count or figure_count < 0:
        raise ValueError(f"--figures must be 0 or more, got {figure_count}")
    files.check_output_folder(str(out_dir))
    standing = [n for n in REPORT_FILES if (Path(out_dir) / n).is_dir()]
    if standing:  # found now, not after every pair is registered
        raise ValueError(f"--out_dir={out_dir}: a folder stands where the report's "
                         f"{standing[0]} goes")
    inputs = {"--pairs": pairs_path, "--model": str(models.resolve(model_path)),
              **{f"--{name}": getattr(config, name) for name in configs.PATH_FIELDS}}
    for name in REPORT_FILES:  # the report's files may not replace what it reads
        files.check_not_inputs(str(Path(out_dir) / name), inputs, "--out_dir")
    perturbations = perturb.parse_perturbations(perturbation)
    model = hypermorph.load(model_path, hyper_lambda)
    if instance_config is not None:
        instance.check_for_model(instance_config, model)
    volumes = experiment.build_splits(config)[split]
    if volumes is None:
        raise data.DatasetError(f"the {split} split is empty")
    if len(volumes) < 2 and not pairs_path:
        raise data.DatasetError(f"--{split}={len(volumes)}: scoring needs pairs, "
                                "so at least 2 subjects")
    if len(volumes.shape) != len(model.inshape):
        raise ValueError(f"the model registers {len(model.inshape)}D images, the data are "
                         f"{len(volumes.shape)}D {volumes.shape}")
    if volumes.shape != model.inshape:
        raise ValueError(f"the model takes {len(model.inshape)}D images of shape "
                         f"{model.inshape}, the data are {volumes.shape}; set "
                         "--target_shape")
    pairs = (read_pairs(pairs_path, volumes, split) if pairs_path
             else experiment.split_pairs(volumes, atlas=bool(config.atlas)))
    moving_images = np.stack([perturb.perturb(image, perturbations, seed + k)
                              for k, image in enumerate(volumes.images)])
    blank = [volumes.names[k] for k, image in enumerate(moving_images)
             if np.ptp(image) < 1e-6]
    if blank:  # nothing left to register: a Dice of nothing
        raise ValueError(f"--perturb={perturbation} leaves {len(blank)} moving image(s) "
                         f"blank ({blank[0]}, ...): use a milder strength")
    rows = evaluate_pairs(model, volumes, pairs, surface, progress, moving_images,
                          instance_config)
    summary = summarise(*rows)
    title = f"{Path(str(model_path)).name} on {len(pairs)} pairs"
    hyper = getattr(model, "hyper_lambda", None)
    if hyper is not None:  # the HyperMorph weight it registered at
        summary["hyper_lambda"] = hyper[0] if len(hyper) == 1 else list(hyper)
        title += f", h = {', '.join(f'{h:g}' for h in hyper)}"
    if instance_config is not None and instance_config.steps:  # what produced the scores
        summary["instance"] = instance_config.describe()
        title += f", + {instance_config.steps} instance optimisation steps"
    if perturbations:
        summary["perturbation"] = perturbation
        title += f", moving images perturbed ({perturbation})"
    # an earlier report in the folder: its example figures are not this report's
    earlier = (set(Path(out_dir).glob("pair_*.png"))
               if (Path(out_dir) / "summary.json").is_file() else set())
    with files.all_or_nothing():  # the tables and figures together, or none
        write_report(out_dir, *rows, summary, title=title)
        drawn = draw_figures(model, volumes, moving_images, pairs, rows[1], out_dir,
                             instance_config, figure_count, seed, Path(str(model_path)).stem)
    for stale in earlier - set(drawn):
        stale.unlink()
    return summary

"""Learned templates as atlases, and age-conditioned templates (`make template-report` ->
reports/templates.md).

    python tools/report_templates.py --template vxm-tf-oasis2d-template \
        --conditional=vxm-tf-oasis2d-template-age --pairwise=vxm-tf-oasis2d-ncc \
        --out=reports/templates.md

(names or template runs' model files). The score rows it writes for the cards
(reports/templates/scores.json) are keyed by registry name where the model has one.

Atlas-based segmentation of the test subjects of the template run (its config.json): an
atlas image with a label map is registered onto each test scan and its labels brought
across (nearest neighbour); Dice against the scan's own segmentation, mean over labels.
Atlases:
- the learned template, its labels the majority vote of the training segmentations
  brought into template space either by the template's own network (scan-to-template
  fields) or by the pairwise model (each scan registered onto the template), registered
  onto each test scan by that network, and by the pairwise model;
- the mean training scan (the template before training), its labels the majority vote
  of the training segmentations as they are (affinely aligned), by the pairwise model;
- the single training subject that segments the validation subjects best (chosen on
  them alone), with its own segmentation, by the pairwise model.
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from vxm_tf import cli

cli.quiet_tensorflow_import()
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import reporting  # noqa: E402

from vxm_tf import (  # noqa: E402
    configs,
    data,
    experiment,
    files,
    hypermorph,
    io,
    metrics,
    models,
    registration,
    templates,
)
from vxm_tf.training import template as template_training  # noqa: E402


def in_memory(volumes):
    """A split with its images and segmentations as arrays (2D: small)."""
    n = range(len(volumes))
    return dataclasses.replace(volumes, images=np.stack([volumes.images[k] for k in n]),
                               segs=np.stack([volumes.segs[k] for k in n]))


def majority(segs):
    """The most frequent label at each voxel of label maps `(N, *spatial)`."""
    labels = np.unique(segs)
    counts = np.stack([(segs == k).sum(axis=0) for k in labels])
    return labels[np.argmax(counts, axis=0)].astype(np.int32)


def to_template(model, volumes):
    """The training segmentations brought into template space by the template model's
    network: each scan's scan-to-template field (its inverse direction), nearest."""
    network = model.registration_network()
    atlas = model.get_atlas()[None, ..., None]
    moved = []
    for k in range(len(volumes)):
        scan = volumes.images[k][None, ..., None]
        field = network.register_inverse(atlas, scan)  # on the template's grid
        moved.append(registration.warp_segmentations(volumes.segs[k:k + 1], field)[0])
    return np.stack(moved)


def to_template_pairwise(pairwise, template, volumes):
    """The training segmentations brought into template space by the pairwise model: each
    scan registered onto the template `(*spatial)`, its label map warped (nearest)."""
    moving = volumes.images[..., None].astype(np.float32)
    fixed = np.repeat(template[None, ..., None], len(volumes), 0).astype(np.float32)
    return registration.warp_segmentations(volumes.segs, pairwise.register(moving, fixed))


def atlas_dice(fields, atlas_seg, volumes, labels):
    """Mean Dice per subject of `atlas_seg` warped by each field onto `volumes`."""
    segs = registration.warp_segmentations(np.repeat(atlas_seg[None], len(fields), 0), fields)
    return np.array([metrics.mean_dice(seg, volumes.segs[k], labels)
                     for k, seg in enumerate(segs)])


def pairwise_fields(model, atlas, volumes):
    """Displacements taking `atlas` `(*spatial)` onto each scan of `volumes`."""
    moving = np.repeat(atlas[None, ..., None], len(volumes), 0).astype(np.float32)
    return model.register(moving, volumes.images[..., None].astype(np.float32))


def conditional_dice(cond, settings, base, csv, pairwise, train, volumes, labels):
    """Dice per subject of `volumes` segmented with the conditional template for that
    subject's own attributes (read from `csv`): the template's labels the majority vote of
    the training segmentations registered onto it by `pairwise`, the template registered
    onto the scan by `pairwise`."""
    encoded, _ = data.read_attributes(csv, settings["columns"], volumes.names,
                                      settings["encoding"])
    made = cond.template(encoded, base)[..., 0]
    dice = []
    for k, template in enumerate(made):
        seg = majority(to_template_pairwise(pairwise, template, train))
        one = dataclasses.replace(volumes, images=volumes.images[k:k + 1],
                                  segs=volumes.segs[k:k + 1], names=volumes.names[k:k + 1])
        dice.append(atlas_dice(pairwise_fields(pairwise, template, one), seg, one, labels)[0])
    return np.array(dice)


def score_row(data_name, dice, compared):
    """A card's atlas-based segmentation row (tools/model_card.py --report_scores)."""
    return {"data": data_name, "subjects": len(dice), "dice": round(float(dice.mean()), 4),
            "dice_sd": round(float(dice.std()), 4), "compared": compared,
            "command": "make template-report"}


def training_steps(model_path):
    """A run's training steps: its steps per epoch (as resolved) x the epochs it ran (the
    rows of its history.csv)."""
    run = Path(model_path).parent
    epochs = len((run / "history.csv").read_text().splitlines()) - 1
    return json.loads((run / "config.json").read_text())["steps_per_epoch"] * epochs


def figure(images, titles, path, rows=1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = int(np.ceil(len(images) / rows))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, image, title in zip(axes.ravel(), images, titles):
        ax.imshow(np.rot90(image), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    files.save_figure(fig, path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", nargs="+", required=True,
                        help="unconditional template models (runs on the same data): the "
                        "one whose atlas segments the validation subjects best is scored")
    parser.add_argument("--conditional", default="", help="age-conditioned template model")
    parser.add_argument("--pairwise", required=True, help="pairwise registration model")
    parser.add_argument("--ages", default="20,30,40,50,60,70,80,90")
    parser.add_argument("--out", type=reporting.markdown_path,
                        required=True, help="markdown report")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if not out.parent.is_dir():
            raise ValueError(f"{out}: folder {out.parent} does not exist")
        # a registered name is read from its folder in the package
        resolved = {path: models.resolve(path) for path in [*args.template, args.conditional]
                    if path}
        candidates = [templates.TemplateCreation.load(resolved[p]) for p in args.template]
        data_config = configs.run_data_config(args.template[0])
        if data_config is None:
            raise ValueError(f"--template {args.template[0]}: no config.json beside it (a "
                             "template run's model, or a registered template's name)")
        for path in args.template[1:]:
            if configs.run_data_config(path) != data_config:
                raise ValueError(f"--template {path}: trained on other data than "
                                 f"{args.template[0]}")
        if args.conditional:  # scored on the same subjects: trained on the same ones
            cond_data = configs.run_data_config(resolved[args.conditional])
            plain = {"attributes_csv": "", "attributes": ""}
            if cond_data is None or (dataclasses.replace(cond_data, **plain)
                                     != dataclasses.replace(data_config, **plain)):
                raise ValueError(f"--conditional {args.conditional}: trained on other data "
                                 f"than {args.template[0]}")
        pairwise = hypermorph.load(args.pairwise, source=f"--pairwise={args.pairwise}")
        splits = experiment.build_splits(data_config)
        if any(splits[s] is None or len(splits[s]) < 2 for s in ("train", "test", "val")):
            raise ValueError("the template run's data need training, test and validation "
                             "subjects (2 or more each)")
        ages = [float(a) for a in args.ages.split(",")]
    except (ValueError, OSError, data.DatasetError) as err:
        sys.exit(f"error: {err}")
    train, test, val = (in_memory(splits[s]) for s in ("train", "test", "val"))
    labels = train.labels
    print("template labels: the training segmentations in template space", flush=True)
    mean_seg = majority(np.asarray(train.segs))
    scores, validation = {}, {}  # test Dice per subject; mean validation Dice
    label_ways = ("labels by its own network", "labels by the pairwise model")
    runs = []  # per candidate: its labels both ways, their validation Dice
    for path, candidate in zip(args.template, candidates):
        atlas = candidate.get_atlas()
        segs = dict(zip(label_ways, (majority(to_template(candidate, train)),
                                     majority(to_template_pairwise(pairwise, atlas, train)))))
        runs.append((path, candidate, segs, {
            way: atlas_dice(pairwise_fields(pairwise, atlas, val), seg, val, labels).mean()
            for way, seg in segs.items()}))
    # the run and the way of making its labels that segment the validation subjects best
    path, model, segs, on_val_ways = max(runs, key=lambda r: max(r[3].values()))
    chosen_way = max(on_val_ways, key=on_val_ways.get)
    settings, base = template_training.read(Path(resolved[path]).parent)
    template, template_seg = model.get_atlas(), segs[chosen_way]
    for way, seg in segs.items():
        key = f"learned template ({way}), pairwise model"
        scores[key] = atlas_dice(pairwise_fields(pairwise, template, test), seg, test, labels)
        validation[key] = on_val_ways[way]
    key = "learned template (labels by its own network), its own network"
    scores[key] = atlas_dice(model.register(test.images[..., None].astype(np.float32)),
                             segs[label_ways[0]], test, labels)
    validation[key] = atlas_dice(model.register(val.images[..., None].astype(np.float32)),
                                 segs[label_ways[0]], val, labels).mean()
    key = "mean training scan, pairwise model"
    scores[key] = atlas_dice(pairwise_fields(pairwise, base, test), mean_seg, test, labels)
    validation[key] = atlas_dice(pairwise_fields(pairwise, base, val), mean_seg, val,
                                 labels).mean()
    print("choosing the best single-subject atlas on the validation subjects", flush=True)
    on_val = [atlas_dice(pairwise_fields(pairwise, train.images[k], val), train.segs[k], val,
                         labels).mean() for k in range(len(train))]
    best = int(np.argmax(on_val))
    single = f"best single subject ({train.names[best]}), pairwise model"
    scores[single] = atlas_dice(pairwise_fields(pairwise, train.images[best], test),
                                train.segs[best], test, labels)
    validation[single] = on_val[best]
    on_test = [atlas_dice(pairwise_fields(pairwise, train.images[k], test), train.segs[k],
                          test, labels).mean() for k in range(len(train))]
    unregistered = np.array([metrics.mean_dice(template_seg, test.segs[k], labels)
                             for k in range(len(test))])

    figure_dir = out.with_suffix("")
    figure_dir.mkdir(exist_ok=True)
    figure([base, template, train.images[best]],
           ["mean training scan", "learned template", f"best subject {train.names[best]}"],
           figure_dir / "atlases.png")
    lines_cond, card_rows = [], {}
    test_data = (f"neurite-OASIS 2D test subjects ({len(test)}), atlas registered by "
                 f"`{args.pairwise}`")
    template_key = f"learned template ({chosen_way}), pairwise model"
    compared = (f"best single training subject as atlas (chosen on validation) "
                f"{scores[single].mean():.4f}; mean training scan "
                f"{scores['mean training scan, pairwise model'].mean():.4f}")
    card_rows[models.name_of(resolved[path]) or path] = [
        score_row(test_data, scores[template_key], compared)]
    if args.conditional:
        cond = templates.ConditionalTemplateCreation.load(resolved[args.conditional])
        cond_settings, cond_base = template_training.read(
            Path(resolved[args.conditional]).parent)
        column = cond_settings["columns"][0]
        if len(cond_settings["columns"]) != 1 or "mean" not in cond_settings["encoding"][column]:
            sys.exit(f"error: --conditional {args.conditional}: this report draws templates "
                     "of one numeric attribute (age)")
        encoded = np.array([[data.encode_attribute(a, cond_settings["encoding"][column], column,
                                                   "--ages")] for a in ages], np.float32)
        aged = cond.template(encoded, cond_base)[..., 0]
        figure(list(aged), [f"{column} {a:g}" for a in ages], figure_dir / "by_age.png")
        change = np.abs(aged[-1] - aged[0])
        lines_cond = [
            "## Templates conditioned on age", "",
            f"`{args.conditional}`: one network for every age (trained on the training "
            f"subjects' {column}, {cond_settings['encoding'][column]['mean']:.0f} +- "
            f"{cond_settings['encoding'][column]['std']:.0f} years), its templates for "
            f"{column} {', '.join(f'{a:g}' for a in ages)}:", "",
            f"![templates by age]({figure_dir.name}/by_age.png)", "",
            f"Mean absolute difference between the {ages[0]:g} and {ages[-1]:g} templates: "
            f"{change.mean():.4f} (intensity in [0, 1]; largest {change.max():.3f}).", ""]
        print("segmenting each subject with the template of its own age", flush=True)
        csv = configs.run_data_config(resolved[args.conditional]).attributes_csv
        cond_test, cond_val = (conditional_dice(cond, cond_settings, cond_base, csv, pairwise,
                                                train, v, labels) for v in (test, val))
        same = scores[f"learned template ({label_ways[1]}), pairwise model"]
        lines_cond += [
            f"As an atlas, each subject segmented with the template of its own {column} (its "
            "labels the majority vote of the training segmentations registered onto it by "
            "the pairwise model, which registers it onto the scan): test Dice "
            f"{cond_test.mean():.4f} ({cond_test.std():.4f}), validation "
            f"{cond_val.mean():.4f}, against {same.mean():.4f} for the unconditional learned "
            "template with its labels made the same way: higher on "
            f"{int((cond_test > same).sum())} of the {len(test)} test subjects (paired "
            f"difference {(cond_test - same).mean():+.4f} +- {(cond_test - same).std():.4f}).",
            ""]
        key = models.name_of(resolved[args.conditional]) or args.conditional
        card_rows[key] = [score_row(
            f"{test_data}, each at the template of its own {column}", cond_test,
            f"the unconditional learned template, labels made the same way {same.mean():.4f}")]
    files.write_json(figure_dir / "scores.json", card_rows)  # the cards' rows
    # the scored template's label map (shipped with it: vxm-template writes it beside it)
    io.save_volume(str(figure_dir / template_training.LABELS), template_seg.astype(np.int32),
                   np.array(settings["affine"]))

    ranked = sorted(scores.items(), key=lambda kv: -kv[1].mean())
    winner, runner = ranked[0], ranked[1]
    lines = [
        "# Learned templates on neurite-OASIS 2D", "",
        f"Atlas-based segmentation of the {len(test)} test subjects of the template run "
        f"({len(labels)} labels; the training scans: {len(train)}, validation: {len(val)}). "
        "Each atlas is registered onto each test scan and its label map brought across; "
        "Dice against the scan's segmentation, mean over labels, then mean (standard "
        "deviation) over the test subjects.", "",
        *reporting.table(["atlas, registered by", "validation Dice", "test Dice"], [
            *[[name, f"{validation[name]:.4f}", f"{d.mean():.4f} ({d.std():.4f})"]
              for name, d in ranked],
            ["(template labels, no registration)", "",
             f"{unregistered.mean():.4f}"]]), "",
        f"**{winner[0]}** gives the highest Dice, {winner[1].mean():.4f}, "
        f"{winner[1].mean() - runner[1].mean():+.4f} against {runner[0]}: higher on "
        f"{int((winner[1] > runner[1]).sum())} of the {len(test)} test subjects (paired "
        f"difference {(winner[1] - runner[1]).mean():+.4f} +- "
        f"{(winner[1] - runner[1]).std():.4f}). The single subject "
        f"was chosen as the atlas that segments the {len(val)} validation subjects best "
        f"(Dice {on_val[best]:.4f}); on the test subjects the best of the {len(train)} would "
        f"have given {max(on_test):.4f} (an upper bound, chosen on the test subjects), the "
        f"median one {np.median(on_test):.4f}. Its validation Dice is the best of "
        f"{len(train)} on those subjects, so it overstates what it does elsewhere; the "
        "others' are not chosen on them.", "",
        *([f"The template run was chosen on the validation subjects among {len(runs)} "
           "(the learned template registered by the pairwise model, with its labels made "
           "either way):", "", *reporting.table(
               ["template run", "steps", *(f"validation Dice, {w}" for w in label_ways)],
               [[f"`{r[0]}`" + (" (**chosen**)" if r[0] == path else ""),
                 training_steps(resolved[r[0]]), *(f"{r[3][w]:.4f}" for w in label_ways)]
                for r in runs]), ""] if len(runs) > 1 else []),
        f"![the atlases]({figure_dir.name}/atlases.png)", "",
        "Template labels: the majority vote of the training segmentations brought into "
        "template space, by the template's own network (each scan's scan-to-template "
        "field) or by the pairwise model (each scan registered onto the template); "
        "'no registration' uses the labels that scored higher on the validation subjects. "
        "The mean scan's labels: the majority vote of the training segmentations as they "
        "are (the scans are affinely aligned). The learned template's label map (the one "
        f"chosen on the validation subjects, {chosen_way}) is written as "
        f"`{figure_dir.name}/{template_training.LABELS}`: shipped with the template, "
        "`vxm-template` writes it beside the template image.", "",
        *lines_cond,
        "## Runs", "",
        f"- template: `{path}` ({json.dumps(settings['template'])}); pairwise "
        f"registration: `{args.pairwise}`", "",
        *reporting.command_block([reporting.command_line("report_templates.py", argv)])]
    print(reporting.write(out, lines), end="")


if __name__ == "__main__":
    main()

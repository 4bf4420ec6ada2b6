"""Ship a trained model and (re)write its card: `make model-cards` runs it for every model.

    python tools/model_card.py --name=vxm-tf-oasis2d-ncc [--run=runs/oasis2d-ncc] \
        --score="neurite-OASIS 2D test pairs=" --score="... + 10 instance steps=--instance_steps=10"

With `--run`, the run's `best.keras` (or `--model_file`) is copied into
`vxm_tf/models/NAME/model.keras` with
its `config.json` (data paths made relative to the repository, so that `vxm-evaluate
--model=NAME` finds the data from a clone), `history.csv` and `timing.json`, and the
training summary (steps, epochs, validation Dice, step time, commit) goes into `card.json`.
Each `--score=LABEL=EVALUATE FLAGS` runs `python -m vxm_tf.evaluate --model=NAME EVALUATE
FLAGS` (the model's own test split unless the flags name other data) and records its Dice,
HD95, folding and the command. The card's `README.md` is then written from `card.json`
(`vxm_tf.models.card_markdown`); the fields given with `--card_json` (input contract,
licence, citation, source) are merged in first.

The card's kind (pairwise, hypermorph, template, conditional template) is the shipped
model's class; a template run's `template.json` and `base_template.nii.gz` are shipped
beside it (what `vxm-template` reads). Templates are scored by atlas-based segmentation,
not by vxm-evaluate: `--report_scores=reports/templates/scores.json` takes the rows
tools/report_templates.py wrote for the model's name.
"""

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from vxm_tf import configs, files, models  # noqa: E402
from vxm_tf.models import card_text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reporting  # noqa: E402


def relative_config(run_dir):
    """The run's config.json with its data paths relative to the repository (when under
    the repository's parent folder, as ../shared is) and the run folder dropped."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    for name in configs.PATH_FIELDS:
        value = config["data"].get(name)
        if value and os.path.isabs(value):
            config["data"][name] = os.path.relpath(value, models.REPOSITORY)
    config["train"]["model_dir"] = ""
    return config


def start_model(init_model):
    """How a run's --init_model reads on a card: the registry name of the model shipped
    from that run (or of that file), else its run folder."""
    folder = os.path.basename(os.path.dirname(init_model))
    shipped = [c.name for c in models.cards().values()
               if c.run and os.path.basename(c.run) == folder]
    return (shipped or [models.name_of(init_model) or folder])[0]


def attribute_ranges(run):
    """', the training subjects' Age 18 to 96' from a conditional template run's
    template.json (numeric attributes)."""
    encoding = json.loads((Path(run) / "template.json").read_text())["encoding"] or {}
    spans = [f"{c} {e['min']:g} to {e['max']:g}" for c, e in encoding.items() if "min" in e]
    return f"; the training subjects' {', '.join(spans)}" if spans else ""


def training_summary(run_dir, model_file="best.keras", model=None):
    """One paragraph: what the run trained on, how long, its validation Dice, the commit."""
    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    timing = json.loads((run / "timing.json").read_text()) if (run / "timing.json").exists() else {}
    versions = json.loads((run / "versions.json").read_text())
    lines = (run / "history.csv").read_text().splitlines()
    rows = [dict(zip(lines[0].split(","), r.split(","))) for r in lines[1:]]
    dice = [float(r["val_dice"]) for r in rows if r.get("val_dice")]
    d, lo, t = config["data"], config["loss"], config["train"]
    steps = config.get("steps_per_epoch", 0) * len(rows)
    m = config["model"]
    if m.get("template", "none") != "none":
        loss = (f"{m['template']} template: {lo['similarity']} of the template warped onto "
                f"each scan + {lo['template_mean_weight']} x MSE of the mean scan-to-template "
                f"field + {lo['reg_weight']} x Grad"
                + (f" + {lo['template_deform_weight']} x MSE of the template-to-scan "
                   "displacement" if m["template"] == "conditional" else "")
                + (f"; conditioned on {d['attributes']} (`{os.path.basename(d['attributes_csv'])}`"
                   f"{attribute_ranges(run)})" if m["template"] == "conditional" else ""))
    elif m.get("hyper"):
        loss = (f"(1 - h) x {lo['similarity']} + h x Grad, h in [0, 1] drawn per pair "
                f"(HyperMorph: {m['hyper_layers']} x {m['hyper_units']} hypernetwork units)")
    else:
        loss = f"{lo['similarity']} + {lo['reg_weight']} x Grad"
    text = (f"Trained by vxm_tf ({d['dataset']} data `{os.path.basename(d['data_dir'] or '')}`, "
            f"{d['train']} training subjects; {loss}"
            + (f" + {lo['seg_weight']} x Dice of the warped segmentations" if lo["seg_weight"]
               else "")
            + f"; Adam {t['lr']} {t['schedule']}; {len(rows)} epoch(s), {steps} steps"
            + (f" of the {t['epochs']} planned (the run was stopped there; its schedule spans "
               f"{t['epochs']})" if len(rows) < t["epochs"] else "")
            + (f" from `{start_model(t['init_model'])}`" if t.get("init_model") else "") + ")")
    if dice:
        kept = {"best.keras": "the best", "chosen.keras": "the last, at the weight below"}.get(
            model_file, model_file)
        at = f" at h = {t['hyper_val_lambda']:g}" if m.get("hyper") else ""
        text += (f"; validation Dice{at} by epoch {', '.join(f'{v:.3f}' for v in dice)} "
                 f"(kept: {kept})")
    if getattr(model, "hyper_lambda", None) is not None:
        text += (f"; registers at h = {', '.join(f'{h:g}' for h in model.hyper_lambda)}, the "
                 "weight vxm-choose-lambda chose on the validation pairs (--hyper_lambda "
                 "takes any other)")
    if timing.get("seconds_per_step"):
        text += f"; {timing['seconds_per_step']:.3f} s per step on {timing.get('device', 'CPU')}"
    text += f"; Keras {versions.get('keras')}, TensorFlow {versions.get('tensorflow')}"
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return text + (f"; shipped from vxm_tf commit {commit}" if commit else "") + "."


def same_weights(model, path):
    """Whether the model file at `path` holds `model`'s class and weights exactly."""
    import keras
    import numpy as np

    if not Path(path).is_file():
        return False
    shipped = keras.saving.load_model(path, compile=False)
    return (type(shipped) is type(model) and shipped.get_config() == model.get_config()
            and len(shipped.weights) == len(model.weights)
            and all(np.array_equal(a, b)
                    for a, b in zip(shipped.get_weights(), model.get_weights())))


def kind_of(model):
    """The card kind (`vxm_tf.models.KINDS`) of a loaded model."""
    from vxm_tf import hypermorph, templates

    if isinstance(model, templates.ConditionalTemplateCreation):
        return "conditional template"
    if isinstance(model, templates.TemplateCreation):
        return "template"
    return "hypermorph" if isinstance(model, hypermorph.HyperVxmDense) else "pairwise"


def report_scores(path, name):
    """A model's score rows written by a report (`{name: [rows]}` JSON, e.g.
    reports/templates/scores.json from tools/report_templates.py)."""
    rows = json.loads(Path(path).read_text())
    if name not in rows:
        sys.exit(f"error: --report_scores={path}: no scores for {name} (it has "
                 f"{', '.join(rows) or 'none'})")
    return rows[name]


def evaluate(name, label, flag_text):
    """Score the model with `python -m vxm_tf.evaluate`; the card row."""
    extra = shlex.split(flag_text)
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "vxm_tf.evaluate", f"--model={name}", "--figures=0",
                   *extra]
        subprocess.run([*command, f"--out_dir={out}/eval"], check=True, cwd=ROOT)
        summary = json.loads((Path(out) / "eval" / "summary.json").read_text())
    return {"data": label, "pairs": summary["pairs"],
            "dice": round(summary["dice_after"], 4),
            "dice_before": round(summary["dice_before"], 4),
            "hd95_mm": round(summary["hd95_after"], 3),
            "folding_percent": round(summary["folding_percent"], 4),
            "command": " ".join(["vxm-evaluate", f"--model={name}", *extra])}


def summary_markdown(cards):
    """reports/models.md: every registered model's scores, one table per kind of score."""
    rows = [(card, row) for card in cards.values() for row in card.scores]
    atlas = [(card, row) for card, row in rows if card_text.is_atlas_row(row)]
    lines = ["# Models by name: their scores", "",
             "Every model `vxm-models list` names, with the scores on its card "
             "(`vxm_tf/models/NAME/README.md`, or `vxm-models show NAME`: each row's command "
             "regenerates it). Written by `make model-cards` (tools/model_card.py --summary).",
             "", *reporting.table(
                 ["model", "input", "data", "pairs", "Dice before", "Dice", "HD95 mm",
                  "folding %"],
                 [[f"`{card.name}`", "x".join(map(str, card.input.get("shape", ()))),
                   row["data"], row["pairs"], f"{row['dice_before']:.3f}",
                   f"**{row['dice']:.3f}**", f"{row['hd95_mm']:.2f}",
                   f"{row['folding_percent']:.4f}"]
                  for card, row in rows if not card_text.is_atlas_row(row)])]
    if atlas:
        lines += ["", "Templates, as atlases: atlas-based segmentation Dice (mean, standard "
                  "deviation over the subjects).", "", *reporting.table(
                      ["model", "input", "data", "subjects", "Dice", "compared with"],
                      [[f"`{card.name}`", "x".join(map(str, card.input.get("shape", ()))),
                        row["data"], row["subjects"],
                        f"**{row['dice']:.4f}** ({row['dice_sd']:.4f})", row["compared"]]
                       for card, row in atlas])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--summary", help="write every card's scores as one table here "
                        "and stop")
    parser.add_argument("--name")
    parser.add_argument("--run", help="run folder whose best.keras to ship")
    parser.add_argument("--model_file", default="best.keras",
                        help="the run folder's file to ship (e.g. chosen.keras, a HyperMorph "
                        "model at the weight vxm-choose-lambda chose)")
    parser.add_argument("--card_json", help="JSON of card fields to set (input, licence, ...)")
    parser.add_argument("--score", action="append", default=[], metavar="LABEL=FLAGS")
    parser.add_argument("--extra_file", action="append", default=[],
                        help="a file to ship in the model's folder (e.g. a template's label "
                        "map written by its report)")
    parser.add_argument("--report_scores", help="JSON of score rows by model name written "
                        "by a report (templates: atlas-based segmentation)")
    args = parser.parse_args(argv)
    if args.summary:
        files.write_text(args.summary, summary_markdown(models.cards()))
        return
    if not args.name:
        parser.error("--name is required")
    folder = models.HERE / args.name
    if not (folder / "card.json").exists() and not args.run:
        parser.error(f"--name={args.name}: no such model yet; give --run to ship one")
    for spec in args.score:
        if "=" not in spec:
            parser.error(f"--score={spec}: give LABEL=EVALUATE FLAGS (the flags may be empty)")
    card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").exists() \
        else {"file": "model.keras", "shipped": True}
    if args.card_json:
        card.update(json.loads(Path(args.card_json).read_text()))
    unknown = set(card) - {f.name for f in dataclasses.fields(models.Card)}
    if unknown:
        parser.error(f"card fields {', '.join(sorted(unknown))} are not a Card's")
    if args.run:
        folder.mkdir(exist_ok=True)
        import keras  # the weights alone: the optimiser's state is for resuming a run

        from vxm_tf import hypermorph, networks, templates  # noqa: F401 - registers them
        model = keras.saving.load_model(Path(args.run) / args.model_file, compile=False)
        # the same model is not written again: a .keras file records when it was saved
        if not same_weights(model, folder / card["file"]):
            with files.atomic_path(folder / card["file"]) as tmp:
                model.save(tmp)
        card["run"] = str(Path(args.run))
        card["kind"] = kind_of(model)
        files.write_json(folder / "config.json", relative_config(args.run))
        # the training curve and speed; a template run's settings and starting image
        for name in ("history.csv", "timing.json", "template.json", "base_template.nii.gz"):
            if (Path(args.run) / name).is_file():
                shutil.copyfile(Path(args.run) / name, folder / name)
        card["training"] = training_summary(args.run, args.model_file, model)
    for path in args.extra_file:
        shutil.copyfile(path, folder / Path(path).name)
    if card.get("shipped"):
        digest = files.sha256(folder / card["file"])
        if card.get("sha256") not in (None, digest) and not (args.score or args.report_scores):
            card.pop("scores", None)  # other weights: the old scores are not theirs
        card["sha256"] = digest
        files.write_json(folder / "card.json", card)  # registered: the scores use its name
    if args.score or args.report_scores:
        card["scores"] = ([evaluate(args.name, *spec.split("=", 1)) for spec in args.score]
                          + (report_scores(args.report_scores, args.name)
                             if args.report_scores else []))
    card.setdefault("kind", "pairwise")
    order = ("kind", "file", "sha256", "shipped", "url", "input", "training", "scores", "licence",
             "citation", "source", "run")
    card = {k: card[k] for k in order if k in card}
    files.write_json(folder / "card.json", card)
    files.write_text(folder / "README.md", models.card_markdown(models.read_card(folder)))
    print(f"{folder}: card written")


if __name__ == "__main__":
    main()

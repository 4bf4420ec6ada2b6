"""A registered model's card as text: the Markdown of its folder's README.md (`vxm-models
show NAME`) and the paragraph `vxm-models list` prints.

A card's `kind` says what the model does (`vxm_tf.models.KINDS`) and so how it is used and
scored: pairwise and HyperMorph models by vxm-evaluate on registered pairs, templates by
atlas-based segmentation (the template registered onto each test scan, its labels brought
across).
"""

CONTRACT = {"shape": "shape (voxels)", "voxel_size_mm": "voxel size (mm)", "space": "space",
            "contrast": "contrast", "skull": "skull", "intensity": "intensities"}

REGISTER = ("`vxm-register` takes scans of any size, orientation and voxel size: it "
            "pre-aligns the moving scan to the fixed one in world coordinates and resamples "
            "both onto this grid; both scans are min-max scaled to [0, 1] unless both "
            "already lie in it (`--normalise`).")

USE = {
    "pairwise": REGISTER,
    "hypermorph": REGISTER + " It registers at the smoothness weight h named under Training "
    "unless `--hyper_lambda=H` gives another (H in [0, 1]: the training loss was (1 - H) x "
    "similarity + H x Grad, so a larger H gives a smoother field); `vxm-choose-lambda` "
    "chooses H on labelled validation scans of your own.",
    "template": "`vxm-template --model={name} --out_dir=DIR` writes the template as "
    "`DIR/template.nii.gz` with the training scans' affine (clipped to [0, 1]), and its "
    "label map as "
    "`DIR/template_seg.nii.gz` where the model has one (the atlas of atlas-based "
    "segmentation: `vxm-register --model=PAIRWISE --moving=DIR/template.nii.gz "
    "--moving_seg=DIR/template_seg.nii.gz --fixed=SCAN --moved=... --moved_seg=...` brings "
    "it onto a scan, PAIRWISE a pairwise model of the same space: the scores below name the "
    "one used); in Python, "
    "`TemplateCreation.load('{name}').register(scans)` gives each scan's template-to-scan "
    "displacement. Scans must follow the contract above (the template's space).",
    "conditional template": "`vxm-template --model={name} --values=20,40,60 --out_dir=DIR` "
    "writes the template for each value of the attribute(s) named under Training, with the "
    "training scans' affine, clipped to [0, 1]; values outside the training subjects' range "
    "are extrapolated (and warned about). Its network registers templates onto scans in "
    "training only: register a template with a pairwise model of the same space "
    "(`vxm-register --model=PAIRWISE --moving=DIR/template_Age-40.nii.gz --fixed=SCAN ...`). "
    "Scans must follow the contract above (the templates' space).",
}


def is_atlas_row(row):
    """Whether a score row is an atlas-based segmentation score (a template's)."""
    return "subjects" in row


def score_lines(scores):
    """The Markdown table(s) of a card's score rows."""
    pairwise = [r for r in scores if not is_atlas_row(r)]
    atlas = [r for r in scores if is_atlas_row(r)]
    lines = []
    if pairwise:
        lines += ["| data | pairs | Dice before | Dice | HD95 mm | folding % | command |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['data']} | {r['pairs']} | {r['dice_before']:.3f} | {r['dice']:.3f} "
                  f"| {r['hd95_mm']:.2f} | {r['folding_percent']:.4f} | `{r['command']}` |"
                  for r in pairwise]
        lines.append("")
    if atlas:
        lines += ["Atlas-based segmentation: the template registered onto each test scan, "
                  "its label map brought across; Dice against the scan's segmentation, mean "
                  "over labels, then mean (standard deviation) over the subjects.", "",
                  "| data | subjects | Dice | compared with | command |", "|---|---|---|---|---|"]
        lines += [f"| {r['data']} | {r['subjects']} | {r['dice']:.4f} ({r['dice_sd']:.4f}) | "
                  f"{r['compared']} | `{r['command']}` |" for r in atlas]
        lines.append("")
    return lines


def card_markdown(entry):
    """A card (`vxm_tf.models.Card`) as the Markdown of its folder's README.md."""
    from vxm_tf.models import KINDS

    contract = entry.input
    lines = [f"# {entry.name}", "", f"{KINDS[entry.kind][0].upper()}{KINDS[entry.kind][1:]}.",
             "",
             f"Weights: `{entry.file}` (sha256 `{entry.sha256}`), "
             + ("shipped in this folder." if entry.shipped else
                f"not redistributed: `vxm-models fetch {entry.name}` downloads it from "
                f"{entry.url} (or `--from=PATH` takes a local copy) and checks the sha256."),
             "", "## Input", ""]
    for key, title in CONTRACT.items():
        if key in contract:
            value = contract[key]
            value = " x ".join(map(str, value)) if isinstance(value, list) else value
            lines.append(f"- {title}: {value}")
    lines += ["", USE[entry.kind].format(name=entry.name), "", "## Training", "",
              entry.training or "-", ""]
    if entry.scores:
        lines += ["## Scores", "", *score_lines(entry.scores),
                  "Regenerated by `make model-cards` (tools/model_card.py).", ""]
    lines += ["## Licence", "", entry.licence or "-", "", "## Citation", "",
              entry.citation or "-", "", "## Source", "", entry.source or "-", ""]
    return "\n".join(lines)


def describe(entry):
    """One paragraph on a card (`vxm_tf.models.Card`) for `vxm-models list`."""
    from vxm_tf.models import KINDS

    contract = entry.input
    shape = "x".join(str(n) for n in contract.get("shape", ()))
    if entry.available:
        where = f"{'shipped' if entry.shipped else 'fetched'}: {entry.path}"
    else:
        where = ("missing from the package" if entry.shipped else
                 f"not fetched yet: vxm-models fetch {entry.name}")
    lines = [f"{entry.name}  ({where})", f"  {KINDS[entry.kind]}",
             f"  input: {shape}, {contract.get('voxel_size_mm', '?')} mm, "
             f"{contract.get('space', '')}; {contract.get('contrast', '')}, "
             f"{contract.get('skull', '')}, intensities {contract.get('intensity', '')}"]
    for row in entry.scores:
        if is_atlas_row(row):
            lines.append(f"  atlas-based segmentation Dice {row['dice']:.3f} on {row['data']} "
                         f"({row['subjects']} subjects)")
        else:
            lines.append(f"  Dice {row['dice']:.3f} (from {row['dice_before']:.3f}) on "
                         f"{row['data']} ({row['pairs']} pairs)")
    return "\n".join(lines)

"""Models by name (`vxm_tf.models`): resolution, fetching with checksums, the cards, and the
names the README and the Makefile use."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vxm_tf import models, networks

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
PRETRAINED = SHARED / "models" / "vxm_dense_brain_T1_3D_mse.h5"
AUTHORS = "vxm-brain-t1-3d-mse"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty user cache."""
    monkeypatch.setenv("VXM_TF_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A registry holding one fetched-on-demand model: a small file with a known sha256."""
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"vxm_tf test weights")
    folder = tmp_path / "registry" / "tiny-model"
    folder.mkdir(parents=True)
    (folder / "card.json").write_text(json.dumps({
        "file": "tiny.h5", "sha256": models.sha256(weights), "shipped": False,
        "url": "http://127.0.0.1:9/none.h5", "input": {"shape": [8, 8]}}))
    monkeypatch.setattr(models, "HERE", tmp_path / "registry")
    return weights


def test_every_card_is_complete_and_its_readme_is_generated_from_it():
    cards = models.cards()
    assert AUTHORS in cards and len(cards) >= 2
    for name, card in cards.items():
        assert re.fullmatch(r"[0-9a-f]{64}", card.sha256), name
        for key in ("shape", "voxel_size_mm", "space", "contrast", "skull", "intensity"):
            assert key in card.input, f"{name}: input contract lacks {key}"
        assert card.training and card.licence and card.citation and card.source, name
        assert (card.folder / "README.md").read_text() == models.card_markdown(card), (
            f"{name}: README.md differs from card.json; run tools/model_card.py --name={name}")


def test_shipped_models_are_in_the_package_with_their_checksum_and_load():
    from vxm_tf import hypermorph, templates

    shipped = [c for c in models.cards().values() if c.shipped]
    assert shipped, "vxm_tf ships its own trained models"
    kinds = {"pairwise": networks.VxmDense, "hypermorph": hypermorph.HyperVxmDense,
             "template": templates.TemplateCreation,
             "conditional template": templates.ConditionalTemplateCreation}
    assert {c.kind for c in shipped} == set(kinds), "a shipped model of every kind"
    for card in shipped:
        assert models.resolve(card.name) == str(card.path)
        assert models.sha256(card.path) == card.sha256, card.name
        assert card.path.stat().st_size < 5 * 2**20
        model = kinds[card.kind].load(card.name)
        assert type(model) is kinds[card.kind], f"{card.name}: its card says {card.kind}"
        inshape = model.inshape if card.kind in ("pairwise", "hypermorph") else \
            model.inputs[-1].shape[1:-1]
        assert list(inshape) == list(card.input["shape"]), card.name
        assert card.scores, f"{card.name}: a shipped model's card gives its scores"
        assert (card.folder / "config.json").is_file()


def test_paths_pass_through_and_unknown_names_are_one_line_errors(tmp_path):
    existing = tmp_path / "m.keras"
    existing.write_bytes(b"x")
    assert models.resolve(str(existing)) == str(existing)
    assert models.resolve("runs/none/best.keras") == "runs/none/best.keras"  # its reader says
    with pytest.raises(models.ModelError) as err:
        models.resolve("vxm-brain-t1-3d-msee")
    assert "not a model name" in str(err.value) and AUTHORS in str(err.value)
    assert len(str(err.value).splitlines()) == 1
    with pytest.raises(ValueError, match="not a model name"):
        networks.VxmDense.load("no-such-model")


def test_a_name_not_fetched_yet_names_the_fetch_command(home):
    with pytest.raises(models.ModelError, match=f"vxm-models fetch {AUTHORS}"):
        models.resolve(AUTHORS)
    with pytest.raises(ValueError, match="not fetched yet"):
        networks.VxmDense.load(AUTHORS)


def test_fetch_from_a_local_copy_checks_the_checksum(home, registry):
    target = models.fetch("tiny-model", str(registry))
    assert target == home / "models" / "tiny-model" / "tiny.h5"
    assert target.read_bytes() == registry.read_bytes()
    assert models.resolve("tiny-model") == str(target)


def test_a_wrong_checksum_caches_nothing(home, registry, tmp_path):
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    with pytest.raises(models.ModelError, match="nothing was cached") as err:
        models.fetch("tiny-model", str(other))
    assert len(str(err.value).splitlines()) == 1
    assert not [p for p in (home / "models").rglob("*") if p.is_file()]
    with pytest.raises(models.ModelError, match="no such file"):
        models.fetch("tiny-model", str(tmp_path / "missing.h5"))
    with pytest.raises(models.ModelError, match="download failed"):  # port 9: refused
        models.fetch("tiny-model")
    assert not [p for p in (home / "models").rglob("*") if p.is_file()]


def test_models_command_line(home, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "vxm_tf.models", *args],
                              capture_output=True, text=True, cwd=tmp_path)
    listed = run("list")
    assert listed.returncode == 0 and AUTHORS in listed.stdout
    assert f"not fetched yet: vxm-models fetch {AUTHORS}" in listed.stdout
    bad = run("fetch", "nope")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope" in bad.stderr
    wrong = run("fetch", AUTHORS, f"--from={tmp_path}")
    assert wrong.returncode == 2 and "a folder, not a file" in wrong.stderr
    assert not (home / "models").exists() or not [
        p for p in (home / "models").rglob("*") if p.is_file()]
    shown = run("show", AUTHORS)
    assert shown.returncode == 0 and "## Input" in shown.stdout
    shown = run("show", "vxm-tf-oasis2d-template")  # a template's card says how it is used
    assert shown.returncode == 0 and "--model=vxm-tf-oasis2d-template --out_dir" in shown.stdout
    assert "Atlas-based segmentation" in shown.stdout
    assert "--moving_seg=DIR/template_seg.nii.gz" in shown.stdout  # how to segment with it
    assert "`vxm-register` takes scans of any size" not in shown.stdout  # not a pairwise one


def test_a_card_of_an_unknown_kind_is_refused(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "card.json").write_text(json.dumps({"kind": "segmenter", "file": "m.keras",
                                                  "sha256": "0" * 64, "shipped": True}))
    with pytest.raises(models.ModelError, match="kind 'segmenter' is not one of"):
        models.read_card(folder)
    (folder / "card.json").write_text(json.dumps({"file": "m.keras", "sha256": "0" * 64,
                                                  "shipped": True, "license": "MIT"}))
    with pytest.raises(models.ModelError, match="unknown or missing fields license"):
        models.read_card(folder)  # a misspelt field: one line, not a TypeError


def test_a_shipped_template_writes_its_template_by_name(tmp_path):
    """`vxm-template --model=NAME`: the template of the shipped model, with the training
    scans' affine, as the model holds it."""
    from vxm_tf import io, templates
    from vxm_tf.training import template

    written = template.write_templates("vxm-tf-oasis2d-template", str(tmp_path / "out"))
    assert [Path(p).name for p in written] == ["template.nii.gz", "template_seg.nii.gz"]
    image, labels = (io.load_volume(p) for p in written)
    atlas = templates.TemplateCreation.load("vxm-tf-oasis2d-template").get_atlas()
    np.testing.assert_array_equal(image.data, np.clip(atlas, 0, 1))  # the scans' range
    assert image.affine[0, 0] == -1  # the data's orientation, not an identity
    np.testing.assert_array_equal(labels.affine, image.affine)
    assert labels.data.shape == atlas.shape and len(np.unique(labels.data)) == 25  # 24 + 0
    folder = models.card("vxm-tf-oasis2d-template").folder
    with pytest.raises(ValueError, match="the model's own folder"):
        template.write_templates("vxm-tf-oasis2d-template", str(folder))
    aged = template.write_templates("vxm-tf-oasis2d-template-age", str(tmp_path / "ages"),
                                    "20,90")
    young, old = (io.load_volume(p).data for p in aged)
    assert np.abs(young - old).mean() > 1e-3  # conditioned: the ages differ


@pytest.mark.skipif(not PRETRAINED.exists(), reason=f"{PRETRAINED} is absent")
def test_fetched_authors_model_is_the_same_file(home):
    done = subprocess.run([sys.executable, "-m", "vxm_tf.models", "fetch", AUTHORS,
                           f"--from={PRETRAINED}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert models.resolve(AUTHORS) == str(home / "models" / AUTHORS / PRETRAINED.name)
    by_name, by_path = networks.VxmDense.load(AUTHORS), networks.VxmDense.load(PRETRAINED)
    for a, b in zip(by_name.weights, by_path.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def named_models(text):
    """The values of --model= / --init_model= / --models NAME=... in a text."""
    found = re.findall(r"--(?:init_)?model[= ]([^\s`\"')]+)", text)
    found += re.findall(r"--models(?: [\w+-]+=[^\s\\]+)+", text)
    values = []
    for item in found:
        if item.startswith("--models"):
            values += [v.split("=", 1)[1] for v in item.split()[1:]]
        else:
            values.append(item)
    return values


def test_the_readme_names_models_that_resolve_from_a_clone():
    """Every model a README command uses is a registered name, a file under ../shared, or
    the run a command just before it trains (runs/ is never committed)."""
    readme = (ROOT / "README.md").read_text()
    names = named_models(readme)
    assert AUTHORS in names, "the quick start fetches the authors' model by name"
    for value in names:
        if value in ("M", "NAME", "PATH", "M.keras") or value.startswith("$"):
            continue  # placeholders
        if models.is_name(value):
            continue
        if value.startswith("runs/"):
            run = value.split("/")[1]
            assert re.search(rf"(RUN=runs/{run}\b|model_dir=runs/{run}\b|make train "
                             rf"DATA={run.split('-')[0]} LOSS={run.split('-', 1)[-1]}\b)",
                             readme), f"README uses {value}, which no README command makes"
            continue
        assert value.startswith("../shared/"), f"README names {value}: not a model name"


def make_targets():
    """The model files the Makefile's rules make (pattern rules with `%`), from make's own
    database (nothing is run)."""
    done = subprocess.run(["make", "-pRrq", "nothing"], cwd=ROOT, capture_output=True,
                          text=True)
    return {line.split(":")[0] for line in done.stdout.splitlines()
            if line[:1] not in ("", "#", "\t", " ") and ".keras:" in line}


def test_the_reports_score_names_or_runs_their_make_targets_train():
    """A report's models resolve from a clone: registered names, or runs (never kept) that
    a make rule trains when they are missing."""
    from fnmatch import fnmatch

    targets = make_targets()
    assert "runs/hypermorph/lambda-%/model.keras" in targets
    for report in sorted((ROOT / "reports").rglob("*.md")):
        text = report.read_text()
        made = {f"runs/{d}-{loss}/" for d, loss in re.findall(
            r"make train DATA=(\S+) LOSS=(\S+)", text)}  # an example trains it just before
        for path in sorted(set(re.findall(r"runs/[\w.+/-]+\.keras", text))):
            assert any(fnmatch(path, t.replace("%", "*")) for t in targets) or any(
                path.startswith(m) for m in made), (
                f"{report.relative_to(ROOT)} scores {path}: no make rule trains it")
        for name in set(re.findall(r"\bvxm-(?:tf|brain)-[\w.-]*\w", text)):
            assert models.is_name(name), f"{report.relative_to(ROOT)} names {name}: not a model"


def test_the_readme_is_written_for_users():
    readme = (ROOT / "README.md").read_text()
    for phrase in ("lent gpu", "lease", "project brief", "2-core", "this cpu", "our machine",
                   "this project's"):
        assert phrase not in readme.lower(), f"README speaks of {phrase!r}"
    sections = re.split(r"\n## ", readme)
    for section in sections:
        if "../shared" in section:
            assert section.startswith("Reproducing the reports"), section.splitlines()[0]
    quick = next(s for s in sections if s.startswith("Quick start"))
    commands = [line for line in quick.split("```sh")[1].split("```")[0].splitlines()
                if line.startswith("vxm-")]
    assert len(commands) <= 3 and commands[0].startswith(f"vxm-models fetch {AUTHORS}")
    assert f"vxm-register --model={AUTHORS}" in quick


OASIS3D = SHARED / "data" / "neurite-oasis-3d"


@pytest.mark.grappler  # compared with a command's output to 1e-6
@pytest.mark.slow
@pytest.mark.skipif(not (PRETRAINED.exists() and OASIS3D.is_dir()),
                    reason=f"needs {PRETRAINED} and {OASIS3D} (../shared beside the repo)")
def test_quick_start_by_name_gives_what_the_file_gives(home, tmp_path):
    """The README's quick start (fetch from the local copy, register by name through the
    console command) against the library given the .h5 path."""
    import nibabel as nib

    from vxm_tf import affine, workflows

    bin_dir = Path(sys.executable).parent
    done = subprocess.run([bin_dir / "vxm-models", "fetch", AUTHORS, f"--from={PRETRAINED}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    a, b = (OASIS3D / f"OASIS_OAS1_000{k}_MR1" / "aligned_norm.nii.gz" for k in (1, 2))
    done = subprocess.run([bin_dir / "vxm-register", f"--model={AUTHORS}", f"--moving={a}",
                           f"--fixed={b}", f"--moved={tmp_path / 'by_name.nii.gz'}",
                           "--affine=none"], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    workflows.register_files(str(PRETRAINED), str(a), str(b), str(tmp_path / "by_path.nii.gz"),
                             affine_config=affine.AffineConfig("none"))
    by_name = nib.load(tmp_path / "by_name.nii.gz")
    by_path = nib.load(tmp_path / "by_path.nii.gz")
    np.testing.assert_array_equal(by_name.affine, by_path.affine)
    np.testing.assert_allclose(by_name.get_fdata(), by_path.get_fdata(), atol=1e-6)


def test_train_and_evaluate_take_names():
    from vxm_tf import configs

    shipped = "vxm-tf-oasis2d-ncc"
    config = configs.Config(train=configs.TrainConfig(init_model=shipped))
    configs.check_config(config)
    with pytest.raises(configs.ConfigError, match="--init_model=nope: no such model file"):
        configs.check_config(configs.Config(train=configs.TrainConfig(init_model="nope")))
    data = configs.run_data_config(shipped)  # a shipped model's data, from the repository
    assert data is not None and Path(data.data_dir).is_absolute()
    assert Path(data.data_dir).resolve().parent == SHARED.resolve() / "data"


def test_a_name_is_not_shadowed_by_a_folder_of_that_name(home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / AUTHORS).mkdir()
    with pytest.raises(models.ModelError, match="not fetched yet"):
        models.resolve(AUTHORS)
    assert models.resolve(f".{os.sep}{AUTHORS}") == f".{os.sep}{AUTHORS}"


def test_a_damaged_cached_model_is_named(home, registry):
    target = models.fetch("tiny-model", str(registry))
    target.write_bytes(b"truncated")
    with pytest.raises(models.ModelError, match="damaged.*vxm-models fetch tiny-model"):
        models.resolve("tiny-model")
    mask = os.umask(0o022)
    try:  # fetched again, readable by others as any new file under umask 022
        assert models.fetch("tiny-model", str(registry)).stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(mask)


def test_an_installed_package_carries_every_models_files():
    """`pip install .` (not editable) installs what setup.cfg's package_data matches: every
    file of every model folder must match (a comma-separated list was one pattern, and a
    plain install had no cards and no weights)."""
    from fnmatch import fnmatch

    from setuptools.config.setupcfg import read_configuration

    patterns = read_configuration(ROOT / "setup.cfg")["options"]["package_data"]
    patterns = patterns["vxm_tf.models"]
    folder = ROOT / "vxm_tf" / "models"
    found = [p.relative_to(folder).as_posix() for p in folder.glob("*/*")
             if p.is_file() and not p.parent.name.startswith("__")]
    assert any(name.endswith("/model.keras") for name in found)
    for name in found:
        assert any(fnmatch(name, pattern) for pattern in patterns), (
            f"{name} is not installed by setup.cfg's package_data")


def test_fetching_a_shipped_model_checks_the_packages_copy(tmp_path, monkeypatch):
    folder = tmp_path / "registry" / "tiny-shipped"
    folder.mkdir(parents=True)
    (folder / "m.keras").write_bytes(b"shipped weights")
    (folder / "card.json").write_text(json.dumps({
        "file": "m.keras", "sha256": models.sha256(folder / "m.keras"), "shipped": True}))
    monkeypatch.setattr(models, "HERE", tmp_path / "registry")
    assert models.fetch("tiny-shipped") == folder / "m.keras"
    (folder / "m.keras").write_bytes(b"replaced")
    with pytest.raises(models.ModelError, match="differs from its card's sha256"):
        models.fetch("tiny-shipped")


def test_vxm_template_refuses_bad_values_and_blocked_outputs_before_writing(tmp_path):
    from vxm_tf.training import template

    age = "vxm-tf-oasis2d-template-age"
    with pytest.raises(ValueError, match="--values=,: no values"):
        template.write_templates(age, str(tmp_path / "a"), ",")
    with pytest.raises(ValueError, match="--out_dir is empty"):
        template.write_templates(age, "", "20")
    out = tmp_path / "out"
    (out / "template_Age-20.nii.gz").mkdir(parents=True)
    (out / "template_Age-30.nii.gz").write_text("OLD")
    with pytest.raises(ValueError, match="template_Age-20.nii.gz: a folder stands there"):
        template.write_templates(age, str(out), "30,20")
    assert (out / "template_Age-30.nii.gz").read_text() == "OLD"  # nothing written
    notes = []
    template.write_templates(age, str(tmp_path / "old"), "95", log=notes.append)
    assert notes and "Age=95 (trained on 18 to 89)" in notes[0]  # the shipped range

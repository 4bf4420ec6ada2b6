"""The hand-run tools: fetching archives and preparing the cache."""

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import compare  # noqa: E402
import fetch_oasis  # noqa: E402
import prepare_data  # noqa: E402
import report_beyond  # noqa: E402
import report_selection  # noqa: E402
import robustness  # noqa: E402
import sync_readme  # noqa: E402
from fixtures import fake_oasis  # noqa: E402

from vxm_tf import evaluation, instance  # noqa: E402


def make_tar(path, files):
    with tarfile.open(path, "w") as archive:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_fetch_unpacks_a_local_archive_and_checks_its_sha256(tmp_path):
    digest = make_tar(tmp_path / "a.tar", {"neurite-oasis/subjects.txt": b"OAS1\n",
                                           "neurite-oasis/OAS1/slice_norm.nii.gz": b"x"})
    out = tmp_path / "out"
    got = fetch_oasis.fetch((tmp_path / "a.tar").as_uri(), out, sha256=digest, progress=None)
    assert got == digest
    assert (out / "neurite-oasis" / "subjects.txt").read_text() == "OAS1\n"
    assert [p.name for p in out.iterdir()] == ["neurite-oasis"]


def test_fetch_refuses_a_bad_checksum_and_a_broken_archive(tmp_path):
    make_tar(tmp_path / "a.tar", {"f.txt": b"data"})
    with pytest.raises(fetch_oasis.FetchError, match="does not match the expected 00ff"):
        fetch_oasis.fetch((tmp_path / "a.tar").as_uri(), tmp_path / "o1", sha256="00ff",
                          progress=None)
    assert list((tmp_path / "o1").iterdir()) == []
    (tmp_path / "b.tar").write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(fetch_oasis.FetchError, match="not a readable tar archive"):
        fetch_oasis.fetch((tmp_path / "b.tar").as_uri(), tmp_path / "o2", progress=None)
    with pytest.raises(fetch_oasis.FetchError, match="cannot open"):
        fetch_oasis.fetch((tmp_path / "missing.tar").as_uri(), tmp_path / "o3", progress=None)


def test_fetch_blocks_paths_outside_the_folder(tmp_path):
    make_tar(tmp_path / "evil.tar", {"../escape.txt": b"x"})
    with pytest.raises(fetch_oasis.FetchError):
        fetch_oasis.fetch((tmp_path / "evil.tar").as_uri(), tmp_path / "o", progress=None)
    assert not (tmp_path / "escape.txt").exists()


def test_prepare_data_cli_writes_the_cache_once(tmp_path, capsys):
    root = fake_oasis(tmp_path / "oasis", [(12, 12, 12), (14, 12, 10)])
    args = ["--data_dir", str(root), "--out_dir", str(tmp_path / "cache"),
            "--target_shape", "8,8,8"]
    prepare_data.main(args)
    assert "2 subjects prepared" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert [e["shape"] for e in manifest["subjects"].values()] == [[8, 8, 8], [8, 8, 8]]
    prepare_data.main(args)
    assert "0 subjects prepared, 2 already up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no subjects.txt"):
        prepare_data.main(["--data_dir", str(tmp_path), "--out_dir", str(tmp_path / "c2")])
    (tmp_path / "afile").write_text("")
    for args, message in (
            (["--target_shape=0,0"], "--target_shape entries must be positive, got 0,0"),
            ([f"--out_dir={tmp_path / 'afile'}"], "afile is a file, not a folder"),
            (["--dataset=synthetic"], "--dataset=synthetic: prepare_data reads oasis or list")):
        with pytest.raises(SystemExit, match=message):
            prepare_data.main([f"--data_dir={root}", f"--out_dir={tmp_path / 'c3'}", *args])
    assert not (tmp_path / "c3").exists()


SYNTHSEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "synthseg-label-maps"
SEG35 = SYNTHSEG.parent / "neurite-oasis-3d" / "seg35_labels.txt"


def test_structure_names_match_across_conventions():
    import synth_from_labels as synth

    assert synth.normalise_name("Left-Inf-Lat-Ventricle") == synth.normalise_name(
        "left inferior lateral ventricle")
    assert synth.normalise_name("Left-Accumbens") == synth.normalise_name(
        "left accumbens area")
    table = synth.seg35_lookup({2: "left cerebral white matter", 16: "brain-stem",
                                24: "CSF"}, {1: "Left-Cerebral-White-Matter", 13: "Brain-Stem"})
    assert (table[2], table[16], table[24]) == (1, 13, 0)


def test_alignment_recovers_a_known_affine():
    import synth_from_labels as synth

    rng = np.random.default_rng(0)
    matrix = np.concatenate([np.eye(3) + rng.normal(0, 0.1, (3, 3)), [[5], [-3], [2]]], 1)
    points = rng.uniform(0, 50, (12, 3))
    moved = points @ matrix[:, :3].T + matrix[:, 3]
    np.testing.assert_allclose(synth.fit_affine(points, moved), matrix, atol=1e-9)
    with pytest.raises(ValueError, match="at least 4 matching structures"):
        synth.fit_affine(points[:3], moved[:3])
    # a label map shifted by (4, -2, 0) voxels: reference voxel x is map voxel x + shift
    reference = np.zeros((40, 40, 40), np.int32)
    for k, corner in enumerate([(5, 5, 5), (25, 8, 6), (8, 26, 9), (10, 12, 27), (24, 24, 24)]):
        reference[tuple(slice(c, c + 8) for c in corner)] = k + 1
    shifted = np.roll(reference, (4, -2, 0), axis=(0, 1, 2))
    found, residual = synth.alignment(shifted, reference)
    np.testing.assert_allclose(found, np.concatenate([np.eye(3), [[4], [-2], [0]]], 1),
                               atol=1e-6)
    assert residual < 1e-6
    np.testing.assert_array_equal(synth.sample_labels(shifted, found, (40, 40, 40)), reference)


@pytest.mark.skipif(not SYNTHSEG.is_dir(), reason=f"real data not found at {SYNTHSEG}")
def test_synth_from_labels_writes_an_aligned_cache_with_seg35(tmp_path, capsys):
    import synth_from_labels as synth

    from vxm_tf import data, metrics

    oasis = SYNTHSEG.parent / "neurite-oasis-3d"
    synth.main(["--label_dir", str(SYNTHSEG), "--reference",
                str(oasis / "OASIS_OAS1_0001_MR1"), "--intensity_dir",
                str(SYNTHSEG.parent / "neurite-oasis-2d"), "--intensity_subjects", "8",
                "--out_dir", str(tmp_path / "synth"), "--target_shape", "40,48,56",
                "--maps", "2", "--renders", "2", "--val_maps", "1", "--workers", "1"])
    dataset = data.cached_dataset(tmp_path / "synth")
    assert [s.name for s in dataset.subjects] == [
        "SYNTH_01_r0", "SYNTH_01_r1", "SYNTH_02_r0", "SYNTH_02_r1"]  # the held-out map last
    volumes = data.load_volumes(dataset.subjects, label_names=dataset.label_names)
    assert volumes.shape == (40, 48, 56) and max(volumes.labels) <= 35
    assert len(volumes.labels) >= 30
    np.testing.assert_allclose(volumes.voxel_sizes[0], [4, 4, 4])  # 160x192x224 / 40x48x56
    image, seg = volumes.images[0], volumes.segs[0]
    white, cortex, ventricle = (image[seg == k].mean() for k in (1, 2, 3))
    assert 0.2 < white < 0.6 and white > cortex > ventricle  # neurite-OASIS T1 scale
    assert image[seg == 0].mean() < 0.05 and image.min() >= 0
    assert not np.array_equal(volumes.segs[0], volumes.segs[1])  # render 1 is deformed
    reference = data.resize_volume(np.asarray(data.load_volumes(
        data.oasis_dataset(oasis).subjects[:1]).segs[0]), (40, 48, 56), labels=True)
    aligned = np.nanmean(list(metrics.dice(seg, reference, volumes.labels).values()))
    assert aligned > 0.4  # unaligned maps overlap the reference far less
    assert "mean alignment residual" in capsys.readouterr().out
    assert (tmp_path / "synth" / "alignment.png").stat().st_size > 10000


def test_compare_writes_the_report_with_figures(trained_run, tmp_path):

    model = str(trained_run / "best.keras")
    compare.main(["--models", f"A={model}", f"B={model}", "--out",
                  str(tmp_path / "report.md"), "--figures", "1"])
    text = (tmp_path / "report.md").read_text()
    assert "| identity |" in text and "| A |" in text and "| B |" in text
    figures = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert "dice_per_structure.png" in figures and len(figures) == 2
    assert "![report/dice_per_structure.png](report/dice_per_structure.png)" in text


def test_beyond_report_scores_each_model_with_and_without_instance_steps(trained_run,
                                                                         tmp_path):
    model = str(trained_run / "best.keras")
    # B keeps its own settings: a rate so small that its 3 steps change nothing visible
    settings = tmp_path / "b.json"
    instance.save_settings(settings, instance.InstanceConfig(lr=1e-9))
    report_beyond.main(["--models", f"plain={model}", f"B={model}", "--instance_steps=3",
                        "--instance_settings", f"B={settings}",
                        "--out", str(tmp_path / "beyond.md")])
    text = (tmp_path / "beyond.md").read_text()
    rows = {line.split(" | ")[0][2:]: float(line.split(" | ")[1].split()[0])
            for line in text.splitlines() if line.startswith(("| plain", "| B"))}
    assert set(rows) == {"plain", "plain + 3 instance steps", "B", "B + 3 instance steps"}
    assert rows["plain + 3 instance steps"] != rows["plain"]  # the steps changed it
    assert rows["B + 3 instance steps"] == rows["B"] == rows["plain"]
    assert "- B: ncc + 0.25 x Grad" in text and f"`{settings}`" in text
    assert "best validation Dice" in text  # read from the run folder
    assert (tmp_path / "beyond" / "dice_per_structure.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="--instance_settings names C, not among"):
        report_beyond.main(["--models", f"plain={model}", "--instance_settings",
                            f"C={settings}", "--out", str(tmp_path / "c.md")])


def test_selection_table_comes_from_the_run_folders(tmp_path):
    for n, (_, name, _, _) in enumerate(report_selection.VARIANTS):
        run = tmp_path / name
        run.mkdir()
        (run / "history.csv").write_text(f"epoch,val_dice\n0,{0.5 + n / 100}\n")
        (run / "timing.json").write_text(json.dumps({"seconds_per_step": 0.05 + n / 1000}))
    text = report_selection.report(tmp_path)
    kept = [line for line in text.splitlines() if line.startswith("| **")]
    assert len(kept) == 2  # the kept flagfile of each table, in bold
    last = len(report_selection.VARIANTS) - 1
    assert f"| **{0.5 + last / 100:.3f}** | {0.05 + last / 1000:.3f} |" in kept[-1]
    assert "--flagfile=flags/ncc.cfg" in text and "--val=6 --val_pairs=30" in text
    (tmp_path / report_selection.VARIANTS[0][1] / "history.csv").write_text("epoch\n")
    with pytest.raises(ValueError, match="no finished run for blog"):
        report_selection.report(tmp_path)


def test_robustness_grid_and_report(trained_run, tmp_path):
    assert robustness.parse_grid("gamma:0.5,-0.5;noise:0.1") == {"gamma": [-0.5, 0.0, 0.5],
                                                                 "noise": [0.0, 0.1]}
    with pytest.raises(ValueError, match="unknown perturbation 'glow'"):
        robustness.parse_grid("glow:1")
    model = str(trained_run / "best.keras")
    robustness.main(["--models", f"M={model}", f"M+again={model}", "--out",
                     str(tmp_path / "r.md"), "--grid", "bias:1;gamma:1"])
    text = (tmp_path / "r.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| bias") or
            line.startswith("| gamma")]
    assert len(rows) == 4  # strengths 0 and 1 of each
    clean = [r for r in rows if "| 0 |" in r]
    # strength 0 is the model on the unperturbed test pairs, scored independently here
    loaded, volumes, pairs = evaluation.models_and_test_pairs([f"M={model}"])
    unperturbed = np.mean([r["dice_after"] for r in evaluation.evaluate_pairs(
        loaded["M"], volumes, pairs, surface=False)[0]])
    for row in clean:
        assert float(row.split("|")[3].split()[0]) == pytest.approx(unperturbed, abs=1e-3)
    perturbed = [float(r.split("|")[3].split()[0]) for r in rows if "| 1 |" in r]
    summary = next(line for line in text.splitlines() if line.startswith("| M |"))
    cells = [float(c) for c in summary.split("|")[2:5]]
    assert cells[0] == float(clean[0].split("|")[3].split()[0])
    assert cells[1:] == pytest.approx([np.mean(perturbed), min(perturbed)], abs=1e-3)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "dice_vs_strength.png", "strong_bias_pair.png"]


def test_robustness_names_a_shipped_models_data_relative_to_the_repository():
    """The report's header names the data folder as the repository sees it, never as an
    absolute path of the machine that wrote it."""
    from vxm_tf import models

    text = robustness.data_source("NCC=vxm-tf-oasis2d-ncc")
    assert "`../shared/data/neurite-oasis-2d`" in text, text
    assert str(models.REPOSITORY) not in text


ANTS_PYTHON = Path(__file__).resolve().parents[1] / ".venv-ants" / "bin" / "python"


@pytest.mark.skipif(not ANTS_PYTHON.exists(),
                    reason="the ANTs baseline environment is not installed (make baselines)")
def test_ants_baseline_recovers_a_shift_in_the_registration_convention(tmp_path):
    import report_oasis3d

    from vxm_tf import data

    volumes = data.synthetic_volumes(1, (32, 32, 32), nb_labels=3, seed=2)
    shifted = np.roll(volumes.images[0], 2, axis=0), np.roll(volumes.segs[0], 2, axis=0)
    volumes = data.Volumes(["a", "b"], np.stack([volumes.images[0], shifted[0]]),
                           np.stack([volumes.segs[0], shifted[1]]))
    pair_rows, _ = report_oasis3d.ants_rows(str(ANTS_PYTHON), volumes, [(0, 1)])
    assert pair_rows[0]["dice_after"] > pair_rows[0]["dice_before"] + 0.1
    assert pair_rows[0]["dice_after"] > 0.9 and pair_rows[0]["seconds"] > 0


def test_readme_tables_are_the_reports_tables(tmp_path):
    for document in sync_readme.DOCUMENTS:
        readme = document.read_text()
        assert "<!-- table: " in readme
        assert sync_readme.synced(readme, document.parent) == readme, (
            f"{document} drifted: run `make readme`")
    # a stale copy is replaced by the report's table; a missing table is named
    (tmp_path / "r.md").write_text("text\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    stale = "x\n<!-- table: r.md 1 -->\n| a | b |\n| 9 | 9 |\n<!-- end table -->\ny\n"
    assert sync_readme.synced(stale, tmp_path) == (
        "x\n<!-- table: r.md 1 -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- end table -->\ny\n")
    with pytest.raises(ValueError, match="r.md has 1 tables, the README asks for 2"):
        sync_readme.synced(stale.replace("r.md 1", "r.md 2"), tmp_path)


def test_training_section_follows_the_runs_a_model_started_from(tmp_path):
    import report_oasis3d

    def run(name, init=None, kept=True, epochs=2):
        folder = tmp_path / name
        folder.mkdir()
        config = {"data": {"data_dir": "/tmp/renders", "train": 144, "val": 16},
                  "model": {"int_resolution": 2, "svf_resolution": 2},
                  "loss": {"similarity": "ncc", "reg_weight": 1.0, "seg_weight": 1.0},
                  "train": {"lr": 5e-4, "schedule": "constant", "epochs": epochs,
                            "batch_size": 1,
                            "init_model": init and str(tmp_path / init / "best.keras")},
                  "resolved_precision": "mixed_float16", "steps_per_epoch": 1000}
        (folder / "config.json").write_text(json.dumps(config))
        if kept:
            dice = f"0,0.{len(name)}1\n1,0.{len(name)}2\n"
            (folder / "history.csv").write_text("epoch,val_dice\n" + dice)
            (folder / "timing.json").write_text(json.dumps(
                {"seconds_per_step": 0.017, "epoch_seconds": [30, 17], "device": "1 x GPU"}))

    run("a")
    run("bb", init="a", kept=False)
    run("ccc", init="bb", epochs=5)  # stopped by a deadline after 2 of its 5 epochs
    text = "\n".join(report_oasis3d.training_section(tmp_path / "ccc"))
    sections = [text.index(f"## Training (`{tmp_path / name}`)") for name in ("a", "bb", "ccc")]
    assert sections == sorted(sections)  # the earliest stage first
    a, bb, ccc = (text[i:j] for i, j in zip(sections, sections[1:] + [len(text)]))
    assert "| validation Dice (synthetic) | 0.1100 | 0.1200 |" in a and "0.017 s per step" in a
    assert "2 epochs x 1000 steps" in a and "2 of 5 epochs so far x 1000 steps" in ccc
    assert "history was not kept" in bb and "timing was not kept" in bb
    assert f"Started from `{tmp_path / 'bb' / 'best.keras'}`" in ccc and "0.3200" in ccc
    # the architecture is the first stage's: a later one keeps its start's, whatever its
    # model flags say
    assert "svf_resolution 2" in a and "svf_resolution" not in ccc
    assert "the architecture of the model it started from" in ccc


def test_tune_instance_sweeps_the_window_and_grid_and_writes_its_choice(trained_run, tmp_path):
    import tune_instance

    out = tmp_path / "sweep.md"
    tune_instance.main(["--model", str(trained_run / "best.keras"), "--instance_steps", "3",
                        "--instance_space", "velocity", "--instance_lr", "0.3",
                        "--instance_lambda", "1", "--instance_window", "5",
                        "--instance_resolution", "1,2", "--out", str(out)])
    text = out.read_text()
    assert "| space | lr | lambda | smoothing | window | grid | val Dice |" in text
    rows = [line for line in text.splitlines() if line.startswith("| velocity |")]
    assert [tuple(r.split(" | ")[4:6]) for r in rows] == [("5", "1"), ("5", "2")]
    chosen = next(r for r in rows if "**chosen**" in r)
    window, grid = chosen.split(" | ")[4:6]
    settings = instance.load_settings(out.with_suffix(".json"), 3,
                                      model=trained_run / "best.keras")
    assert (settings.window, settings.resolution) == (int(window), int(grid))
    assert f"--instance_window={window} --instance_resolution={grid}`" in text
    with pytest.raises(SystemExit, match="--instance_window takes comma-separated integers, "
                                         "got '2.5'"):
        tune_instance.main(["--model", str(trained_run / "best.keras"),
                            "--instance_window", "2.5", "--out", str(tmp_path / "bad.md")])
    assert not (tmp_path / "bad.md").exists()
    with pytest.raises(SystemExit):  # the former names fail with the new one
        tune_instance.main(["--model", str(trained_run / "best.keras"), "--lambda", "1",
                            "--out", str(tmp_path / "bad.md")])


def test_tune_instance_sweeps_gradients_and_steps_within_a_time_budget(trained_run, tmp_path):
    """Step counts and gradients are swept like the other settings; `--max_seconds` keeps
    the choice within a time per pair, and a budget nothing meets chooses nothing and
    leaves no JSON."""
    import tune_instance

    out = tmp_path / "sweep.md"
    common = ["--model", str(trained_run / "best.keras"), "--instance_space", "composition",
              "--instance_lr", "0.3", "--instance_lambda", "1", "--batch_size", "3"]
    tune_instance.main([*common, "--instance_steps", "1,2",
                        "--instance_gradient", "exact,straight-through",
                        "--max_seconds", "1000", "--out", str(out)])
    text = out.read_text()
    assert "(ncc, 1/2 steps)" in text
    assert "| space | lr | lambda | smoothing | gradient | steps | val Dice |" in text
    rows = [tuple(line.split(" | ")[4:6]) for line in text.splitlines()
            if line.startswith("| composition")]
    assert rows == [(g, s) for g in ("exact", "straight-through") for s in ("1", "2")]
    assert "highest Dice with folding < 0.1% and at most 1000 s per pair" in text
    chosen = next(line for line in text.splitlines() if "**chosen**" in line)
    gradient, steps = chosen.split(" | ")[4:6]
    saved = json.loads(out.with_suffix(".json").read_text())
    assert (saved["gradient"], saved["chosen_with_steps"]) == (gradient, int(steps))
    assert f"--instance_gradient={gradient} --instance_steps={steps}`" in text
    tune_instance.main([*common, "--instance_steps", "1", "--max_seconds", "1e-6",
                        "--out", str(out)])
    assert "No setting kept folding < 0.1% and at most 1e-06 s per pair" in out.read_text()
    assert not out.with_suffix(".json").exists()
    # a setting that does not beat the network alone is not chosen, whatever its folding (a
    # divergent rate: instance optimisation keeps the network's field, the same Dice)
    tune_instance.main([*common[:4], "--instance_lr", "1000", "--instance_lambda", "0",
                        "--batch_size", "3", "--instance_steps", "2", "--max_folding", "100",
                        "--out", str(out)])
    text = out.read_text()
    alone, swept = (float(line.split("|")[-4]) for line in text.splitlines()
                    if line.startswith(("| network alone", "| composition")))
    assert swept <= alone and "**chosen**" not in text
    assert f"above the network alone's {alone:.4f}: register with this model alone" in text
    assert not out.with_suffix(".json").exists()


@pytest.mark.skipif(not (SYNTHSEG.parent / "neurite-oasis-2d").is_dir(),
                    reason=f"real data not found at {SYNTHSEG.parent / 'neurite-oasis-2d'}")
def test_tune_instance_on_data_dir_names_too_few_validation_subjects(trained_run, tmp_path):
    """A model without a run reads its validation subjects from --data_dir: too few for a
    pair is a one-line error naming the flags, and nothing is written."""
    import tune_instance

    data_dir = SYNTHSEG.parent / "neurite-oasis-2d"
    with pytest.raises(SystemExit, match=rf"--data_dir={data_dir}: --val=1 gives fewer "
                                         "than 2 validation subjects"):
        tune_instance.main(["--model", str(trained_run / "best.keras"), "--dataset=oasis",
                            f"--data_dir={data_dir}", "--val=1", "--out",
                            str(tmp_path / "bad.md")])
    assert not (tmp_path / "bad.md").exists()


def test_reports_build_tables_one_way_and_tools_refuse_meaningless_numbers(tmp_path, capsys):
    """tools/reporting.py: a table's header, rule and rows (an empty cell `| |`); a tool's
    numeric flag out of range or not finite is argparse's one-line error before any work."""
    import compare
    import reporting

    assert reporting.table(["", "Dice"], [["identity", ""], ["model", "0.750"]]) == [
        "| | Dice |", "|---|---|", "| identity | |", "| model | 0.750 |"]
    assert reporting.command_block(["make x"]) == ["Command:", "", "```sh", "make x", "```"]
    out = tmp_path / "report.md"
    assert reporting.write(out, ["# T", "", "text"]) == "# T\n\ntext\n" == out.read_text()
    for value in ("-3", "nan", "2.5"):
        with pytest.raises(SystemExit) as exit_:
            compare.main(["--models", "A=nowhere.keras", f"--figures={value}",
                          "--out", str(tmp_path / "c.md")])
        assert exit_.value.code == 2
        assert "--figures" in capsys.readouterr().err
    assert not (tmp_path / "c.md").exists()
    # a report never replaces an input: --out is a .md file
    (tmp_path / "model.keras").write_text("a model")
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--models", f"A={tmp_path}/model.keras", "--out",
                      str(tmp_path / "model.keras")])
    assert exit_.value.code == 2 and "ending in .md" in capsys.readouterr().err
    assert (tmp_path / "model.keras").read_text() == "a model"
    with pytest.raises(SystemExit, match="A is given twice"):
        compare.main(["--models", "A=x.keras", "A=y.keras", "--out", str(tmp_path / "c.md")])


def test_model_cards_know_each_kind_and_score_templates_from_their_report(tmp_path):
    """tools/model_card.py: the card kind follows the model's class; a template's rows come
    from the report's scores.json (a name it lacks is a one-line exit); models.md gives
    atlas rows a table of their own."""
    import model_card

    from vxm_tf import hypermorph, models, networks, templates

    assert model_card.kind_of(networks.VxmDense((16, 16), nb_unet_features=[[4], [4]])) \
        == "pairwise"
    assert model_card.kind_of(hypermorph.HyperVxmDense(
        (16, 16), nb_unet_features=[[4], [4]], nb_hyp_layers=1, nb_hyp_units=2)) == "hypermorph"
    assert model_card.kind_of(templates.TemplateCreation(
        (16, 16), nb_unet_features=[[4], [4]])) == "template"
    row = {"data": "d", "subjects": 3, "dice": 0.8, "dice_sd": 0.01, "compared": "c",
           "command": "make template-report"}
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"vxm-tf-oasis2d-template": [row]}))
    assert model_card.report_scores(scores, "vxm-tf-oasis2d-template") == [row]
    with pytest.raises(SystemExit, match="no scores for other"):
        model_card.report_scores(scores, "other")
    summary = model_card.summary_markdown(models.cards())
    template = models.card("vxm-tf-oasis2d-template")
    assert template.kind == "template" and template.scores
    atlas_table = summary.split("Templates, as atlases")[1]
    assert "`vxm-tf-oasis2d-template`" in atlas_table
    assert "| `vxm-tf-oasis2d-ncc` |" not in atlas_table


def test_the_training_report_reads_a_shipped_model_by_name(tmp_path):
    import report_training

    summary = tmp_path / "vxm-tf-oasis2d-ncc" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps({"dice_after": 0.75}))
    row = report_training.run_row("vxm-tf-oasis2d-ncc", tmp_path)
    assert row["summary"]["dice_after"] == 0.75
    assert row["config"]["loss"]["similarity"] == "ncc" and len(row["history"]) == 5

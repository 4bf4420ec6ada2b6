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
import robustness  # noqa: E402
from fixtures import fake_oasis  # noqa: E402


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


@pytest.mark.skipif(not SYNTHSEG.is_dir(), reason=f"real data not found at {SYNTHSEG}")
def test_synth_from_labels_writes_an_oasis_layout_with_seg35(tmp_path):
    import synth_from_labels as synth

    from vxm_tf import data

    synth.main(["--label_dir", str(SYNTHSEG), "--seg35_table", str(SEG35), "--out_dir",
                str(tmp_path / "synth"), "--count", "1"])
    dataset = data.oasis_dataset(tmp_path / "synth")
    volumes = data.load_volumes(dataset.subjects)
    assert volumes.shape == synth.OUT_SHAPE
    assert len(volumes.labels) == 31 and max(volumes.labels) <= 35
    image, seg = volumes.images[0], volumes.segs[0]
    assert 0 <= image.min() and image.max() <= 1
    white = image[seg == 1].mean()  # Left-Cerebral-White-Matter is brighter than cortex in T1
    assert white > image[seg == 2].mean() > image[seg == 3].mean()  # > lateral ventricle
    assert image[seg == 0].mean() < 0.05
    with pytest.raises(SystemExit, match="classes, but the priors have 25 columns"):
        synth.main(["--label_dir", str(SYNTHSEG), "--seg35_table", str(SEG35), "--out_dir",
                    str(tmp_path / "s2"), "--classes", str(SYNTHSEG / "generation_classes.npy")])


def test_compare_writes_the_report_with_figures(trained_run, tmp_path):

    model = str(trained_run / "best.keras")
    compare.main(["--models", f"A={model}", f"B={model}", "--out",
                  str(tmp_path / "report.md"), "--figures", "1"])
    text = (tmp_path / "report.md").read_text()
    assert "| identity |" in text and "| A |" in text and "| B |" in text
    figures = sorted(p.name for p in (tmp_path / "report").iterdir())
    assert "dice_per_structure.png" in figures and len(figures) == 2
    assert "![report/dice_per_structure.png](report/dice_per_structure.png)" in text


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
    assert clean[0].split("|")[3] == clean[1].split("|")[3]  # strength 0: the same run
    perturbed = [float(r.split("|")[3].split()[0]) for r in rows if "| 1 |" in r]
    summary = next(line for line in text.splitlines() if line.startswith("| M |"))
    cells = [float(c) for c in summary.split("|")[2:5]]
    assert cells[0] == float(clean[0].split("|")[3].split()[0])
    assert cells[1:] == pytest.approx([np.mean(perturbed), min(perturbed)], abs=1e-3)
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "dice_vs_strength.png", "strong_bias_pair.png"]

"""Templates: the scan stream and attributes, template training (unconditional and
conditional, resumed) and the templates written (parity with voxelmorph 0.2:
test_reference_parity.py)."""

import numpy as np
import pytest

from vxm_tf import configs, data, hypermorph, io, templates, trainer
from vxm_tf.configs import ConfigError
from vxm_tf.training.template import write_templates

SHAPE = (32, 32)
FEATURES = [[8, 8, 8], [8, 8, 8, 8, 8]]


def test_scan_source_batches_scans_and_their_attributes():
    volumes = data.synthetic_volumes(5, SHAPE, 3, seed=0)
    source = data.ScanSource(volumes, batch_size=5, seed=1, shuffle=False)
    (scans,), (target, same, zeros, more) = source.batch(0)
    assert scans.shape == (5, *SHAPE, 1) and zeros.shape == (5, *SHAPE, 2)
    np.testing.assert_array_equal(scans[..., 0], volumes.images)
    np.testing.assert_array_equal(target, scans)
    attributes = np.arange(5, dtype=np.float32)[:, None]
    base = volumes.images.mean(0)
    shuffled = data.ScanSource(volumes, batch_size=2, seed=1, repeat=True,
                               attributes=attributes, base=base)
    (attrs, bases, scans), targets = shuffled.batch(7)
    assert len(targets) == 4 and bases.shape == (2, *SHAPE, 1)
    for a, scan in zip(attrs[:, 0], scans[..., 0]):  # each scan with its own attribute
        np.testing.assert_array_equal(scan, volumes.images[int(a)])
    np.testing.assert_array_equal(bases[0, ..., 0], base)


def test_attributes_are_read_by_subject_and_encoded(tmp_path):
    csv = tmp_path / "demographics.csv"
    csv.write_text("ID,M/F,Age,Site\nOAS1_0001_MR1,F,20,a\nOAS1_0002_MR1,M,60,b\n"
                   "OAS1_0003_MR1,F,,c\n")
    names = ["OASIS_OAS1_0002_MR1", "OASIS_OAS1_0001_MR1"]
    values, encoding = data.read_attributes(csv, ["Age", "M/F"], names)
    np.testing.assert_allclose(values, [[1, 1], [-1, 0]])
    assert encoding == {"Age": {"mean": 40.0, "std": 20.0, "min": 20.0, "max": 60.0},
                        "M/F": {"values": ["F", "M"]}}
    assert data.encode_attribute(80, encoding["Age"], "Age") == 2.0
    with pytest.raises(data.DatasetError, match="subject OASIS_OAS1_0003_MR1 has no Age"):
        data.read_attributes(csv, ["Age"], ["OASIS_OAS1_0003_MR1"])
    with pytest.raises(data.DatasetError, match="no row for subject OAS1_0009"):
        data.read_attributes(csv, ["Age"], ["OAS1_0009"])
    with pytest.raises(data.DatasetError, match="has no column Weight"):
        data.read_attributes(csv, ["Weight"], names)
    with pytest.raises(data.DatasetError, match="M/F=X is none of F, M"):
        data.encode_attribute("X", encoding["M/F"], "M/F")
    with pytest.raises(data.DatasetError, match="a column is named twice"):
        data.read_attributes(csv, ["Age", "Age"], names)
    # a spreadsheet's byte-order mark; a subject matching two rows; text among numbers
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfID,Age\nOAS1_0001_MR1,20\nOAS1_0002_MR1,30\n")
    assert data.read_attributes(bom, ["Age"], names)[0].shape == (2, 1)
    twice = tmp_path / "twice.csv"
    twice.write_text("ID,Age\nOAS1_0001_MR1,20\nOAS1_0001_MR1,90\nOAS1_0002_MR1,30\n")
    with pytest.raises(data.DatasetError, match="OASIS_OAS1_0001_MR1 matches 2 rows"):
        data.read_attributes(twice, ["Age"], names)
    typo = tmp_path / "typo.csv"
    typo.write_text("ID,Age\nOAS1_0001_MR1,20\nOAS1_0002_MR1,unknown\n")
    with pytest.raises(data.DatasetError, match="Age holds numbers and Age=unknown"):
        data.read_attributes(typo, ["Age"], names)


def template_config(tmp_path, **model):
    config = configs.Config()
    config.data = configs.DataConfig(dataset="synthetic", synthetic_shape=SHAPE,
                                     synthetic_labels=3, train=4, val=2, test=0)
    config.model = configs.ModelConfig(nb_features=FEATURES, template="unconditional",
                                       int_steps=5, **model)
    config.loss = configs.LossConfig(similarity="mse", reg_weight=0.01)
    config.train = configs.TrainConfig(epochs=1, steps_per_epoch=3, verbose=0, lr=1e-2,
                                       model_dir=str(tmp_path / "run"))
    configs.check_config(config)
    return config


def test_an_unconditional_template_trains_resumes_and_is_written(tmp_path):
    config = template_config(tmp_path)
    result = trainer.train_and_evaluate(config, log=lambda _: None)
    run = tmp_path / "run"
    model = result["model"]
    assert isinstance(model, templates.TemplateCreation)
    base = io.load_volume(str(run / "base_template.nii.gz")).data
    volumes = result["splits"]["train"]
    np.testing.assert_allclose(base, volumes.images.mean(0), atol=1e-6)
    written = io.load_volume(str(run / "template.nii.gz")).data
    np.testing.assert_allclose(written, np.clip(model.get_atlas(), 0, 1), atol=1e-6)
    assert np.abs(written - base).max() > 1e-4, "training moved the template off the mean"
    count = float(np.asarray(model.get_layer("mean_stream").count)[0])
    assert count == 3  # one scan a step
    config.train.epochs, config.train.resume = 2, True
    resumed = trainer.train_and_evaluate(config, log=lambda _: None)["model"]
    assert float(np.asarray(resumed.get_layer("mean_stream").count)[0]) == 6
    paths = write_templates(str(run / "model.keras"), str(tmp_path / "out"))
    np.testing.assert_allclose(io.load_volume(paths[0]).data, np.clip(resumed.get_atlas(), 0, 1),
                               atol=1e-6)
    with pytest.raises(ValueError, match="an unconditional template has no attributes"):
        write_templates(str(run / "model.keras"), str(tmp_path / "out"), "20")
    # the commands' loader names a template model as what it is
    with pytest.raises(ValueError, match="holds a TemplateCreation, not a VxmDense"):
        hypermorph.load(str(run / "model.keras"))


def test_a_conditional_template_follows_its_attribute(tmp_path):
    volumes = data.synthetic_volumes(6, SHAPE, 3, seed=4)
    lines, rows = [], ["ID,Age"]
    for k, image in enumerate(volumes.images):
        path = tmp_path / f"s{k}.nii.gz"
        io.save_volume(str(path), image, np.eye(4))
        lines.append(str(path))
        rows.append(f"s{k},{20 + 10 * k}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "ages.csv").write_text("\n".join(rows) + "\n")
    config = configs.Config()
    config.data = configs.DataConfig(dataset="list", img_list=str(tmp_path / "list.txt"),
                                     train=4, val=2, test=0, seg="none",
                                     attributes_csv=str(tmp_path / "ages.csv"),
                                     attributes="Age")
    config.model = configs.ModelConfig(nb_features=FEATURES, template="conditional",
                                       int_steps=5)
    config.loss = configs.LossConfig(similarity="mse", reg_weight=0.01)
    config.train = configs.TrainConfig(epochs=1, steps_per_epoch=4, verbose=0, lr=1e-2,
                                       model_dir=str(tmp_path / "run"))
    configs.check_config(config)
    model = trainer.train_and_evaluate(config, log=lambda _: None)["model"]
    assert isinstance(model, templates.ConditionalTemplateCreation)
    paths = write_templates(str(tmp_path / "run" / "model.keras"), str(tmp_path / "out"),
                            "20,90")
    assert [p.split("/")[-1] for p in paths] == ["template_Age-20.nii.gz",
                                                 "template_Age-90.nii.gz"]
    young, old = (io.load_volume(p).data for p in paths)
    assert np.abs(young - old).max() > 1e-4, "the template depends on the age"
    model_path = str(tmp_path / "run" / "model.keras")
    for values, match in (("old", "--values: Age=old is not a number"),
                          ("30,30", "a set is given twice"),
                          ("40,+40.0", "a set is given twice"), ("", "give the Age")):
        with pytest.raises(ValueError, match=match):
            write_templates(model_path, str(tmp_path / "x"), values)
        assert not (tmp_path / "x").exists(), "nothing written, not even the folder"
    said = []
    write_templates(model_path, str(tmp_path / "y"), "5", log=said.append)
    assert said == ["warning: Age=5 (trained on 20 to 50): the template extrapolates beyond "
                    "its training subjects"]


@pytest.mark.parametrize("change, match", [
    (dict(template="conditional"), "--template=conditional needs --attributes_csv"),
    (dict(attributes="Age"), "condition a template: add --template=conditional"),
    (dict(bidir=True), "--bidir does not go with it"),
    (dict(hyper=True), "--hyper does not go with it"),
])
def test_template_flags_are_checked(change, match):
    config = configs.Config()
    config.model.template = change.get("template", "unconditional")
    config.model.bidir = change.get("bidir", False)
    config.model.hyper = change.get("hyper", False)
    config.data.attributes = change.get("attributes", "")
    if change.get("attributes"):
        config.model.template = "none"
    with pytest.raises(ConfigError, match=match):
        configs.check_config(config)


def test_template_file_names_keep_the_sign_of_a_value_and_write_numbers_plainly():
    """-500 and 500 are two templates, two files (the sign was dropped: one overwrote the
    other); +20, 20.0 and 20 are one template, one name."""
    from vxm_tf.training.template import file_name

    assert file_name(["Age", "M/F"], ["-500", "M"]) == "template_Age--500_MF-M.nii.gz"
    assert file_name(["Age"], ["500"]) == "template_Age-500.nii.gz"
    assert file_name(["Age"], ["+20.0"]) == file_name(["Age"], ["20"]) == "template_Age-20.nii.gz"
    assert file_name(["Age"], ["0.5"]) == "template_Age-0.5.nii.gz"

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fixtures import fake_oasis

from vxm_tf import data
from vxm_tf.data import DatasetError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
OASIS_2D = SHARED / "neurite-oasis-2d"
OASIS_3D = SHARED / "neurite-oasis-3d"
needs_oasis_2d = pytest.mark.skipif(not OASIS_2D.is_dir(),
                                    reason=f"real data not found at {OASIS_2D}")
needs_oasis_3d = pytest.mark.skipif(not OASIS_3D.is_dir(),
                                    reason=f"real data not found at {OASIS_3D}")


@needs_oasis_2d
def test_oasis_2d_blog_protocol_pairs():
    dataset = data.oasis_dataset(OASIS_2D)
    assert len(dataset) == 364 and len(dataset.label_names) == 25
    splits = data.split_subjects(dataset)
    assert len(data.all_pairs(len(splits["train"]))) == 2256
    assert len(data.all_pairs(len(splits["test"]))) == 110
    assert splits["test"][0].name == dataset.subjects[48].name
    volumes = data.load_volumes(splits["test"], label_names=dataset.label_names)
    assert volumes.shape == (160, 192) and len(volumes.labels) == 24


@needs_oasis_3d
def test_oasis_3d_resized_to_128_keeps_every_label():
    dataset = data.oasis_dataset(OASIS_3D)
    for subject in dataset.subjects:
        image, seg, affine, lost = data.volumes.load_subject(subject, (128, 128, 128))
        original = data.load_volumes([subject]).segs[0]
        assert image.shape == seg.shape == (128, 128, 128)
        assert lost == []
        assert set(np.unique(seg)) == set(np.unique(original))
        np.testing.assert_allclose(np.abs(affine[:3, :3]).sum(0), [160 / 128, 192 / 128,
                                                                   224 / 128])


def test_fake_oasis_layout_and_label_table(tmp_path):
    dataset = data.oasis_dataset(fake_oasis(tmp_path / "oasis", [(8, 8, 8)] * 3))
    assert [s.name for s in dataset.subjects][0] == "OASIS_OAS1_0000_MR1"
    assert dataset.label_names == {0: "Unknown", 1: "Left-Thing", 2: "Right-Thing"}
    assert dataset.subjects[0].seg.endswith("aligned_seg35.nii.gz")


def test_list_dataset_prefix_suffix_and_segmentations(tmp_path):
    fake_oasis(tmp_path / "o", [(8, 8, 8)] * 2)
    (tmp_path / "list.txt").write_text("OASIS_OAS1_0000_MR1\nOASIS_OAS1_0001_MR1\n")
    dataset = data.list_dataset(tmp_path / "list.txt", prefix=f"{tmp_path}/o/",
                                suffix="/aligned_norm.nii.gz",
                                seg_suffix="/aligned_seg35.nii.gz")
    volumes = data.load_volumes(dataset.subjects)
    assert volumes.images.shape == (2, 8, 8, 8) and volumes.segs.shape == (2, 8, 8, 8)


def test_pairs_and_atlas_pairs():
    assert data.all_pairs(3) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    assert data.atlas_pairs(4, 3) == [(0, 3), (1, 3), (2, 3)]


def test_split_errors(tmp_path):
    dataset = data.oasis_dataset(fake_oasis(tmp_path / "o", [(8, 8, 8)] * 3))
    with pytest.raises(DatasetError, match=r"splits need 59 subjects \(--train=48, --test=11, "
                                           r"--val=0\).*has 3"):
        data.split_subjects(dataset)  # all the splits' subjects (it said 48: the first's)
    with pytest.raises(DatasetError, match=r"splits need 63 subjects"):
        data.split_subjects(dataset, val=4)
    (tmp_path / "test.txt").write_text("OASIS_OAS1_0002_MR1\nghost\n")
    with pytest.raises(DatasetError, match=r"test.txt: 1 subjects not in dataset.*ghost"):
        data.split_subjects(dataset, train=2, test_list=tmp_path / "test.txt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "subjects.txt").write_text("\n")
    with pytest.raises(DatasetError, match="subjects.txt: empty subject list"):
        data.oasis_dataset(tmp_path / "empty")


def test_shape_errors_name_the_files(tmp_path):
    dataset = data.oasis_dataset(fake_oasis(tmp_path / "o", [(8, 8, 8), (8, 8, 10)]))
    with pytest.raises(DatasetError, match=r"OASIS_OAS1_0001_MR1/aligned_norm.nii.gz: shape "
                                           r"\(8, 8, 10\) differs.*target shape"):
        data.load_volumes(dataset.subjects)
    assert data.load_volumes(dataset.subjects, target_shape=(8, 8, 8)).shape == (8, 8, 8)
    seg = tmp_path / "o" / "OASIS_OAS1_0000_MR1" / "aligned_seg35.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), np.uint8), np.eye(4)), str(seg))
    with pytest.raises(DatasetError, match=r"aligned_seg35.nii.gz: segmentation shape"):
        data.load_volumes(dataset.subjects[:1])


def test_nearest_resize_never_invents_labels_and_reports_lost_ones(tmp_path):
    seg = np.zeros((40, 40, 40), np.int32)
    seg[5:30, 5:30, 5:30] = 4
    seg[10:20, 10:20, 10:20] = 17
    seg[33, 33, 33] = 9  # one voxel: gone at quarter size
    small = data.resize_volume(seg, (10, 10, 10), labels=True)
    assert set(np.unique(small)) == {0, 4, 17}
    root = fake_oasis(tmp_path / "o", [(40, 40, 40)])
    nib.save(nib.Nifti1Image(seg.astype(np.uint8), np.eye(4)),
             str(root / "OASIS_OAS1_0000_MR1" / "aligned_seg35.nii.gz"))
    subject = data.oasis_dataset(root).subjects[0]
    assert data.volumes.load_subject(subject, (10, 10, 10))[3] == [9]


def test_prepare_cache_is_idempotent(tmp_path):
    dataset = data.oasis_dataset(fake_oasis(tmp_path / "o", [(12, 12, 12), (12, 14, 12)]))
    messages = []
    cached = data.prepare_cache(dataset, tmp_path / "cache", (8, 8, 8), log=messages.append)
    assert "2 subjects prepared" in messages[-1]
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    data.prepare_cache(dataset, tmp_path / "cache", (8, 8, 8), log=messages.append)
    assert "0 subjects prepared, 2 already up to date" in messages[-1]
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").iterdir()}
    volumes = data.load_volumes(cached.subjects, label_names=cached.label_names)
    assert volumes.shape == (8, 8, 8) and volumes.label_names[1] == "Left-Thing"
    np.testing.assert_allclose(volumes.voxel_sizes, [[1.5, 1.5, 1.5], [1.5, 1.75, 1.5]])
    data.prepare_cache(dataset, tmp_path / "cache", (6, 6, 6), log=messages.append)
    assert "2 subjects prepared" in messages[-1]


def test_a_render_cache_validates_only_on_its_held_out_maps(tmp_path):
    """tools/synth_from_labels.py's manifest says how many renders of training maps come
    first: a split with validation that would take some of them (or whose training would
    take held-out ones) is a one-line error; the manifest's split runs."""
    import json

    from vxm_tf import configs, experiment

    dataset = data.oasis_dataset(fake_oasis(tmp_path / "o", [(12, 12, 12)] * 5))
    data.prepare_cache(dataset, tmp_path / "cache", (8, 8, 8), log=lambda _: None)
    manifest = tmp_path / "cache" / "manifest.json"
    content = json.loads(manifest.read_text())
    content["settings"] = {"train_subjects": 3, "val_subjects": 2}
    manifest.write_text(json.dumps(content))

    def split(train, val, test=0):
        return experiment.build_splits(configs.DataConfig(
            dataset="cache", data_dir=str(tmp_path / "cache"), train=train, val=val, test=test))

    assert [len(split(3, 2)[k]) for k in ("train", "val")] == [3, 2]
    for train in (2, 5):  # without validation, any number of training renders
        assert len(split(train, 0)["train"]) == train
    for train, val in ((2, 2), (4, 1)):
        with pytest.raises(configs.ConfigError, match=rf"--train={train} --test=0 --val={val}"
                           r": .* holds 3 renders of training maps, then 2 of held-out maps; "
                           r".*\(e.g. --train=3 --test=0 --val=2\)"):
            split(train, val)


def test_synthetic_volumes_are_deterministic_and_labelled():
    a = data.synthetic_volumes(3, (32, 32), nb_labels=5, seed=4)
    b = data.synthetic_volumes(3, (32, 32), nb_labels=5, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    assert a.labels == [1, 2, 3, 4, 5]
    assert not np.array_equal(a.segs[0], a.segs[1])
    assert 0 <= a.images.min() and a.images.max() <= 1


def test_pipeline_streams_every_pair_once_per_pass_in_a_seeded_order():
    volumes = data.synthetic_volumes(4, (16, 16))
    pairs = data.all_pairs(4)  # 12 pairs: 4 batches of 3 per pass
    ds = data.pair_dataset(volumes, pairs, batch_size=3, seed=1, flow_shape=(8, 8, 2))
    (moving, fixed), (target, zeros) = next(iter(ds))
    assert moving.shape == (3, 16, 16, 1) and zeros.shape == (3, 8, 8, 2)
    np.testing.assert_array_equal(target, fixed)

    def sums(ds, batches):  # each pair as (moving sum, fixed sum), batch by batch
        return [tuple(zip(m.numpy().sum((1, 2, 3)), f.numpy().sum((1, 2, 3))))
                for (m, f), _ in ds.take(batches)]

    def stream(seed):
        return data.pair_dataset(volumes, pairs, batch_size=3, seed=seed,
                                 flow_shape=(8, 8, 2), repeat=True)
    passes = sums(stream(1), 8)
    first, second = passes[:4], passes[4:]
    assert passes == sums(stream(1), 8)
    assert first != second and first != sums(stream(2), 4)
    assert sorted(sum(first, ())) == sorted(sum(second, ()))
    assert len(set(sum(first, ()))) == 12  # every pair once per pass

    segs_ds = data.pair_dataset(volumes, pairs, shuffle=False, with_segs=True)
    def subject(seg):  # which volume a batch's label map is
        return next(k for k, s in enumerate(volumes.segs) if np.array_equal(s, seg))
    seen = [(subject(ms[0]), subject(fs[0])) for _, (ms, fs) in segs_ds]
    assert sorted(seen) == sorted(pairs)  # every ordered pair exactly once
    (m, f), (ms, fs) = next(iter(segs_ds))
    np.testing.assert_array_equal(ms[0], volumes.segs[0])
    np.testing.assert_array_equal(fs[0], volumes.segs[1])


def test_pair_sequence_gives_the_tf_data_batches_and_resumes_where_it_stopped():
    volumes = data.synthetic_volumes(3, (16, 16), nb_labels=3)
    aug = data.Augmentation(rotate_deg=10, flip=True, noise=0.05)

    def source():
        return data.PairSource(volumes, data.all_pairs(3), batch_size=2, seed=5,
                               augmentation=aug, flow_shape=(16, 16, 2), repeat=True)
    ds = data.pair_dataset(volumes, data.all_pairs(3), batch_size=2, seed=5,
                           augmentation=aug, flow_shape=(16, 16, 2), repeat=True)
    via_tf = [m.numpy() for (m, _), _ in ds.take(6)]
    sequence = data.PairSequence(source(), steps_per_epoch=2)
    via_keras = []
    for _ in range(3):  # three epochs of two steps, as fit walks them
        via_keras += [sequence[i][0][0] for i in range(len(sequence))]
        sequence.on_epoch_end()
    for a, b in zip(via_tf, via_keras, strict=True):
        np.testing.assert_array_equal(a, b)
    resumed = data.PairSequence(source(), steps_per_epoch=2, initial_epoch=2)
    np.testing.assert_array_equal(resumed[1][0][0], via_keras[5])
    late = data.pair_dataset(volumes, data.all_pairs(3), batch_size=2, seed=5,
                             augmentation=aug, flow_shape=(16, 16, 2), repeat=True,
                             first_batch=4)
    np.testing.assert_array_equal(next(iter(late))[0][0].numpy(), via_keras[4])
    with pytest.raises(ValueError, match="steps_per_epoch"):
        data.PairSequence(source())
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        data.PairSource(volumes, data.all_pairs(3), batch_size=0, flow_shape=(16, 16, 2))


def test_process_shards_make_up_the_global_batch():
    """In a multi-process run each process feeds its slice of every batch: the slices, in
    process order, are the batch one process would feed (augmentation included)."""
    volumes = data.synthetic_volumes(4, (16, 16), nb_labels=3)
    aug = data.Augmentation(rotate_deg=10, noise=0.05)

    def source(shard=(0, 1)):
        return data.PairSource(volumes, data.all_pairs(4), batch_size=4, seed=3,
                               augmentation=aug, flow_shape=(16, 16, 2), repeat=True,
                               shard=shard)
    whole = source()
    parts = [source((k, 2)) for k in range(2)]
    for index in (0, 3, 7):  # batches within and across passes over the 12 pairs
        (moving, fixed), _ = whole.batch(index)
        halves = [part.batch(index)[0] for part in parts]
        assert halves[0][0].shape[0] == 2
        np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), moving)
        np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), fixed)
        assert not np.array_equal(halves[0][0], halves[1][0])
    with pytest.raises(ValueError, match="shard"):
        data.PairSource(volumes, data.all_pairs(4), batch_size=3, flow_shape=(16, 16, 2),
                        repeat=True, shard=(0, 2))


def test_bidirectional_targets():
    volumes = data.synthetic_volumes(2, (16, 16))
    ds = data.pair_dataset(volumes, [(0, 1)], flow_shape=(16, 16, 2), bidir=True)
    (moving, fixed), (t_fixed, t_moving, zeros) = next(iter(ds))
    np.testing.assert_array_equal(t_moving, moving)
    np.testing.assert_array_equal(t_fixed, fixed)


def test_augmentation_moves_image_and_labels_together():
    volumes = data.synthetic_volumes(1, (48, 48), nb_labels=4)
    seg = volumes.segs[0]
    aug = data.Augmentation(rotate_deg=30)
    image, moved = data.augment(seg.astype(np.float32), seg, aug, np.random.default_rng(0))
    assert not np.array_equal(moved, seg)
    agree = np.mean(np.round(image) == moved)
    assert agree > 0.95


def test_left_right_flip_swaps_labels_by_name():
    names = {0: "Unknown", 1: "Left-Hippocampus", 2: "Brain-Stem", 3: "Right-Hippocampus"}
    table = data.left_right_swap(names)
    assert table.tolist() == [0, 3, 2, 1]
    seg = np.zeros((6, 4), np.int32)
    seg[:3] = 1  # left half (axis 0) is Left-Hippocampus
    seg[3:, 0] = 2
    aug = data.Augmentation(flip=True)
    rng = next(np.random.default_rng(s) for s in range(100)
               if np.random.default_rng(s).random() < 0.5)
    _, flipped = data.augment(seg.astype(np.float32), seg, aug, rng, table)
    assert (flipped[3:] == 3).all() and (flipped[:3, 0] == 2).all()


def test_augmented_pipeline_is_deterministic_by_seed_inside_dataset_map():
    volumes = data.synthetic_volumes(3, (24, 24))
    aug = data.Augmentation(rotate_deg=15, flip=True, intensity_shift=0.1,
                            intensity_scale=0.2, gamma=0.3, bias=0.5, noise=0.05)

    def images(seed):
        ds = data.pair_dataset(volumes, data.all_pairs(3), seed=seed, augmentation=aug,
                               with_segs=True)
        return np.concatenate([m.numpy() for (m, _), _ in ds])
    np.testing.assert_array_equal(images(3), images(3))
    assert not np.array_equal(images(3), images(4))


def test_bias_augmentation_multiplies_by_a_smooth_positive_field():
    image = np.full((32, 40), 0.5, np.float32)
    out, _ = data.augment(image, None, data.Augmentation(bias=0.8), np.random.default_rng(0))
    log_ratio = np.log(out / image)
    assert out.shape == image.shape and out.dtype == np.float32
    assert 0.05 < log_ratio.std() <= 0.8 + 1e-5  # strength U(0, 0.8) times a unit-std field
    step = np.abs(np.diff(log_ratio, axis=0)).mean() + np.abs(np.diff(log_ratio, axis=1)).mean()
    assert step < 0.5 * log_ratio.std()  # smooth: white noise would give about 2.3 std


def test_clean_targets_keep_the_scans_without_intensity_changes():
    volumes = data.synthetic_volumes(2, (24, 24))
    aug = data.Augmentation(intensity_scale=0.3, gamma=0.5, bias=0.5, clean_targets=True)
    ds = data.pair_dataset(volumes, [(0, 1)], augmentation=aug, flow_shape=(24, 24, 2))
    (moving, fixed, moving_clean), (fixed_target, zeros) = next(iter(ds))
    np.testing.assert_array_equal(moving_clean[0, ..., 0], volumes.images[0])
    np.testing.assert_array_equal(fixed_target[0, ..., 0], volumes.images[1])
    assert not np.allclose(moving[0, ..., 0], volumes.images[0])
    assert not np.allclose(fixed[0, ..., 0], volumes.images[1])
    assert zeros.shape == (1, 24, 24, 2)
    rotated = data.Augmentation(rotate_deg=20, gamma=0.5, clean_targets=True)
    ds = data.pair_dataset(volumes, [(0, 1)], augmentation=rotated, flow_shape=(24, 24, 2))
    (moving, _, moving_clean), _ = next(iter(ds))
    assert not np.allclose(moving_clean[0, ..., 0], volumes.images[0])  # rotated as well
    np.testing.assert_array_equal(moving[0, ..., 0] > 0, moving_clean[0, ..., 0] > 0)
    with_segs = data.pair_dataset(volumes, [(0, 1)], augmentation=aug, with_segs=True)
    assert [len(part) for part in next(iter(with_segs))] == [2, 2]  # evaluation pairs
    with pytest.raises(ValueError, match="unidirectional"):
        data.pair_dataset(volumes, [(0, 1)], augmentation=aug, flow_shape=(24, 24, 2),
                          bidir=True)


def test_augmentation_arguments_are_checked():
    with pytest.raises(ValueError, match=r"rotate_deg \(--aug_rotate\) must be non-negative, "
                                         "got -5"):
        data.Augmentation(rotate_deg=-5)
    with pytest.raises(ValueError, match=r"intensity_scale \(--aug_scale\) must be below 1"):
        data.Augmentation(intensity_scale=1.5)


def test_scan_to_atlas_pairs_move_every_subject_onto_the_atlas(tmp_path):
    from vxm_tf import configs, experiment

    root = fake_oasis(tmp_path / "o", [(8, 8, 8)] * 4)
    atlas = np.random.default_rng(1).random((16, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "atlas.npz", vol=atlas, seg=(atlas > 0.5).astype(np.int32))
    config = configs.DataConfig(dataset="oasis", data_dir=str(root), train=3, test=1,
                                val=0, atlas=str(tmp_path / "atlas.npz"))
    splits = experiment.build_splits(config)
    train = splits["train"]
    assert train.names[-1] == "atlas" and len(train) == 4 and train.shape == (8, 8, 8)
    assert set(np.unique(train.segs[-1])) <= {0, 1}
    assert experiment.split_pairs(train, atlas=True) == [(0, 3), (1, 3), (2, 3)]


def test_an_atlas_without_its_own_labels_is_refused_for_subjects_with_labels(tmp_path):
    """An integer-valued image given as the atlas would be read as its own label map and
    score intensities as structures: with segmentations, only an npz with `vol` and `seg`
    is an atlas; without them, any image is."""
    root = fake_oasis(tmp_path / "o", [(8, 8, 8)] * 2)
    subjects = data.oasis_dataset(root).subjects
    labelled = data.load_volumes(subjects)
    image = np.random.default_rng(2).integers(0, 4, (8, 8, 8)).astype(np.float32) / 3
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "atlas.nii.gz")
    np.savez(tmp_path / "vol_only.npz", vol=image)
    for path in (tmp_path / "atlas.nii.gz", tmp_path / "vol_only.npz"):
        with pytest.raises(DatasetError, match=rf"--atlas={path}: the subjects have "
                                               r"segmentations.*an \.npz holding `vol`"):
            data.append_atlas(labelled, path)
    unlabelled = data.Volumes(labelled.names, labelled.images, None, {}, labelled.voxel_sizes)
    assert len(data.append_atlas(unlabelled, tmp_path / "atlas.nii.gz")) == 3


def test_raw_scanner_intensities_and_blank_images_are_refused_by_name(tmp_path):
    import nibabel as nib

    root = fake_oasis(tmp_path / "oasis", [(8, 8, 8)] * 3)
    subjects = data.oasis_dataset(root).subjects
    raw = np.random.default_rng(0).integers(0, 4096, (8, 8, 8)).astype(np.int16)
    raw[0, 0, 0], raw[0, 0, 1] = 0, 4095
    nib.save(nib.Nifti1Image(raw, np.eye(4)), subjects[1].image)
    with pytest.raises(data.DatasetError, match=f"{subjects[1].image}: intensities 0..4095, "
                                                r"but models train and register on \[0, 1\]"):
        data.load_volumes(subjects)
    scaled = data.load_volumes(subjects, normalise="percentile")
    assert 0 <= scaled.images.min() and scaled.images.max() <= 1
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), 0.3, np.float32), np.eye(4)),
             subjects[2].image)
    for normalise in ("none", "minmax", "percentile"):
        with pytest.raises(data.DatasetError, match=f"{subjects[2].image}: a blank image"):
            data.load_volumes(subjects[2:], normalise=normalise)


def test_a_memory_budget_reads_subjects_on_demand_and_gives_the_same_data(tmp_path):
    """Lazy volumes (`cache_bytes`) index like the arrays of eager loading, hold at most
    the budget (one subject here) and still check every subject up front."""
    dataset = data.oasis_dataset(fake_oasis(tmp_path / "o", [(8, 10, 6)] * 5))
    eager = data.load_volumes(dataset.subjects, label_names=dataset.label_names)
    one = eager.images[0].nbytes + eager.segs[0].nbytes
    lazy = data.load_volumes(dataset.subjects, label_names=dataset.label_names,
                             cache_bytes=one)
    assert isinstance(lazy.images, data.LazyStack) and lazy.shape == eager.shape
    assert lazy.labels == eager.labels and len(lazy) == 5
    np.testing.assert_array_equal(lazy.voxel_sizes, eager.voxel_sizes)
    for key in (3, -1, slice(1, 4), [4, 0, 2], (slice(0, 2), ..., None), (2, ..., None)):
        np.testing.assert_array_equal(lazy.images[key], eager.images[key])
        np.testing.assert_array_equal(lazy.segs[key], eager.segs[key])
    np.testing.assert_array_equal(np.asarray(lazy.images), eager.images)
    assert lazy.images.cache.nbytes <= one  # the others were let go
    source = dict(flow_shape=(8, 10, 6, 3), batch_size=2, seed=1, repeat=True,
                  augmentation=data.Augmentation(rotate_deg=5, noise=0.01), seg_targets=True)
    for k in range(4):
        for a, b in zip(data.PairSource(lazy, data.all_pairs(5), **source).batch(k)[0],
                        data.PairSource(eager, data.all_pairs(5), **source).batch(k)[0]):
            np.testing.assert_array_equal(a, b)
    odd = data.oasis_dataset(fake_oasis(tmp_path / "p", [(8, 10, 6)] * 2 + [(6, 6, 6)]))
    with pytest.raises(data.DatasetError, match="differs from"):
        data.load_volumes(odd.subjects, cache_bytes=one)

"""One place that turns flags into a dataset, a model and its losses.

`define_flags()` declares the absl flags shared by train, evaluate and tune;
`config_from_flags(FLAGS)` turns them into a plain `Config`; the builders below take that
config and know nothing of absl, so tests and other entry points call them directly.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from absl import flags

from vxm_tf import data, losses, networks

DATASETS = ("synthetic", "oasis", "list", "cache")
SIMILARITIES = ("ncc", "mse", "hybrid")
SCHEDULES = ("constant", "cosine", "exponential", "plateau")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")


class ConfigError(ValueError):
    """Flags that are inconsistent; the message names them."""


@dataclass
class DataConfig:
    dataset: str = "synthetic"
    data_dir: str = ""
    seg: str = "default"
    img_list: str = ""
    img_prefix: str = ""
    img_suffix: str = ""
    seg_suffix: str = ""
    label_table: str = ""
    target_shape: tuple = ()
    normalise: str = "none"
    train: int = 48
    test: int = 11
    val: int = 4
    train_list: str = ""
    test_list: str = ""
    val_list: str = ""
    atlas: str = ""
    synthetic_shape: tuple = (64, 64)
    synthetic_labels: int = 8
    augmentation: data.Augmentation = field(default_factory=data.Augmentation)


# DataConfig fields that name files or folders: a run's config.json records them absolute,
# so `evaluate --model=<run>/best.keras` works from any directory
PATH_FIELDS = ("data_dir", "img_list", "img_prefix", "label_table", "train_list",
               "test_list", "val_list", "atlas")


def absolute_paths(values):
    """A copy of a DataConfig's dict with `PATH_FIELDS` made absolute (relative to the
    current directory; an `img_prefix` keeps its trailing separator)."""
    values = dict(values)
    for name in PATH_FIELDS:
        path = values.get(name)
        if path:
            absolute = os.path.abspath(os.path.expanduser(path))
            values[name] = absolute + (os.sep if path.endswith(("/", os.sep)) else "")
    return values


@dataclass
class ModelConfig:
    nb_features: list | int | None = None
    nb_levels: int | None = None
    feat_mult: float = 1
    conv_per_level: int = 1
    int_steps: int = 7
    int_resolution: int = 2
    svf_resolution: int = 1
    bidir: bool = False


@dataclass
class LossConfig:
    similarity: str = "ncc"
    reg_weight: float = 1.0
    window: int = 9
    image_sigma: float = 1.0
    grad_penalty: str = "l2"
    hybrid_ncc_weight: float = 1.0
    hybrid_mse_weight: float = 1.0
    seg_weight: float = 0.0
    seg_resolution: int = 1


@dataclass
class TrainConfig:
    lr: float = 1e-4
    schedule: str = "constant"
    final_lr_fraction: float = 0.01
    epochs: int = 5
    steps_per_epoch: int = 0
    batch_size: int = 1
    steps_per_execution: int = 1
    precision: str = "auto"
    strategy: str = "default"
    seed: int = 0
    val_pairs: int = 12
    model_dir: str = "runs/default"
    init_model: str = ""
    resume: bool = False
    verbose: int = 1


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def define_flags():
    """Declare the shared flags (idempotent)."""
    if "similarity" in flags.FLAGS:
        return
    d, m, lo, t = DataConfig(), ModelConfig(), LossConfig(), TrainConfig()
    aug = data.Augmentation()
    f = flags
    f.DEFINE_enum("dataset", d.dataset, DATASETS, "synthetic (no files), neurite-OASIS "
                  "folder, image list, or a folder written by tools/prepare_data.py")
    f.DEFINE_string("data_dir", d.data_dir, "neurite-OASIS or cache folder")
    f.DEFINE_string("seg", d.seg, "OASIS segmentation: default (seg35 3D, seg24 2D), seg35, "
                    "seg24, seg4, or none")
    f.DEFINE_string("img_list", d.img_list, "list dataset: one subject per line")
    f.DEFINE_string("img_prefix", d.img_prefix, "list dataset: prefix of every entry")
    f.DEFINE_string("img_suffix", d.img_suffix, "list dataset: image suffix of every entry")
    f.DEFINE_string("seg_suffix", d.seg_suffix, "list dataset: segmentation suffix")
    f.DEFINE_string("label_table", d.label_table, "list dataset: FreeSurfer colour table")
    f.DEFINE_list("target_shape", [], "resize every volume to this shape, e.g. 128,128,128")
    f.DEFINE_enum("normalise", d.normalise, ("none", "minmax", "percentile"),
                  "intensity normalisation applied when loading")
    f.DEFINE_integer("train", d.train, "training subjects (the first ones)")
    f.DEFINE_integer("test", d.test, "test subjects (after the training ones)")
    f.DEFINE_integer("val", d.val, "validation subjects (after the test ones)")
    f.DEFINE_string("train_list", "", "file of training subject names (replaces --train)")
    f.DEFINE_string("test_list", "", "file of test subject names (replaces --test)")
    f.DEFINE_string("val_list", "", "file of validation subject names (replaces --val)")
    f.DEFINE_string("atlas", "", "scan-to-atlas: register every subject to this volume")
    f.DEFINE_list("synthetic_shape", list(map(str, d.synthetic_shape)),
                  "synthetic dataset: spatial shape")
    f.DEFINE_integer("synthetic_labels", d.synthetic_labels, "synthetic dataset: labels")
    f.DEFINE_float("aug_rotate", aug.rotate_deg, "augmentation: max rotation, degrees")
    f.DEFINE_bool("aug_flip", aug.flip, "augmentation: random left-right flip")
    f.DEFINE_float("aug_shift", aug.intensity_shift, "augmentation: max intensity offset")
    f.DEFINE_float("aug_scale", aug.intensity_scale, "augmentation: max relative contrast")
    f.DEFINE_float("aug_gamma", aug.gamma, "augmentation: max absolute log-gamma")
    f.DEFINE_float("aug_bias", aug.bias, "augmentation: max bias-field strength (log scale)")
    f.DEFINE_bool("aug_clean_targets", aug.clean_targets,
                  "augmentation: the similarity loss compares the scans without their "
                  "intensity changes (unidirectional training only)")
    f.DEFINE_float("aug_noise", aug.noise, "augmentation: noise standard deviation")

    f.DEFINE_string("enc", "", "U-Net encoder features, e.g. 16,32,32,32 (default original)")
    f.DEFINE_string("dec", "", "U-Net decoder features, e.g. 32,32,32,32,32,16,16")
    f.DEFINE_integer("int_steps", m.int_steps, "scaling-and-squaring steps (0: no integration)")
    f.DEFINE_integer("int_resolution", m.int_resolution, "integration voxel size factor")
    f.DEFINE_integer("svf_resolution", m.svf_resolution, "velocity field voxel size factor")
    f.DEFINE_bool("bidir", m.bidir, "bidirectional cost")

    f.DEFINE_enum("similarity", lo.similarity, SIMILARITIES, "image similarity loss")
    f.DEFINE_float("lambda", lo.reg_weight, "weight of the Grad smoothness loss")
    f.DEFINE_integer("window", lo.window, "NCC window, voxels per axis")
    f.DEFINE_float("image_sigma", lo.image_sigma, "MSE noise sigma (loss / sigma^2)")
    f.DEFINE_enum("grad_penalty", lo.grad_penalty, ("l1", "l2"), "Grad penalty")
    f.DEFINE_float("hybrid_ncc_weight", lo.hybrid_ncc_weight, "hybrid: NCC weight")
    f.DEFINE_float("hybrid_mse_weight", lo.hybrid_mse_weight, "hybrid: MSE weight")
    f.DEFINE_float("seg_weight", lo.seg_weight, "semi-supervised: weight of a soft Dice loss "
                   "between the warped moving segmentation (one-hot, linear) and the fixed "
                   "one, over the training subjects' labels (--seg chooses the labelling); 0: "
                   "unsupervised")
    f.DEFINE_integer("seg_resolution", lo.seg_resolution, "semi-supervised: the Dice loss "
                     "compares the segmentations at 1/seg_resolution of the image size "
                     "(one-hot maps average-pooled, the field resized): 2 needs 1/8 of that "
                     "term's memory")

    f.DEFINE_float("lr", t.lr, "Adam learning rate")
    f.DEFINE_enum("schedule", t.schedule, SCHEDULES, "learning-rate schedule")
    f.DEFINE_float("final_lr_fraction", t.final_lr_fraction,
                   "cosine / exponential: final learning rate as a fraction of --lr")
    f.DEFINE_integer("epochs", t.epochs, "training epochs")
    f.DEFINE_integer("steps_per_epoch", t.steps_per_epoch, "0: one pass over the pairs")
    f.DEFINE_integer("batch_size", t.batch_size, "pairs per step")
    f.DEFINE_integer("steps_per_execution", t.steps_per_execution,
                     "training steps per compiled call (fewer Python round trips)")
    f.DEFINE_enum("precision", t.precision, PRECISIONS, "auto: mixed_float16 on GPU, else "
                  "float32")
    f.DEFINE_enum("strategy", t.strategy, STRATEGIES, "tf.distribute strategy")
    f.DEFINE_integer("seed", t.seed, "random seed (data order, augmentation, weights)")
    f.DEFINE_integer("val_pairs", t.val_pairs, "validation pairs scored each epoch")
    f.DEFINE_string("model_dir", t.model_dir, "run directory")
    f.DEFINE_string("init_model", t.init_model, "start from this model's weights (.keras or "
                    "an original voxelmorph .h5), e.g. to fine-tune the authors' pretrained "
                    "model; its architecture replaces the model flags")
    f.DEFINE_bool("resume", t.resume, "continue from the run directory's last checkpoint")
    f.DEFINE_integer("verbose", t.verbose, "0 silent, 1 progress bar, 2 one line per epoch")


def _ints(values, name):
    try:
        return tuple(int(v) for v in values if str(v).strip())
    except ValueError:
        raise ConfigError(f"--{name} must be comma-separated integers, got "
                          f"{','.join(map(str, values))!r}") from None


def config_from_flags(fl, training=True):
    """Plain `Config` from parsed absl flags; raises `ConfigError` on inconsistency
    (`training` False: for scoring, which needs no training subjects)."""
    augmentation = data.Augmentation(
        rotate_deg=fl.aug_rotate, flip=fl.aug_flip, intensity_shift=fl.aug_shift,
        intensity_scale=fl.aug_scale, gamma=fl.aug_gamma, bias=fl.aug_bias,
        noise=fl.aug_noise, clean_targets=fl.aug_clean_targets)
    enc, dec = _ints(fl.enc.split(","), "enc"), _ints(fl.dec.split(","), "dec")
    if bool(enc) != bool(dec):
        raise ConfigError("--enc and --dec go together (both or neither)")
    config = Config(
        data=DataConfig(
            dataset=fl.dataset, data_dir=fl.data_dir, seg=fl.seg, img_list=fl.img_list,
            img_prefix=fl.img_prefix, img_suffix=fl.img_suffix, seg_suffix=fl.seg_suffix,
            label_table=fl.label_table, target_shape=_ints(fl.target_shape, "target_shape"),
            normalise=fl.normalise, train=fl.train, test=fl.test, val=fl.val,
            train_list=fl.train_list, test_list=fl.test_list, val_list=fl.val_list,
            atlas=fl.atlas, synthetic_shape=_ints(fl.synthetic_shape, "synthetic_shape"),
            synthetic_labels=fl.synthetic_labels, augmentation=augmentation),
        model=ModelConfig(
            nb_features=[list(enc), list(dec)] if enc else None, int_steps=fl.int_steps,
            int_resolution=fl.int_resolution, svf_resolution=fl.svf_resolution,
            bidir=fl.bidir),
        loss=LossConfig(
            similarity=fl.similarity, reg_weight=fl["lambda"].value, window=fl.window,
            image_sigma=fl.image_sigma, grad_penalty=fl.grad_penalty,
            hybrid_ncc_weight=fl.hybrid_ncc_weight, hybrid_mse_weight=fl.hybrid_mse_weight,
            seg_weight=fl.seg_weight, seg_resolution=fl.seg_resolution),
        train=TrainConfig(
            lr=fl.lr, schedule=fl.schedule, final_lr_fraction=fl.final_lr_fraction,
            epochs=fl.epochs, steps_per_epoch=fl.steps_per_epoch, batch_size=fl.batch_size,
            steps_per_execution=fl.steps_per_execution, precision=fl.precision,
            strategy=fl.strategy, seed=fl.seed, val_pairs=fl.val_pairs,
            model_dir=fl.model_dir, init_model=fl.init_model, resume=fl.resume,
            verbose=fl.verbose))
    check_config(config, training)
    return config


def check_config(config, training=True):
    """Raise `ConfigError` naming the flag for values that cannot work together."""
    d, lo, t = config.data, config.loss, config.train
    if d.dataset in ("oasis", "cache") and not d.data_dir:
        raise ConfigError(f"--dataset={d.dataset} needs --data_dir")
    if d.dataset == "list" and not d.img_list:
        raise ConfigError("--dataset=list needs --img_list")
    if d.dataset == "synthetic" and len(d.synthetic_shape) not in (2, 3):
        raise ConfigError(f"--synthetic_shape must be 2D or 3D, got {d.synthetic_shape}")
    if d.target_shape and len(d.target_shape) not in (2, 3):
        raise ConfigError(f"--target_shape must be 2D or 3D, got {d.target_shape}")
    for name, value in (("lambda", lo.reg_weight), ("train", d.train), ("test", d.test),
                        ("val", d.val), ("hybrid_ncc_weight", lo.hybrid_ncc_weight),
                        ("hybrid_mse_weight", lo.hybrid_mse_weight),
                        ("seg_weight", lo.seg_weight)):
        if value < 0:
            raise ConfigError(f"--{name} must be non-negative, got {value}")
    for name, value in (("lr", t.lr), ("epochs", t.epochs), ("batch_size", t.batch_size),
                        ("window", lo.window), ("image_sigma", lo.image_sigma),
                        ("steps_per_execution", t.steps_per_execution)):
        if value <= 0:
            raise ConfigError(f"--{name} must be positive, got {value}")
    m = config.model
    for name, value in (("int_resolution", m.int_resolution),
                        ("svf_resolution", m.svf_resolution),
                        ("seg_resolution", lo.seg_resolution),
                        ("synthetic_labels", d.synthetic_labels)):
        if value < 1:
            raise ConfigError(f"--{name} must be at least 1, got {value}")
    for name, value in (("int_steps", m.int_steps), ("val_pairs", t.val_pairs)):
        if value < 0:
            raise ConfigError(f"--{name} must be 0 or positive, got {value}")
    for name, shape in (("target_shape", d.target_shape),
                        ("synthetic_shape", d.synthetic_shape)):
        if any(n < 1 for n in shape):
            raise ConfigError(f"--{name} entries must be positive, got "
                              f"{','.join(map(str, shape))}")
    if t.steps_per_epoch < 0:
        raise ConfigError(f"--steps_per_epoch must be 0 (one pass) or positive, got "
                          f"{t.steps_per_epoch}")
    if not 0 < t.final_lr_fraction <= 1:
        raise ConfigError(f"--final_lr_fraction must be in (0, 1], got {t.final_lr_fraction}")
    if d.atlas and d.dataset == "synthetic":
        raise ConfigError("--atlas needs a dataset of files, not --dataset=synthetic")
    if d.augmentation.clean_targets and config.model.bidir:
        raise ConfigError("--aug_clean_targets works with unidirectional models, not --bidir")
    if lo.seg_weight and config.model.bidir:
        raise ConfigError("--seg_weight works with unidirectional models, not --bidir")
    if lo.seg_weight and d.augmentation.clean_targets:
        raise ConfigError("--seg_weight and --aug_clean_targets do not go together")
    if lo.seg_weight and d.seg == "none":
        raise ConfigError("--seg_weight needs segmentations, not --seg=none")
    if t.init_model and not Path(t.init_model).is_file():
        raise ConfigError(f"--init_model={t.init_model}: no such file")
    if training and d.val == 1 and not d.val_list:
        raise ConfigError("--val=1: validation scores pairs and needs at least 2 subjects; "
                          "use --val=0 (no validation, no best.keras) or 2 or more")
    if training and d.train < 2 and not d.train_list and not d.atlas:
        raise ConfigError(f"--train needs at least 2 subjects to make pairs, got {d.train}")


# -- data ------------------------------------------------------------------------------

def run_data_config(model_path):
    """The `DataConfig` a model was trained with, from the config.json of its run
    directory (beside the model file); None when there is none."""
    path = Path(model_path).parent / "config.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())["data"]
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    saved["augmentation"] = data.Augmentation()  # evaluation never augments
    return DataConfig(**saved)


def build_dataset(config):
    """The `data.Dataset` named by a `DataConfig` (not for the synthetic dataset)."""
    if config.dataset == "oasis":
        return data.oasis_dataset(config.data_dir, seg=None if config.seg == "none"
                                  else config.seg)
    if config.dataset == "cache":
        return data.cached_dataset(config.data_dir)
    return data.list_dataset(config.img_list, config.img_prefix, config.img_suffix,
                             config.seg_suffix or None, config.label_table or None)


def build_splits(config):
    """`{'train', 'val', 'test'}` -> `Volumes` (a split may be None when empty)."""
    if config.dataset == "synthetic":
        counts = {"train": config.train, "val": config.val, "test": config.test}
        return {split: data.synthetic_volumes(count, config.synthetic_shape,
                                              config.synthetic_labels, seed=seed)
                if count else None
                for seed, (split, count) in enumerate(counts.items(), start=1)}
    dataset = build_dataset(config)
    subjects = data.split_subjects(dataset, config.train, config.test, config.val,
                                   config.train_list or None, config.test_list or None,
                                   config.val_list or None)
    target = config.target_shape or None
    splits = {split: data.load_volumes(subs, target, config.normalise, dataset.label_names)
              if subs else None for split, subs in subjects.items()}
    if config.atlas:
        splits = {split: data.append_atlas(volumes, config.atlas, config.normalise)
                  if volumes is not None else None for split, volumes in splits.items()}
    return splits


def split_pairs(volumes, limit=0, seed=0, atlas=False):
    """All ordered pairs of a split, or `limit` of them drawn with `seed`.

    With `atlas`, the split's last volume is the atlas and every other one moves onto it.
    """
    n = len(volumes)
    pairs = data.atlas_pairs(n, n - 1) if atlas else data.all_pairs(n)
    if limit and limit < len(pairs):
        rng = np.random.default_rng(seed)
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), limit, replace=False))]
    return pairs


# -- model -----------------------------------------------------------------------------

def build_model(model_config, inshape):
    """An uncompiled `VxmDense` for images of spatial shape `inshape`."""
    return networks.VxmDense(
        inshape, nb_unet_features=model_config.nb_features,
        nb_unet_levels=model_config.nb_levels, unet_feat_mult=model_config.feat_mult,
        nb_unet_conv_per_level=model_config.conv_per_level,
        int_steps=model_config.int_steps, int_resolution=model_config.int_resolution,
        svf_resolution=model_config.svf_resolution, bidir=model_config.bidir)


def build_losses(loss_config, model_config, labels=()):
    """Losses and weights as the original's train script: `[sim, (sim,) Grad]`, plus
    `Dice(labels)` weighted `seg_weight` when semi-supervised.

    Bidirectional models weigh the two image terms 0.5 each. Grad's `loss_mult` is the
    integration resolution, as the original.
    """
    lo = loss_config
    if lo.similarity == "ncc":
        similarity = losses.NCC(win=lo.window)
    elif lo.similarity == "mse":
        similarity = losses.MSE(image_sigma=lo.image_sigma)
    else:
        similarity = losses.Hybrid(lo.hybrid_ncc_weight, lo.hybrid_mse_weight, win=lo.window,
                                   image_sigma=lo.image_sigma)
    grad = losses.Grad(lo.grad_penalty, loss_mult=model_config.int_resolution)
    if model_config.bidir:
        return [similarity, similarity, grad], [0.5, 0.5, lo.reg_weight]
    if lo.seg_weight:
        if not labels:
            raise ConfigError("--seg_weight: the training subjects have no labels")
        return ([similarity, grad, losses.Dice(labels, resolution=lo.seg_resolution)],
                [1.0, lo.reg_weight, lo.seg_weight])
    return [similarity, grad], [1.0, lo.reg_weight]


def learning_rate(train_config, total_steps):
    """Adam's learning rate: a float or a `LearningRateSchedule` over `total_steps`."""
    t = train_config
    if t.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(t.lr, total_steps,
                                                      alpha=t.final_lr_fraction)
    if t.schedule == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            t.lr, decay_steps=total_steps, decay_rate=t.final_lr_fraction)
    return t.lr


def training_model(model, config, labels=()):
    """What `fit` trains: `model`, its clean-target view (`--aug_clean_targets`) or its
    semi-supervised view over `labels` (`--seg_weight`)."""
    if config.data.augmentation.clean_targets:
        return networks.clean_target_model(model)
    if config.loss.seg_weight:
        try:
            return networks.seg_training_model(model, labels, config.loss.seg_resolution)
        except ValueError as err:
            raise ConfigError(f"--seg_resolution: {err}") from None
    return model


def initial_model(config, inshape):
    """The model training starts from: built from the model flags, or loaded from
    `--init_model` (which must take images of `inshape`)."""
    if not config.train.init_model:
        return build_model(config.model, inshape)
    try:
        model = networks.VxmDense.load(config.train.init_model)
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(f"--init_model={config.train.init_model}: {err}") from None
    if tuple(model.inshape) != tuple(inshape):
        raise ConfigError(f"--init_model={config.train.init_model} takes images of shape "
                          f"{tuple(model.inshape)}, the data are {tuple(inshape)}; set "
                          "--target_shape")
    if config.loss.seg_weight and model.bidir:
        raise ConfigError("--seg_weight works with unidirectional models, and --init_model "
                          "is bidirectional")
    return model


def compile_model(model, config, total_steps, labels=()):
    """Compile `model` with the configured losses, weights and Adam."""
    loss_list, weights = build_losses(config.loss, config.model, labels)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(config.train, total_steps)),
                  loss=loss_list, loss_weights=weights,
                  steps_per_execution=config.train.steps_per_execution)
    return model

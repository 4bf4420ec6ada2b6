"""What a run is: the config dataclasses and the flags derived from them (their checks:
`vxm_tf.config_checks`).

Each parameter is written once, as a dataclass field whose metadata holds its flag's help
(and name, where the flag is called otherwise, and choices); `define_flags()` declares the
flags from those fields and `config_from_flags(FLAGS)` reads them back into a `Config`.
Fields without metadata (the original's U-Net options) are not flags.
`vxm_tf.experiment` builds data, model and losses from a `Config` and knows nothing of absl.
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from absl import flags

from vxm_tf import data, models
from vxm_tf.config_checks import check_config, check_hyper, check_template  # noqa: F401
from vxm_tf.flagging import (  # noqa: F401 - the one way to declare a flag, used here
    ConfigError,
    define_flags_of,
    flag_name,
    flags_of,
    ints,
    option,
    values_from_flags,
)

DATASETS = ("synthetic", "oasis", "list", "cache")
SIMILARITIES = ("ncc", "mse", "hybrid")
SCHEDULES = ("constant", "cosine", "exponential", "plateau")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")
TEMPLATES = ("none", "unconditional", "conditional")


@dataclass
class DataConfig:
    dataset: str = option("synthetic", "synthetic (no files), neurite-OASIS folder, image "
                          "list, or a folder written by tools/prepare_data.py",
                          choices=DATASETS)
    data_dir: str = option("", "neurite-OASIS or cache folder")
    seg: str = option("default", "OASIS segmentation: default (seg35 3D, seg24 2D), seg35, "
                      "seg24, seg4, or none")
    img_list: str = option("", "list dataset: one subject per line")
    img_prefix: str = option("", "list dataset: prefix of every entry")
    img_suffix: str = option("", "list dataset: image suffix of every entry")
    seg_suffix: str = option("", "list dataset: segmentation suffix")
    label_table: str = option("", "list dataset: FreeSurfer colour table")
    target_shape: tuple = option((), "resize every volume to this shape, e.g. 128,128,128")
    normalise: str = option("none", "intensity normalisation applied when loading",
                            choices=("none", "minmax", "percentile"))
    train: int = option(48, "training subjects (the first ones)")
    test: int = option(11, "test subjects (after the training ones)")
    val: int = option(4, "validation subjects (after the test ones)")
    train_list: str = option("", "file of training subject names (replaces --train)")
    test_list: str = option("", "file of test subject names (replaces --test)")
    val_list: str = option("", "file of validation subject names (replaces --val)")
    atlas: str = option("", "scan-to-atlas: register every subject to this volume")
    synthetic_shape: tuple = option((64, 64), "synthetic dataset: spatial shape")
    synthetic_labels: int = option(8, "synthetic dataset: labels")
    cache_mb: int = option(2048, "memory for the loaded subjects of each split, MiB: "
                           "every subject is read and checked once, kept while this allows "
                           "and read again when needed (0: all kept, however many)")
    attributes_csv: str = option("", "conditional templates: CSV of subject attributes, a "
                                 "row per subject, its ID column naming the subject")
    attributes: str = option("", "conditional templates: comma-separated columns of "
                             "--attributes_csv to condition on, e.g. Age or Age,M/F")
    augmentation: data.Augmentation = field(default_factory=data.Augmentation)


# DataConfig fields that name files or folders: a run's config.json records them absolute,
# so `evaluate --model=<run>/best.keras` works from any directory
PATH_FIELDS = ("data_dir", "img_list", "img_prefix", "label_table", "train_list",
               "test_list", "val_list", "atlas", "attributes_csv")


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
    nb_features: list | int | None = None  # from --enc and --dec
    nb_levels: int | None = None
    feat_mult: float = 1
    conv_per_level: int = 1
    int_steps: int = option(7, "scaling-and-squaring steps (0: no integration)")
    int_resolution: int = option(2, "integration voxel size factor: the velocity field is "
                                 "integrated at 1/int_resolution of the image size, and "
                                 "the smoothness loss is multiplied by it (as the "
                                 "original's loss_mult)")
    svf_resolution: int = option(1, "velocity field voxel size factor")
    bidir: bool = option(False, "bidirectional cost")
    hyper: bool = option(False, "HyperMorph (HyperVxmDense): a hypernetwork conditions the "
                         "U-Net on the smoothness weight h in [0, 1], drawn per pair in "
                         "training (loss (1 - h) x similarity + h x Grad, in place of "
                         "--lambda), chosen when registering (--hyper_lambda)")
    hyper_layers: int = option(6, "HyperMorph: dense ReLU layers of the hypernetwork")
    hyper_units: int = option(128, "HyperMorph: units per hypernetwork layer (each "
                              "convolution's weights grow with it)")
    template: str = option("none", "learn a template (atlas) with the registration network "
                           "from the training scans: unconditional (TemplateCreation) or "
                           "conditional on --attributes (ConditionalTemplateCreation)",
                           choices=TEMPLATES)


@dataclass
class LossConfig:
    similarity: str = option("ncc", "image similarity loss", choices=SIMILARITIES)
    reg_weight: float = option(1.0, "weight of the Grad smoothness loss; the loss applied "
                               "is lambda x int_resolution x Grad (the original's "
                               "loss_mult)", flag="lambda")
    window: int = option(9, "NCC window, voxels per axis (odd, at least 3)")
    image_sigma: float = option(1.0, "MSE noise sigma (loss / sigma^2)")
    grad_penalty: str = option("l2", "Grad penalty", choices=("l1", "l2"))
    hybrid_ncc_weight: float = option(1.0, "hybrid: NCC weight")
    hybrid_mse_weight: float = option(1.0, "hybrid: MSE weight")
    seg_weight: float = option(0.0, "semi-supervised: weight of a soft Dice loss between "
                               "the warped moving segmentation (one-hot, linear) and the "
                               "fixed one, over the training subjects' labels (--seg "
                               "chooses the labelling); 0: unsupervised")
    template_mean_weight: float = option(1.0, "templates: weight of the MSE driving the "
                                         "running mean of the scan-to-template fields to "
                                         "zero (the template at the population's centre)")
    template_deform_weight: float = option(0.01, "conditional templates: weight of the MSE "
                                           "of the template-to-scan displacements")
    hyper_oversample: float = option(0.4, "HyperMorph: fraction of training pairs whose "
                                     "h is an end point, 0 or 1 (the rest uniform on "
                                     "[0, 1])")
    seg_resolution: int = option(1, "semi-supervised: the Dice loss compares the "
                                 "segmentations at 1/seg_resolution of the image size "
                                 "(one-hot maps average-pooled, the field resized): 2 needs "
                                 "1/8 of that term's memory")


@dataclass
class TrainConfig:
    lr: float = option(1e-4, "Adam learning rate")
    schedule: str = option("constant", "learning-rate schedule", choices=SCHEDULES)
    final_lr_fraction: float = option(0.01, "cosine / exponential: final learning rate as "
                                      "a fraction of --lr")
    epochs: int = option(5, "training epochs")
    steps_per_epoch: int = option(0, "0: one pass over the pairs")
    batch_size: int = option(1, "pairs per step")
    steps_per_execution: int = option(1, "training steps per compiled call (fewer Python "
                                      "round trips)")
    precision: str = option("auto", "auto: mixed_float16 on GPU, else float32",
                            choices=PRECISIONS)
    remat: bool = option(False, "recompute the scaling and squaring's intermediates in the "
                         "backward pass instead of keeping them (same gradients, less "
                         "memory, slightly slower steps: bench/model.md)")
    strategy: str = option("default", "mirrored: data parallel over this machine's "
                           "devices; multi_worker: over several processes (JAX backend, "
                           "KERAS_DISTRIBUTION_* variables)", choices=STRATEGIES)
    seed: int = option(0, "random seed (data order, augmentation, weights)")
    val_pairs: int = option(12, "validation pairs scored each epoch")
    hyper_val_lambda: float = option(0.5, "HyperMorph: the h at which validation Dice is "
                                     "scored each epoch (it picks best.keras)")
    model_dir: str = option("runs/default", "run directory")
    init_model: str = option("", "start from this model's weights (.keras or an original "
                             "voxelmorph .h5, or a registered name: vxm-models list), e.g. "
                             "to fine-tune the authors' pretrained model; its architecture "
                             "replaces the model flags")
    resume: bool = option(False, "continue from the run directory's last checkpoint")
    time_limit: float = option(0.0, "seconds: end the run after the last epoch that can end "
                               "within this time of its start (at least one epoch; exit "
                               "status 3; continue with --resume); 0: no limit")
    verbose: int = option(1, "0 silent, 1 a progress bar on a terminal (one line per epoch "
                           "when the output is a file or pipe), 2 one line per epoch")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def define_flags(flag_values=flags.FLAGS):
    """Declare the flags shared by train, evaluate and tune (idempotent)."""
    if "similarity" in flag_values:
        return
    for cls in (DataConfig, data.Augmentation, ModelConfig, LossConfig, TrainConfig):
        define_flags_of(cls, flag_values)
    flags.DEFINE_string("enc", "", "U-Net encoder features, e.g. 16,32,32,32 (default "
                        "original)", flag_values=flag_values)
    flags.DEFINE_string("dec", "", "U-Net decoder features, e.g. 32,32,32,32,32,16,16",
                        flag_values=flag_values)


def flag_groups():
    """`[(title, [flag names])]` of the flags `define_flags` declares, for `--help`."""
    return [("data", flags_of(DataConfig)), ("augmentation", flags_of(data.Augmentation)),
            ("model", [*flags_of(ModelConfig), "enc", "dec"]), ("loss", flags_of(LossConfig)),
            ("training", flags_of(TrainConfig))]


def config_from_flags(fl, training=True, check=True):
    """Plain `Config` from parsed absl flags; raises `ConfigError` on inconsistency
    (`training` False: for scoring, which needs no training subjects; `check` False: the
    caller checks it, e.g. once merged with a model's run)."""
    enc, dec = ints(fl.enc.split(","), "enc"), ints(fl.dec.split(","), "dec")
    if bool(enc) != bool(dec):
        raise ConfigError("--enc and --dec go together (both or neither)")
    augmentation = values_from_flags(data.Augmentation, fl)
    config = Config(
        data=values_from_flags(DataConfig, fl, augmentation=augmentation),
        model=values_from_flags(ModelConfig, fl,
                                nb_features=[list(enc), list(dec)] if enc else None),
        loss=values_from_flags(LossConfig, fl),
        train=values_from_flags(TrainConfig, fl))
    if check:
        check_config(config, training)
    return config


def run_data_config(model_path):
    """The `DataConfig` a model (a path or a registered name) was trained with, from the
    config.json of its run directory (beside the model file); None when there is none.
    A shipped model's relative data paths start at the repository (`models.REPOSITORY`)."""
    model_path = models.resolve(model_path)
    path = Path(model_path).parent / "config.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())["data"]
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    if models.name_of(model_path):
        saved = {k: os.path.join(models.REPOSITORY, v) if k in PATH_FIELDS and v
                 and not os.path.isabs(v) else v for k, v in saved.items()}
    saved["augmentation"] = data.Augmentation()  # evaluation never augments
    return DataConfig(**saved)

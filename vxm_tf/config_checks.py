"""The checks of a run's configuration (`configs.Config`): values that cannot work
together, each a `ConfigError` naming its flag, raised before any data is read or any
model built."""

import math
from dataclasses import fields
from pathlib import Path

from vxm_tf import models
from vxm_tf.flagging import ConfigError, flag_name


def _at_least(minimum, what, pairs):
    for name, value in pairs:
        if value < minimum:
            raise ConfigError(f"--{name} must be {what}, got {value}")


def _check_finite(config):
    """Every number a flag sets is finite (NaN passes every `<` check silently)."""
    for section in (config.data, config.data.augmentation, config.model, config.loss,
                    config.train):
        for f in fields(section):
            value = getattr(section, f.name)
            if (isinstance(value, float) and "help" in f.metadata
                    and not math.isfinite(value)):
                raise ConfigError(f"--{flag_name(f)} must be a finite number, got {value}")


def check_config(config, training=True):
    """Raise `ConfigError` naming the flag for values that cannot work together."""
    _check_finite(config)
    d, m, lo, t = config.data, config.model, config.loss, config.train
    if d.dataset in ("oasis", "cache") and not d.data_dir:
        raise ConfigError(f"--dataset={d.dataset} needs --data_dir")
    if d.dataset == "list" and not d.img_list:
        raise ConfigError("--dataset=list needs --img_list")
    if d.dataset == "synthetic" and len(d.synthetic_shape) not in (2, 3):
        raise ConfigError(f"--synthetic_shape must be 2D or 3D, got {d.synthetic_shape}")
    if d.target_shape and len(d.target_shape) not in (2, 3):
        raise ConfigError(f"--target_shape must be 2D or 3D, got {d.target_shape}")
    _at_least(0, "non-negative", (
        ("lambda", lo.reg_weight), ("train", d.train), ("test", d.test), ("val", d.val),
        ("hybrid_ncc_weight", lo.hybrid_ncc_weight),
        ("hybrid_mse_weight", lo.hybrid_mse_weight), ("seg_weight", lo.seg_weight),
        ("int_steps", m.int_steps), ("val_pairs", t.val_pairs),
        ("steps_per_epoch", t.steps_per_epoch), ("cache_mb", d.cache_mb),
        ("time_limit", t.time_limit)))
    _at_least(1, "at least 1", (
        ("epochs", t.epochs), ("batch_size", t.batch_size),
        ("steps_per_execution", t.steps_per_execution),
        ("int_resolution", m.int_resolution), ("svf_resolution", m.svf_resolution),
        ("seg_resolution", lo.seg_resolution), ("synthetic_labels", d.synthetic_labels)))
    for name, value in (("lr", t.lr), ("image_sigma", lo.image_sigma)):
        if value <= 0:
            raise ConfigError(f"--{name} must be positive, got {value}")
    if lo.window < 3 or lo.window % 2 == 0:
        raise ConfigError(f"--window must be odd and at least 3, got {lo.window}")
    for name, shape in (("target_shape", d.target_shape),
                        ("synthetic_shape", d.synthetic_shape)):
        if any(n < 1 for n in shape):
            raise ConfigError(f"--{name} entries must be positive, got "
                              f"{','.join(map(str, shape))}")
    if not 0 < t.final_lr_fraction <= 1:
        raise ConfigError(f"--final_lr_fraction must be in (0, 1], got {t.final_lr_fraction}")
    if d.atlas and d.dataset == "synthetic":
        raise ConfigError("--atlas needs a dataset of files, not --dataset=synthetic")
    if d.atlas and not Path(d.atlas).is_file():
        raise ConfigError(f"--atlas={d.atlas}: no such file")
    if d.augmentation.clean_targets and m.bidir:
        raise ConfigError("--aug_clean_targets works with unidirectional models, not --bidir")
    if lo.seg_weight and m.bidir:
        raise ConfigError("--seg_weight works with unidirectional models, not --bidir")
    if lo.seg_weight and d.augmentation.clean_targets:
        raise ConfigError("--seg_weight and --aug_clean_targets do not go together")
    if lo.seg_weight and d.seg == "none":
        raise ConfigError("--seg_weight needs segmentations, not --seg=none")
    if t.init_model:
        try:
            init_model = models.resolve(t.init_model)
        except models.ModelError as err:
            raise ConfigError(f"--init_model={err}") from None
        if not Path(init_model).is_file():
            raise ConfigError(f"--init_model={t.init_model}: no such file")
    check_hyper(config)
    check_template(config)
    if training and d.val == 1 and not d.val_list:
        raise ConfigError("--val=1: validation scores pairs and needs at least 2 subjects; "
                          "use --val=0 (no validation, no best.keras) or 2 or more")
    if training and d.train < 2 and not d.train_list and not d.atlas:
        raise ConfigError(f"--train needs at least 2 subjects to make pairs, got {d.train}")


def check_hyper(config):
    """HyperMorph's flags: in range, and only with what its training supports."""
    m, lo, t = config.model, config.loss, config.train
    for name, value in (("hyper_oversample", lo.hyper_oversample),
                        ("hyper_val_lambda", t.hyper_val_lambda)):
        if not 0 <= value <= 1:
            raise ConfigError(f"--{name} must be in [0, 1], got {value}")
    _at_least(1, "at least 1", (("hyper_layers", m.hyper_layers),
                                ("hyper_units", m.hyper_units)))
    if not m.hyper:
        given = [f"--{flag}" for flag, value, default in (
            ("hyper_layers", m.hyper_layers, type(m).hyper_layers),
            ("hyper_units", m.hyper_units, type(m).hyper_units),
            ("hyper_oversample", lo.hyper_oversample, type(lo).hyper_oversample),
            ("hyper_val_lambda", t.hyper_val_lambda, type(t).hyper_val_lambda))
            if value != default]
        if given:
            raise ConfigError(f"{', '.join(given)} set(s) a HyperMorph model: add --hyper")
        return
    if lo.reg_weight != type(lo).reg_weight:
        raise ConfigError(f"--lambda={lo.reg_weight} sets one smoothness weight; a --hyper "
                          "model learns them all (h in [0, 1], drawn per pair): leave "
                          "--lambda out")
    for flag, on in (("bidir", m.bidir), ("seg_weight", lo.seg_weight),
                     ("aug_clean_targets", config.data.augmentation.clean_targets)):
        if on:
            raise ConfigError(f"--hyper trains unidirectional, unsupervised models; "
                              f"--{flag} does not go with it")


def check_template(config):
    """Template flags: attributes exactly for conditional templates, and only with what
    template training supports."""
    d, m, lo = config.data, config.model, config.loss
    _at_least(0, "non-negative", (("template_mean_weight", lo.template_mean_weight),
                                  ("template_deform_weight", lo.template_deform_weight)))
    conditional = m.template == "conditional"
    if conditional and not (d.attributes_csv and d.attributes):
        raise ConfigError("--template=conditional needs --attributes_csv and --attributes")
    if not conditional and (d.attributes_csv or d.attributes):
        raise ConfigError("--attributes_csv and --attributes condition a template: add "
                          "--template=conditional")
    if m.template == "none":
        return
    if conditional and d.dataset == "synthetic":
        raise ConfigError("--template=conditional: synthetic subjects have no attributes; "
                          "give a dataset of files with --attributes_csv")
    for flag, on in (("bidir", m.bidir), ("hyper", m.hyper), ("seg_weight", lo.seg_weight),
                     ("init_model", bool(config.train.init_model)),
                     ("aug_clean_targets", d.augmentation.clean_targets),
                     ("atlas", bool(d.atlas))):
        if on:
            raise ConfigError(f"--template={m.template} learns its own template from the "
                              f"training scans; --{flag} does not go with it")

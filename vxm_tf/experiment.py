"""Data, model and losses from a run's `Config` (`vxm_tf.configs`, where the flags are).

The builders take plain configs and know nothing of absl, so tests and every entry point
(train, evaluate, tune) call them directly and a flag means the same thing in each.
"""

import dataclasses

import keras
import numpy as np

from vxm_tf import (
    compat,
    configs,
    data,
    hypermorph,
    layers,
    losses,
    networks,
    templates,
    views,
)
from vxm_tf.configs import ConfigError


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
    check_held_out(config, dataset)
    subjects = data.split_subjects(dataset, config.train, config.test, config.val,
                                   config.train_list or None, config.test_list or None,
                                   config.val_list or None)
    target = config.target_shape or None
    budget = config.cache_mb * 2**20 if config.cache_mb else None
    splits = {split: data.load_volumes(subs, target, config.normalise, dataset.label_names,
                                       cache_bytes=budget)
              if subs else None for split, subs in subjects.items()}
    if config.atlas:
        splits = {split: data.append_atlas(volumes, config.atlas, config.normalise)
                  if volumes is not None else None for split, volumes in splits.items()}
    return splits


def check_held_out(config, dataset):
    """A cache of renders (tools/synth_from_labels.py) lists its training maps' renders
    first, then the held-out maps': with validation subjects, `ConfigError` unless training
    takes only the first and validation only the second, else validation Dice would score
    renders of training maps (or of maps training saw) and the run would not say so."""
    settings = dataset.settings
    first = settings.get("train_subjects")
    if (first is None or not config.val or config.train_list or config.val_list
            or config.test_list):
        return
    start = config.train + config.test  # where validation begins (train, test, val order)
    if config.train > first or start < first:
        raise ConfigError(
            f"--train={config.train} --test={config.test} --val={config.val}: "
            f"{config.data_dir} holds {first} renders of training maps, then "
            f"{settings.get('val_subjects', '?')} of held-out maps; training must take at "
            f"most the first {first} and validation only the rest (e.g. --train={first} "
            f"--test=0 --val={settings.get('val_subjects', 0)})")


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


# fewest voxels per axis of the grid the velocity is predicted or integrated on: a coarser
# field can hardly do more than translate
MIN_FIELD_GRID = 8


def check_resolutions(model_config, inshape):
    """`ConfigError` naming the flag when `--svf_resolution` or `--int_resolution` does not
    divide the image shape (the field could not be brought back to it: a graph error deep
    in TensorFlow) or leaves fewer than `MIN_FIELD_GRID` voxels along an axis."""
    for flag, factor in (("svf_resolution", model_config.svf_resolution),
                         ("int_resolution", model_config.int_resolution)):
        if factor == 1:
            continue
        shape = "x".join(map(str, inshape))
        if any(n % factor for n in inshape):
            raise ConfigError(f"--{flag}={factor} does not divide the image shape {shape}; "
                              "choose a factor of every axis (or --target_shape)")
        if min(inshape) // factor < MIN_FIELD_GRID:
            raise ConfigError(f"--{flag}={factor} leaves a "
                              f"{'x'.join(str(n // factor) for n in inshape)} field on "
                              f"{shape} images, fewer than {MIN_FIELD_GRID} voxels an axis: "
                              f"use at most {max(min(inshape) // MIN_FIELD_GRID, 1)}")


def build_model(model_config, inshape, attributes=0):
    """An uncompiled `VxmDense` for images of spatial shape `inshape` (a HyperMorph or
    template model when configured; `attributes`: how many condition a template);
    `ConfigError` for field resolutions that do not suit it (`check_resolutions`)."""
    check_resolutions(model_config, inshape)
    m = model_config
    architecture = dict(
        nb_unet_features=m.nb_features, nb_unet_levels=m.nb_levels,
        unet_feat_mult=m.feat_mult, nb_unet_conv_per_level=m.conv_per_level,
        int_steps=m.int_steps, int_resolution=m.int_resolution,
        svf_resolution=m.svf_resolution, bidir=m.bidir)
    if m.hyper:
        return hypermorph.HyperVxmDense(inshape, nb_hyp_layers=m.hyper_layers,
                                        nb_hyp_units=m.hyper_units, **architecture)
    if m.template != "none":  # bidirectional inside, as the original's
        architecture.pop("bidir")
        if m.template == "conditional":  # the decoder of the original's train script
            return templates.ConditionalTemplateCreation(
                inshape, pheno_input_shape=(attributes,), conv_nb_features=4,
                conv_nb_levels=0, extra_conv_layers=3, **architecture)
        return templates.TemplateCreation(inshape, **architecture)
    return networks.VxmDense(inshape, **architecture)


def build_losses(loss_config, model_config, labels=()):
    """Losses and weights as the original's train script: `[sim, (sim,) Grad]`, plus
    `Dice(labels)` weighted `seg_weight` when semi-supervised. HyperMorph's terms weigh 1
    here: the pairs' sample weights `(1 - h, h)` weigh them (`PairSource`). Templates:
    the terms of `vxm_tf.templates`' outputs, weighted as the original's scripts.

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
    if model_config.template == "unconditional":  # as the original's train_template.py
        return ([similarity, None, losses.MSE(), grad],
                [1.0, 0.0, lo.template_mean_weight, lo.reg_weight])
    if model_config.template == "conditional":  # train_cond_template.py
        return ([similarity, losses.MSE(), grad, losses.MSE()],
                [1.0, lo.template_mean_weight, lo.reg_weight, lo.template_deform_weight])
    if model_config.hyper:  # weighted (1 - h, h) per pair by the data (PairSource)
        return [similarity, grad], [1.0, 1.0]
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
        return views.clean_target_model(model)
    if config.loss.seg_weight:
        try:
            return views.seg_training_model(model, labels, config.loss.seg_resolution)
        except ValueError as err:
            raise ConfigError(f"--seg_resolution: {err}") from None
    return model


def with_remat(build, remat):
    """`build()`'s model; with `remat`, built again with its integration layers
    rematerialised (`keras.RematScope`: their intermediates recomputed in the backward
    pass, not kept) and the first build's weights. The layers are named after the model,
    hence the first build."""
    model = build()
    names = [layer.name for layer in model.layers if isinstance(layer, layers.VecInt)]
    if not remat or not names:
        return model
    with keras.RematScope(mode="list_of_layers", layer_names=names):
        rematerialised = build()
    rematerialised.set_weights(model.get_weights())
    return rematerialised


def trainable(model):
    """`model` as training takes it: a HyperMorph model fixed at one weight (the choice of
    vxm-choose-lambda) with its weight as an input again."""
    if isinstance(model, hypermorph.HyperVxmDense) and model.hyper_lambda is not None:
        return model.at_lambda(None)
    return model


def initial_model(config, inshape):
    """The model training starts from: built from the model flags, or loaded from
    `--init_model` (which must take images of `inshape`), rematerialised with --remat."""
    if not config.train.init_model:
        attributes = len([c for c in config.data.attributes.split(",") if c.strip()])
        return with_remat(lambda: build_model(config.model, inshape, attributes),
                          config.train.remat)
    try:
        model = with_remat(lambda: trainable(networks.VxmDense.load(config.train.init_model)),
                           config.train.remat)
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


def build_for_fit(model, dataset):
    """Create a compiled model's optimiser slots and loss trackers from `dataset`'s batch
    structure before `fit` traces its step. Keras's TensorFlow trainer leaves that to the
    first trace when no `tf.distribute` strategy is set, and TensorFlow traces a function
    that creates variables twice: this saves one trace of the step per run and per tuning
    trial. Under a strategy, and on other backends, Keras builds first itself."""
    if keras.backend.backend() != "tensorflow" or not hasattr(dataset, "element_spec"):
        return
    if compat.distribute_strategy(model) is not None:
        return
    compat.symbolic_build(model, dataset.element_spec)


def model_config_of(model):
    """The `ModelConfig` whose flags build `model`'s architecture (a `VxmDense`)."""
    c = model.get_config()
    hyper = {}
    if isinstance(model, hypermorph.HyperVxmDense):
        hyper = dict(hyper=True, hyper_layers=c["nb_hyp_layers"], hyper_units=c["nb_hyp_units"])
    return configs.ModelConfig(
        nb_features=c["nb_unet_features"], nb_levels=c["nb_unet_levels"],
        feat_mult=c["unet_feat_mult"], conv_per_level=c["nb_unet_conv_per_level"],
        int_steps=c["int_steps"], int_resolution=c["int_resolution"],
        svf_resolution=c["svf_resolution"], bidir=c["bidir"], **hyper)


def adopt_architecture(config, model, log=print):
    """`config` with its model section describing `model`, the `--init_model` (or its
    checkpoint) training continues: the losses (Grad's multiplier is the model's
    int_resolution, bidirectional terms) and config.json follow the model, not the model
    flags. Model flags set to something else are named in one line through `log`."""
    architecture = model_config_of(model)
    defaults = configs.ModelConfig()
    ignored = [f"--{'enc/--dec' if key == 'nb_features' else key}={value}"
               for key, value in vars(config.model).items()
               if value != getattr(defaults, key) and value != getattr(architecture, key)]
    if ignored:
        log(f"--init_model={config.train.init_model}: training keeps that model's "
            f"architecture; ignoring {' '.join(ignored)}")
    config = dataclasses.replace(config, model=architecture)
    configs.check_hyper(config)
    return config


def compile_model(model, config, total_steps, labels=()):
    """Compile `model` with the configured losses, weights and Adam."""
    loss_list, weights = build_losses(config.loss, config.model, labels)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(config.train, total_steps)),
                  loss=loss_list, loss_weights=weights,
                  steps_per_execution=config.train.steps_per_execution)
    return model

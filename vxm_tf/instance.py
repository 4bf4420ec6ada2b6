"""Test-time instance optimisation: refine a network's deformation pair by pair.

Starting from what `VxmDense` predicts for a batch of pairs (its velocity field, or its
displacement when it does not integrate, before the final resize), a few Adam steps
minimise an objective of the kind it was trained on, similarity of the moved and fixed
images plus the Grad smoothness of the correction made to the network's field, for these
pairs alone (ConvexAdam, uniGradICON and the Learn2Reg leaders do this). The field is
optimised at the network's integration resolution, against images resampled to that grid,
so one step costs a fraction of a network call; the result is brought to full resolution
exactly as the network does it. By default the velocity is corrected and integrated at
every step (scaling and squaring, unrolled): several times the cost of correcting the
integrated displacement, which remains an option (`space`), but the deformation stays
diffeomorphic, so the smoothness weight can be low (reports/instance_sweep_oasis2d.md).

Everything is a small Keras model trained with `train_on_batch` (keras.ops only), so it
runs on every backend and device; the compiled step is kept per model and batch shape.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from vxm_tf import files, losses
from vxm_tf import ops as vxm_ops

SIMILARITIES = ("ncc", "mse")
SPACES = ("displacement", "velocity")


@dataclass(frozen=True)
class InstanceConfig:
    """`steps` Adam steps of rate `lr` (voxels of the field's grid) per batch of pairs on
    `similarity` (NCC with a 9-voxel window, or MSE) + `reg_weight` x Grad (l2) of the
    correction to the network's field; 0 steps keeps the network's prediction exactly.
    The correction is smoothed twice by a running mean of `smoothing` voxels (1: not
    smoothed). `space`: what is corrected, the network's velocity (its deformation stays
    the exponential of a smooth field, so it rarely folds; models without integration
    fall back to their displacement) or its integrated displacement. `resolution` r > 1
    optimises a correction on a grid r times coarser than the network's field (the field
    and the images resampled to it, the correction brought back to the field's grid
    before the final integration): r^D times cheaper per step and smoother; `window` is
    NCC's window in voxels of that grid."""
    # space, lr, reg_weight and smoothing: chosen on the 2D validation subjects (highest
    # Dice with folding under 0.1%, 50 steps; make tune-instance,
    # reports/instance_sweep_oasis2d.md)
    steps: int = 0
    lr: float = 0.3
    similarity: str = "ncc"
    reg_weight: float = 0.25
    smoothing: int = 3
    space: str = "velocity"
    window: int = 9
    resolution: int = 1

    def __post_init__(self):
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"--instance_steps must be a non-negative integer, got "
                             f"{self.steps}")
        if not self.lr > 0:
            raise ValueError(f"--instance_lr must be positive, got {self.lr}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"--instance_similarity must be one of {SIMILARITIES}, got "
                             f"{self.similarity!r}")
        if not self.reg_weight >= 0:
            raise ValueError(f"--instance_lambda must be non-negative, got {self.reg_weight}")
        if self.space not in SPACES:
            raise ValueError(f"--instance_space must be one of {SPACES}, got {self.space!r}")
        if int(self.smoothing) != self.smoothing or self.smoothing < 1:
            raise ValueError(f"--instance_smoothing must be a positive integer, got "
                             f"{self.smoothing}")
        if int(self.window) != self.window or self.window < 1:
            raise ValueError(f"--instance_window must be a positive integer, got "
                             f"{self.window}")
        if int(self.resolution) != self.resolution or self.resolution < 1:
            raise ValueError(f"--instance_resolution must be a positive integer, got "
                             f"{self.resolution}")

    def describe(self):
        """The settings in words, for reports."""
        grid = (f" on a grid {self.resolution} times coarser than the network's field"
                if self.resolution > 1 else "")
        window = (f" (window {self.window})"
                  if self.similarity == "ncc" and self.window != InstanceConfig.window else "")
        return (f"{self.similarity}{window} + {self.reg_weight:g} x Grad of the correction "
                f"to the network's {self.space}{grid} (smoothed by a running mean of "
                f"{self.smoothing} voxels, twice), Adam lr {self.lr:g}")


SETTINGS = ("lr", "similarity", "reg_weight", "smoothing", "space")
# settings added later: a file written before them means their defaults
LATER_SETTINGS = ("window", "resolution")


def save_settings(path, config, **extra):
    """Write `config`'s settings (all but the step count) as JSON, with `extra` fields (what
    chose them): what `load_settings` reads back for a model of its own."""
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if k in SETTINGS + LATER_SETTINGS}
    files.write_text(path, json.dumps({**fields, **extra}, indent=1) + "\n")


def load_settings(path, steps, model=None):
    """`InstanceConfig` of `steps` steps with the settings in `path` (`save_settings`'s JSON,
    e.g. chosen for one model on its validation pairs by tools/tune_instance.py). With
    `model` (a path), settings recorded as chosen for another model are refused."""
    try:
        saved = json.loads(Path(path).read_text())
    except OSError as err:
        raise ValueError(f"{path}: cannot read instance settings ({err.strerror})") from None
    except ValueError:
        raise ValueError(f"{path}: not a JSON file of instance settings") from None
    missing = [k for k in SETTINGS if not isinstance(saved, dict) or k not in saved]
    if missing:
        raise ValueError(f"{path}: instance settings lack {', '.join(missing)}")
    chosen_for = saved.get("model")
    if model and chosen_for and Path(chosen_for).resolve() != Path(model).resolve():
        raise ValueError(f"{path}: instance settings chosen for {chosen_for}, not {model}")
    try:
        return InstanceConfig(steps, **{k: saved[k] for k in SETTINGS + LATER_SETTINGS
                                        if k in saved})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


def define_flags():
    """The instance-optimisation flags of `register` and `evaluate` (idempotent)."""
    from absl import flags
    if "instance_steps" in flags.FLAGS:
        return
    c = InstanceConfig()
    flags.DEFINE_integer("instance_steps", c.steps, "test-time instance optimisation: Adam "
                         "steps per pair from the network's field (0: the network alone)")
    flags.DEFINE_float("instance_lr", c.lr, "instance optimisation: Adam learning rate "
                       "(voxels of the integration grid)")
    flags.DEFINE_enum("instance_similarity", c.similarity, SIMILARITIES,
                      "instance optimisation: image similarity")
    flags.DEFINE_float("instance_lambda", c.reg_weight, "instance optimisation: weight of "
                       "the Grad (l2) smoothness of the correction to the network's field")
    flags.DEFINE_integer("instance_smoothing", c.smoothing, "instance optimisation: width "
                         "(voxels) of the running mean applied twice to the correction of "
                         "the network's field (1: none)")
    flags.DEFINE_enum("instance_space", c.space, SPACES, "instance optimisation: correct "
                      "the network's velocity (then integrated: diffeomorphic) or its "
                      "integrated displacement")
    flags.DEFINE_integer("instance_window", c.window, "instance optimisation: NCC window "
                         "(voxels of the optimisation grid)")
    flags.DEFINE_integer("instance_resolution", c.resolution, "instance optimisation: "
                         "optimise on a grid this many times coarser than the network's "
                         "field (1: the field's own grid)")


def config_from_flags(fl):
    return InstanceConfig(fl.instance_steps, fl.instance_lr, fl.instance_similarity,
                          fl.instance_lambda, fl.instance_smoothing, fl.instance_space,
                          fl.instance_window, fl.instance_resolution)


def _tensorflow_xla():
    """Whether the optimisation step is compiled by TensorFlow's XLA: Keras's "auto" leaves
    XLA off without a GPU, yet it fuses each step's warp, NCC and smoothing (about twice as
    fast per step on a 2-core CPU); JAX compiles with XLA anyway."""
    return keras.backend.backend() == "tensorflow"


class _Displacement(keras.layers.Layer):
    """A batch of fields: the network's (fixed) plus a smooth correction, the trainable
    weight passed twice through a running mean of `smoothing` voxels per axis (as
    ConvexAdam smooths its field), so that Adam's per-voxel steps move neighbours together.
    With `int_steps`, the field is a velocity, integrated by scaling and squaring.
    Warps the moving images; also returns the smoothed correction, which the smoothness
    loss regularises (the network's own field is kept as it is)."""

    def __init__(self, shape, smoothing=1, int_steps=0, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.smoothing = smoothing
        self.int_steps = int_steps
        self.initial = self.add_weight(shape=shape, initializer="zeros", name="initial",
                                       trainable=False)
        self.correction = self.add_weight(shape=shape, initializer="zeros", name="correction")

    def call(self, moving):
        smooth = ops.convert_to_tensor(self.correction)
        if self.smoothing > 1:
            window = [self.smoothing] * (len(self.correction.shape) - 2)
            for _ in range(2):
                smooth = ops.concatenate([losses.box_sum(smooth[..., d:d + 1], window)
                                          for d in range(smooth.shape[-1])], axis=-1)
            smooth = smooth / float(np.prod(window)) ** 2
        field = self.initial + smooth
        if self.int_steps:  # a velocity: the deformation is its exponential
            field = vxm_ops.integrate_svf(field, self.int_steps, unroll=_tensorflow_xla())
        return vxm_ops.transform(moving, field), smooth

    def reset(self, field):
        self.initial.assign(field)
        self.correction.assign(np.zeros(self.correction.shape, "float32"))


def _downsample(images, shape):
    """`images` (B, *spatial, C) onto a grid of `shape` with the network's corner-aligned
    sampling, after a box pre-filter of the zoom's width (no aliasing)."""
    factor = images.shape[1] / shape[0]
    if tuple(images.shape[1:-1]) == tuple(shape):
        return ops.convert_to_tensor(images, "float32")
    width = max(int(round(factor)), 1)
    if width > 1:
        ndims = len(shape)
        kernel = np.ones((width,) * ndims + (1, 1), "float32") / width ** ndims
        channels = [ops.conv(images[..., c:c + 1], kernel, padding="same")
                    for c in range(images.shape[-1])]
        images = ops.concatenate(channels, axis=-1)
    return vxm_ops.resize(images, None, shape=shape)


def _optimiser(model, field_shape, config, int_steps):
    """The compiled per-shape optimisation model, cached on `model`."""
    cache = model.__dict__.setdefault("_instance_optimisers", {})
    key = (tuple(field_shape), config.similarity, config.window, config.reg_weight,
           config.lr, config.smoothing, int_steps)
    if key not in cache:
        similarity = (losses.NCC(win=config.window) if config.similarity == "ncc"
                      else losses.MSE())
        inputs = keras.Input(batch_size=field_shape[0],
                             shape=(*field_shape[1:-1], model.inputs[0].shape[-1]))
        displacement = _Displacement(field_shape, config.smoothing, int_steps,
                                     name="displacement")
        moved, field = displacement(inputs)
        optimiser = keras.Model(inputs, [moved, field])
        # Keras averages the losses over the batch: weigh by its size, so that each pair's
        # field gets the gradient it would get alone
        batch = float(field_shape[0])
        optimiser.compile(optimizer=keras.optimizers.Adam(config.lr),
                          loss=[similarity, losses.Grad("l2")],
                          loss_weights=[batch, batch * config.reg_weight],
                          jit_compile=True if _tensorflow_xla() else "auto")
        cache[key] = (optimiser, displacement)
    return cache[key]


def optimise(model, moving, fixed, config):
    """Full-resolution displacements `(B, *inshape, D)` for `(moving, fixed)` batches
    `(B, *inshape, C)`, after `config.steps` Adam steps on each pair's field."""
    moving, fixed = model._check_pair(moving, fixed)
    if config.steps == 0:
        return model.register(moving, fixed)
    field = ops.convert_to_numpy(model.predict_on_batch([moving, fixed])[-1])
    velocity = config.space == "velocity" and model.int_steps
    if model.int_steps and not velocity:
        field = ops.convert_to_numpy(vxm_ops.integrate_svf(field, model.int_steps))
    start, fine = field, field.shape[1:-1]
    if config.resolution > 1:  # the field in voxels of a coarser grid
        coarse = tuple(max(n // config.resolution, 2) for n in fine)
        start = ops.convert_to_numpy(vxm_ops.resize(field, None, shape=coarse))
        start = start * (np.array(coarse, "float32") / fine)
    grid = start.shape[1:-1]
    optimiser, displacement = _optimiser(model, start.shape, config,
                                         model.int_steps if velocity else 0)
    displacement.reset(start)
    for variable in optimiser.optimizer.variables:  # a fresh Adam: zero moments and count
        if "learning_rate" not in variable.path:
            variable.assign(np.zeros(variable.shape, variable.dtype))
    small_moving, small_fixed = _downsample(moving, grid), _downsample(fixed, grid)
    zeros = np.zeros_like(start)
    for _ in range(config.steps):
        optimiser.train_on_batch(small_moving, [small_fixed, zeros])
    _, correction = displacement(small_moving)
    if config.resolution > 1:  # back on the network's field grid, in its voxels
        correction = vxm_ops.resize(correction * (np.array(fine, "float32") / grid),
                                    None, shape=fine)
    field = field + ops.convert_to_numpy(correction)
    if velocity:
        field = ops.convert_to_numpy(vxm_ops.integrate_svf(field, model.int_steps))
    return field_to_displacement(model, field)


def field_to_displacement(model, disp):
    """An integrated field `(B, *grid, D)` -> the full-resolution displacement, as the
    network's own layers do it (corner-aligned resize)."""
    if tuple(disp.shape[1:-1]) != tuple(model.inshape):
        disp = vxm_ops.rescale_dense_transform(disp, model.inshape[0] / disp.shape[1])
    return ops.convert_to_numpy(disp)

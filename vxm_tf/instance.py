"""Test-time instance optimisation: refine a network's deformation pair by pair.

Starting from what `VxmDense` predicts for a batch of pairs (its velocity field, or its
displacement when it does not integrate, before the final resize), a few Adam steps
minimise an objective of the kind it was trained on, similarity of the moved and fixed
images plus the Grad smoothness of the correction made to the network's field, for these
pairs alone (ConvexAdam, uniGradICON and the Learn2Reg leaders do this). The field is
optimised at the network's integration resolution, against images resampled to that grid,
so one step costs a fraction of a network call; the result is brought to full resolution
exactly as the network does it. By default (`space` "composition") the network's
deformation is kept and a small correction composed after it, x -> x + u(x) -> the network's
deformation, with u the exponential of a smooth velocity by a few squarings: the moving
image is warped by the network once, so a step costs one warp, the similarity and the
squarings of the small correction, and the deformation stays diffeomorphic; with
`gradient` "straight-through" the squarings run forward only (their Jacobian taken as the
identity), which makes a step cheaper. The options:
add the correction to the network's velocity and integrate their sum at every step
("velocity": each step back-propagates through all the network's squarings, a dearer
step) or to its integrated displacement
("displacement": cheapest, folds sooner); reports/instance_sweep_oasis2d.md.

Everything is a small Keras model trained with `train_on_batch` (keras.ops only), so it
runs on every backend and device; the compiled step is kept per model and batch shape.
The settings that do best differ between models (tools/tune_instance.py chooses them on a
model's validation subjects and writes them as JSON for `--instance_settings`).
"""

import warnings
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops
from numpy.typing import ArrayLike

from vxm_tf import compat, losses
from vxm_tf import ops as vxm_ops

# the settings, their files and flags (re-exported: `instance.InstanceConfig` and the rest)
from vxm_tf.instance_config import (  # noqa: F401
    COMPOSED_SQUARINGS,
    FLAG_NAMES,
    GRADIENTS,
    SIMILARITIES,
    SPACES,
    InstanceConfig,
    config_from_flags,
    define_flags,
    load_settings,
    save_settings,
)


def _tensorflow_xla():
    """Whether the optimisation step is compiled by TensorFlow's XLA: Keras's "auto" leaves
    XLA off without a GPU, yet it fuses each step's warp, NCC and smoothing (faster steps
    on a CPU too); JAX compiles with XLA anyway."""
    return keras.backend.backend() == "tensorflow"


class _Displacement(keras.layers.Layer):
    """A batch of fields: the network's (fixed) plus a correction, the trainable weight
    (kept smooth by `_SmoothedAdam`). With `int_steps`, the field is a velocity,
    integrated by scaling and squaring. Warps the moving images; also returns the
    correction, which the smoothness loss regularises (the network's own field is kept as
    it is)."""

    def __init__(self, shape, int_steps=0, straight_through=False, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.int_steps = int_steps
        self.straight_through = straight_through
        self.initial = self.add_weight(shape=shape, initializer="zeros", name="initial",
                                       trainable=False)
        self.correction = self.add_weight(shape=shape, initializer="zeros", name="correction")

    def call(self, moving):
        correction = ops.convert_to_tensor(self.correction)
        field = self.initial + correction
        if self.int_steps and self.straight_through:  # exp(v), differentiated as v
            field = field + ops.stop_gradient(
                vxm_ops.integrate_svf(field, self.int_steps) - field)
        elif self.int_steps:  # a velocity: the deformation is its exponential
            field = vxm_ops.integrate_svf(field, self.int_steps, unroll=_tensorflow_xla())
        return vxm_ops.transform(moving, field), correction

    def reset(self, field):
        self.initial.assign(field)
        self.correction.assign(np.zeros(self.correction.shape, "float32"))


class _SmoothedAdam(keras.optimizers.Adam):
    """Adam on a field u = S c kept smooth (ConvexAdam smooths its field so), where S is a
    running mean of `smoothing` voxels per axis applied twice, and Adam's per-voxel steps
    are taken on c, so that they move neighbours together: the gradient S^T g_u goes to
    Adam, and its step on c moves u by S times it. The same iterates as Adam on c through
    S in the model, but S stays out of the step's compiled graph, where XLA fused it into
    the warp's gathers and made a step slower."""

    def __init__(self, smoothing, **kwargs):
        super().__init__(name="smoothed_adam", **kwargs)
        self.smoothing = smoothing

    def _smooth(self, x, transpose=False):
        for _ in range(2 if self.smoothing > 1 else 0):
            x = _running_mean(x, self.smoothing, transpose)
        return x

    def update_step(self, gradient, variable, learning_rate):
        before = ops.copy(variable)  # a copy: a TensorFlow variable converts to itself
        super().update_step(self._smooth(gradient, transpose=True), variable, learning_rate)
        self.assign(variable, before + self._smooth(ops.convert_to_tensor(variable) - before))


def _running_mean(x, width, transpose=False):
    """Mean of `x` (B, *spatial, C) over `width` voxels along each axis, per channel (zero
    padding, as `losses.box_sum`; `transpose`: the transposed operator, which differs for
    an even width): shifted sums, which XLA fuses into a few passes over the field."""
    ndims = len(x.shape) - 2
    for axis in range(1, ndims + 1):
        n = x.shape[axis]
        pad = [[0, 0]] * (ndims + 2)
        pad[axis] = [width // 2, (width - 1) // 2] if transpose else [(width - 1) // 2,
                                                                      width // 2]
        padded = ops.pad(x, pad)
        index = [slice(None)] * (ndims + 2)
        total = 0.0
        for start in range(width):
            index[axis] = slice(start, start + n)
            total = total + padded[tuple(index)]
        x = total / float(width)
    return x


class _FixedSumsNCC(losses.NCC):
    """`losses.NCC` with the fixed images' window sums computed once per pair (`target`)
    rather than at every step: `y_true` is `target(fixed)`, the fixed images (C channels)
    and the window sums of I and I^2."""

    def target(self, fixed):
        fixed = ops.convert_to_tensor(fixed, "float32")
        win = self.window(len(fixed.shape) - 2)
        return ops.concatenate([fixed, losses.box_sum(fixed, win),
                                losses.box_sum(fixed * fixed, win)], axis=-1)

    def ncc(self, y_true, y_pred):
        win = self.window(len(y_pred.shape) - 2)
        fixed, i_sum, i2_sum = y_true[..., :-2], y_true[..., -2:-1], y_true[..., -1:]
        stacked = ops.concatenate([y_pred, y_pred * y_pred, fixed * y_pred], axis=0)
        j_sum, j2_sum, ij_sum = ops.split(losses.box_sum(stacked, win), 3, axis=0)
        return self.correlation(i_sum, j_sum, i2_sum, j2_sum, ij_sum,
                                float(np.prod(win) * y_pred.shape[-1]))


def _downsample(images, shape):
    """`images` (B, *spatial, C) onto a grid of `shape` with the network's corner-aligned
    sampling, after a box pre-filter of the zoom's width (no aliasing)."""
    factor = images.shape[1] / shape[0]
    if tuple(images.shape[1:-1]) == tuple(shape):
        return ops.convert_to_tensor(images, "float32")
    width = max(int(round(factor)), 1)
    if width > 1:  # the running mean pads as a 'same' convolution with a box kernel
        images = _running_mean(ops.convert_to_tensor(images, "float32"), width)
    return vxm_ops.resize(images, None, shape=shape)


def grid_window(window: int, image_shape: Sequence[int], grid_shape: Sequence[int]
                ) -> list[int]:
    """The NCC window of `window` image voxels on a grid of `grid_shape` over images of
    `image_shape`: per axis, the nearest odd number of grid voxels (halves rounded up; at
    least 3, below which NCC has no variance to correlate), so that it covers the same
    anatomy on any model's grid."""
    return [max(2 * int(np.floor((window * g / n - 1) / 2 + 0.5)) + 1, 3)
            for g, n in zip(grid_shape, image_shape)]


def _optimiser(model, field_shape, config, int_steps, window):
    """The compiled per-shape optimisation model, cached on `model` (`window`: NCC's, in
    voxels of the field's grid)."""
    cache = compat.untracked_cache(model, "_instance_optimisers", dict)
    # the correction lives on the optimisation grid, in its voxels: a rate of `lr` voxels
    # of the network's field is lr / resolution of them
    rate = config.lr / config.resolution
    key = (tuple(field_shape), config.similarity, tuple(window), config.reg_weight,
           rate, config.smoothing, int_steps, config.gradient)
    if key not in cache:
        similarity = (_FixedSumsNCC(win=list(window)) if config.similarity == "ncc"
                      else losses.MSE())
        inputs = keras.Input(batch_size=field_shape[0],
                             shape=(*field_shape[1:-1], model.inputs[0].shape[-1]))
        displacement = _Displacement(field_shape, int_steps,
                                     config.gradient == "straight-through",
                                     name="displacement")
        moved, field = displacement(inputs)
        optimiser = keras.Model(inputs, [moved, field])
        # Keras averages the losses over the batch: weigh by its size, so that each pair's
        # field gets the gradient it would get alone
        batch = float(field_shape[0])
        optimiser.compile(optimizer=_SmoothedAdam(config.smoothing, learning_rate=rate),
                          loss=[similarity, losses.Grad("l2")],
                          loss_weights=[batch, batch * config.reg_weight],
                          jit_compile=True if _tensorflow_xla() else "auto")
        cache[key] = (optimiser, displacement, getattr(similarity, "target", lambda f: f),
                      similarity)
    return cache[key]


class _Function(keras.layers.Layer):
    """`fn` of keras.ops as a layer, for `_compiled`."""

    def __init__(self, fn, **kwargs):
        super().__init__(dtype="float32", **kwargs)
        self.fn = fn

    def call(self, inputs):
        return self.fn(*inputs)


def _compiled(model, key, fn, shapes):
    """`fn(*tensors)` (keras.ops on batches of the given shapes) as a model compiled once
    per `key` and cached on `model`, with XLA under TensorFlow too (the scaling and squaring
    fuses into a few passes). Call it with `.predict_on_batch`."""
    cache = compat.untracked_cache(model, "_instance_functions", dict)
    if key not in cache:
        inputs = [keras.Input(batch_size=shape[0], shape=shape[1:]) for shape in shapes]
        function = keras.Model(inputs, _Function(fn)(inputs))
        function.compile(jit_compile=True if _tensorflow_xla() else "auto")
        cache[key] = function
    return cache[key]


class InstanceWarning(UserWarning):
    """Instance optimisation kept the network's own field for some pairs."""


# fewest voxels per axis of the optimisation grid: coarser grids cannot follow the anatomy
# (--instance_resolution=16 on a 160x192 field: Dice 0.27 where the network gave 0.51)
MIN_GRID = 16


def check_for_model(config: InstanceConfig, model) -> None:
    """`ValueError` naming the flag when `--instance_window` is larger than `model`'s images
    or the optimisation grid of its field would have fewer than `MIN_GRID` voxels along an
    axis (`--instance_resolution`); call it before any work."""
    if config.steps == 0:
        return
    if config.window > max(model.inshape):  # a window past the image: no local similarity
        raise ValueError(f"--instance_window={config.window} is larger than this model's "
                         f"{'x'.join(map(str, model.inshape))} images")
    if config.resolution == 1:
        return
    fine = tuple(model.get_field_model().outputs[0].shape[1:-1])
    grid = tuple(n // config.resolution for n in fine)
    if min(grid) < MIN_GRID:
        largest = max(min(fine) // MIN_GRID, 1)
        raise ValueError(f"--instance_resolution={config.resolution} leaves a grid of "
                         f"{'x'.join(map(str, grid))} voxels on this model's "
                         f"{'x'.join(map(str, fine))} field; at least {MIN_GRID} per axis "
                         f"are needed: use at most {largest}")


def optimise(model, moving: ArrayLike, fixed: ArrayLike, config: InstanceConfig
             ) -> np.ndarray:
    """Full-resolution displacements `(B, *inshape, D)` for `(moving, fixed)` batches
    `(B, *inshape, C)`, after `config.steps` Adam steps on each pair's field. A pair whose
    images match worse after the steps than with the network's field alone (a divergent
    rate) keeps the network's field, with an `InstanceWarning`."""
    moving, fixed = model.check_pair(moving, fixed)
    if config.steps == 0:
        return model.register(moving, fixed)
    check_for_model(config, model)
    field = ops.convert_to_numpy(model.get_field_model().predict_on_batch([moving, fixed]))
    fine, ndims = field.shape[1:-1], field.shape[-1]
    grid = (tuple(n // config.resolution for n in fine) if config.resolution > 1 else fine)
    scale = np.array(grid, "float32") / np.array(fine, "float32")
    composition = config.space == "composition"
    velocity = config.space == "velocity" and model.int_steps
    window = grid_window(config.window, moving.shape[1:-1], grid)
    optimiser, displacement, target, similarity = _optimiser(
        model, (len(field), *grid, ndims), config,
        COMPOSED_SQUARINGS if composition else model.int_steps if velocity else 0, window)
    # the images on the optimisation grid, and what the similarity needs of the fixed ones
    small_moving, small_fixed = _compiled(
        model, ("images", moving.shape, grid, config.similarity, tuple(window)),
        lambda m, f: (_downsample(m, grid), target(_downsample(f, grid))),
        [moving.shape, fixed.shape]).predict_on_batch([moving, fixed])

    def coarse(f):  # a field of the network's grid in voxels of the optimisation grid
        return vxm_ops.resize(f, None, shape=grid) * scale if config.resolution > 1 else f

    def integrated(f):  # the network's deformation from its field
        return vxm_ops.integrate_svf(f, model.int_steps) if model.int_steps else f

    def integrate(f):
        return _compiled(model, ("integrate", f.shape), integrated,
                         [f.shape]).predict_on_batch([f])

    if composition:  # the network's deformation, then the moving images warped by it
        field, small_moving = _compiled(
            model, ("begin", field.shape, small_moving.shape, config.resolution),
            lambda f, m: (integrated(f), vxm_ops.transform(m, coarse(integrated(f)))),
            [field.shape, small_moving.shape]).predict_on_batch([field, small_moving])
        start = np.zeros((len(field), *grid, ndims), "float32")
    else:
        if model.int_steps and not velocity:
            field = integrate(field)
        start = ops.convert_to_numpy(coarse(field))
    displacement.reset(start)
    for variable in optimiser.optimizer.variables:  # a fresh Adam: zero moments and count
        if "learning_rate" not in variable.path:
            variable.assign(np.zeros(variable.shape, variable.dtype))
    zeros = np.zeros_like(start)

    def dissimilarity():  # per pair, on the optimisation grid: lower is better
        moved = optimiser.predict_on_batch(small_moving)[0]
        return ops.convert_to_numpy(similarity.call(small_fixed, moved))
    before = dissimilarity()
    for _ in range(config.steps):
        optimiser.train_on_batch(small_moving, [small_fixed, zeros])
    correction = ops.convert_to_numpy(displacement.correction)
    # a pair whose images match worse than with the network's own field keeps that field
    worse = ~(dissimilarity() <= before)  # NaN counts as worse
    if worse.any():
        correction[worse] = 0
        warnings.warn(f"instance optimisation matched {int(worse.sum())} of {len(worse)} "
                      "pair(s) worse than the network alone (lower --instance_lr?); their "
                      "network fields are kept", InstanceWarning, stacklevel=2)

    def fine_grid(f):  # a field of the optimisation grid back on the network's grid
        return vxm_ops.resize(f / scale, None, shape=fine) if config.resolution > 1 else f

    if composition:  # x -> x + u(x) -> the network's deformation, then full resolution
        def compose(network, correction):
            u = fine_grid(vxm_ops.integrate_svf(correction, COMPOSED_SQUARINGS))
            return u + vxm_ops.transform(network, u)
        composed = _compiled(model, ("end", field.shape, correction.shape, config.resolution),
                             compose, [field.shape, correction.shape]).predict_on_batch(
                                 [field, correction])
        # a compiled function of its own: fused with the composition's gathers, XLA
        # recomputed them for every voxel of the resize
        return ops.convert_to_numpy(_compiled(
            model, ("full", composed.shape), lambda f: _full_resolution(model, f),
            [composed.shape]).predict_on_batch([composed]))
    field = field + ops.convert_to_numpy(fine_grid(correction))
    if velocity:
        field = integrate(field)
    return ops.convert_to_numpy(_full_resolution(model, field))


def _full_resolution(model, disp):
    """An integrated field `(B, *grid, D)` -> the full-resolution displacement, as the
    network's own layers do it (corner-aligned resize)."""
    if tuple(disp.shape[1:-1]) != tuple(model.inshape):
        disp = vxm_ops.rescale_dense_transform(disp, model.inshape[0] / disp.shape[1])
    return disp


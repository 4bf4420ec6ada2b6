"""HyperMorph (Hoopes et al., IPMI 2021): one `VxmDense` for every regularisation weight.

`HyperVxmDense` is voxelmorph 0.2's network of that name: a hypernetwork of
`nb_hyp_layers` dense ReLU layers maps the hyperparameter `h` in [0, 1] to the weights of
every U-Net convolution. Trained with the loss `(1 - h) x similarity + h x Grad`, `h`
drawn per pair (`vxm_tf.data.hyper_draws`), it registers at any `h` chosen afterwards.
Its weight is the original's, not vxm_tf's `--lambda`: `(1 - h) sim + h Grad` has the minimum of
`sim + lambda Grad` at `lambda = h / (1 - h)` (`lambda_of_hyper`, `hyper_of_lambda`).

A model built with `hyper_lambda` set (`model.at_lambda(h)`) takes `[moving, fixed]` as
any `VxmDense` and registers at that `h`: registration, evaluation and instance
optimisation use it unchanged (tuning, a sweep of one weight, refuses HyperMorph).
Choosing the weight on validation subjects: `score_grid`, `choose`, and
`vxm_tf.lambda_choice` (`vxm-choose-lambda`).
"""

import keras
import numpy as np

from vxm_tf import hyperlayers, metrics, networks, registration


def hyper_of_lambda(reg_weight):
    """HyperMorph's `h` whose loss `(1 - h) sim + h Grad` is minimised where vxm_tf's
    `sim + reg_weight x Grad` is: `reg_weight / (1 + reg_weight)` (scalar or array)."""
    reg_weight = np.asarray(reg_weight, dtype=np.float64)
    return reg_weight / (1 + reg_weight)


def lambda_of_hyper(h):
    """vxm_tf's `--lambda` equivalent to HyperMorph's `h` in [0, 1): `h / (1 - h)`."""
    h = np.asarray(h, dtype=np.float64)
    return h / (1 - h)


def _check_values(hyper_lambda, nb_hyp_params, source):
    values = np.atleast_1d(np.asarray(hyper_lambda, dtype=np.float64)).ravel()
    if len(values) != nb_hyp_params:
        raise ValueError(f"{source}: the model takes {nb_hyp_params} hyperparameter(s), got "
                         f"{len(values)}")
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"{source}: HyperMorph's hyperparameter lies in [0, 1] (the weight "
                         f"of the smoothness loss, as trained), got {hyper_lambda}")
    return [float(v) for v in values]


@keras.saving.register_keras_serializable(package="vxm_tf")
class HyperVxmDense(networks.VxmDense):
    """HyperMorph's dense network: `VxmDense` whose U-Net a hypernetwork conditions on `h`.

    Inputs `[moving, fixed, h (B, nb_hyp_params)]`, outputs as `VxmDense`; with
    `hyper_lambda` set, inputs `[moving, fixed]` and `h` fixed at that value (the flow
    convolution is an ordinary one, as the original's). Layer and weight names are the
    original's, so voxelmorph 0.2's saved weights load (`HyperVxmDense.load(path.h5)`).

    Args:
        inshape: spatial shape, e.g. (160, 192).
        nb_hyp_params: hyperparameters (1: the smoothness weight).
        nb_hyp_layers: dense ReLU layers of the hypernetwork.
        nb_hyp_units: units of each; the last one's width times each convolution's kernel
            size is that convolution's weight count.
        hyper_lambda: None (`h` is an input), or the value(s) in [0, 1] this model registers
            at.
        **kwargs: `VxmDense`'s arguments.
    """

    def __init__(self, inshape, nb_hyp_params=1, nb_hyp_layers=6, nb_hyp_units=128,
                 hyper_lambda=None, name="hyper_vxm_dense", **kwargs):
        if hyper_lambda is not None:
            hyper_lambda = _check_values(hyper_lambda, nb_hyp_params, f"{name}: hyper_lambda")

        def hypernet(source):
            if hyper_lambda is None:
                extra = [keras.Input(shape=(nb_hyp_params,), name=f"{name}_hyp_input")]
                h = extra[0]
            else:
                extra = []
                h = hyperlayers.HyperParameter(hyper_lambda, name=f"{name}_hyp_value")(source)
            for n in range(nb_hyp_layers):
                h = keras.layers.Dense(nb_hyp_units, activation="relu",
                                       name=f"{name}_hyp_dense_{n + 1}")(h)
            return extra, h

        super().__init__(inshape, name=name, _hypernet=hypernet, **kwargs)
        self.nb_hyp_params, self.nb_hyp_layers = int(nb_hyp_params), int(nb_hyp_layers)
        self.nb_hyp_units = int(nb_hyp_units)
        self.hyper_lambda = None if hyper_lambda is None else tuple(hyper_lambda)

    def get_config(self):
        return {**super().get_config(), "nb_hyp_params": self.nb_hyp_params,
                "nb_hyp_layers": self.nb_hyp_layers, "nb_hyp_units": self.nb_hyp_units,
                "hyper_lambda": None if self.hyper_lambda is None else list(self.hyper_lambda)}

    def at_lambda(self, hyper_lambda):
        """A copy of this model (same weights, not shared) that takes `[moving, fixed]` and
        registers at `hyper_lambda` (in [0, 1]): a `VxmDense` for every other function.
        None: a copy that takes `h` as its third input again (to train further)."""
        if hyper_lambda is not None:
            _check_values(hyper_lambda, self.nb_hyp_params, "hyper_lambda")
        model = type(self).from_config({**self.get_config(), "hyper_lambda": hyper_lambda})
        model.set_weights(self.get_weights())
        return model

    def hypernet_features(self, hyper_lambda):
        """The hypernetwork's last features `(nb_hyp_units,)` at `hyper_lambda`: what
        every hyper-convolution's weights are made from."""
        x = np.asarray([_check_values(hyper_lambda, self.nb_hyp_params, "hyper_lambda")],
                       np.float32)
        for n in range(self.nb_hyp_layers):
            x = self.get_layer(f"{self.name}_hyp_dense_{n + 1}")(x)
        return keras.ops.convert_to_numpy(x)[0]

    def responds_to_lambda(self, tolerance=1e-6):
        """Whether the weight changes the network: False when the hypernetwork gives the
        same features at h = 0 and h = 1 (its ReLU units dead: the model then registers
        alike at every weight)."""
        ends = [self.hypernet_features([v] * self.nb_hyp_params) for v in (0.0, 1.0)]
        return bool(np.abs(ends[0] - ends[1]).max() > tolerance)

    def hyper_input(self, hyper_lambda, batch):
        """`(batch, nb_hyp_params)` float32 of `hyper_lambda`, the model's third input."""
        values = _check_values(hyper_lambda, self.nb_hyp_params, "hyper_lambda")
        return np.tile(np.asarray(values, np.float32), (batch, 1))

    def _registration_inputs(self, moving, fixed, hyper_lambda):
        moving, fixed = self.check_pair(moving, fixed)
        if self.hyper_lambda is not None:
            return [moving, fixed]
        if hyper_lambda is None:
            raise ValueError(f"{self.name} is a HyperMorph model: give hyper_lambda, the "
                             "smoothness weight in [0, 1] to register at")
        return [moving, fixed, self.hyper_input(hyper_lambda, len(moving))]

    def register(self, moving, fixed, hyper_lambda=None):
        """Displacement (voxels) taking `moving` onto `fixed` (`(B, *inshape, C)` each) at
        `hyper_lambda` (needed unless the model has its own; another value than the model's
        own registers with a copy at that value)."""
        if self.hyper_lambda is not None and hyper_lambda is not None and (
                _check_values(hyper_lambda, self.nb_hyp_params, "hyper_lambda")
                != list(self.hyper_lambda)):
            return self.at_lambda(hyper_lambda).register(moving, fixed)
        inputs = self._registration_inputs(moving, fixed, hyper_lambda)
        return keras.ops.convert_to_numpy(
            self.get_registration_model().predict_on_batch(inputs))

    def register_inverse(self, moving, fixed, hyper_lambda=None):
        """As `VxmDense.register_inverse`, at `hyper_lambda` (as `register`)."""
        if self.hyper_lambda is not None and hyper_lambda is None:
            return super().register_inverse(moving, fixed)
        if hyper_lambda is None:
            self._registration_inputs(moving, fixed, None)  # the error naming what is missing
        return self.at_lambda(hyper_lambda).register_inverse(moving, fixed)


class AtLambda:
    """`register(moving, fixed)` of a HyperMorph `model` at `hyper_lambda`, with the
    model's current weights (a `registrar` for validation while it trains)."""

    def __init__(self, model, hyper_lambda):
        if model.hyper_lambda is not None:  # one copy taking h, not one per call
            model = model.at_lambda(None)
        self.model, self.hyper_lambda, self.inshape = model, hyper_lambda, model.inshape

    def register(self, moving, fixed):
        return self.model.register(moving, fixed, hyper_lambda=self.hyper_lambda)


def at_lambda(model, hyper_lambda, source="--model"):
    """The model a command registers with: a HyperMorph `model` at `hyper_lambda` (or at
    its own value when None), any other `model` as it is. `ValueError` naming `source`
    when a HyperMorph model has no value to register at, or `hyper_lambda` is given for a
    model that has none to take."""
    if not isinstance(model, HyperVxmDense):
        if hyper_lambda is not None:
            raise ValueError(f"--hyper_lambda={hyper_lambda}: {source} is not a HyperMorph "
                             "model (it has one smoothness weight, trained in)")
        return model
    if hyper_lambda is None:
        if model.hyper_lambda is None:
            raise ValueError(f"{source} is a HyperMorph model: give --hyper_lambda (its "
                             "smoothness weight in [0, 1]), or choose one with vxm-choose-lambda")
        return model
    try:
        return model.at_lambda(hyper_lambda)
    except ValueError as err:
        raise ValueError(f"--hyper_lambda={hyper_lambda}: {err}") from None


def define_flags(flag_values=None):
    """Declare `--hyper_lambda`, the commands' choice of a HyperMorph model's weight
    (idempotent)."""
    from absl import flags

    flag_values = flags.FLAGS if flag_values is None else flag_values
    if "hyper_lambda" not in flag_values:
        flags.DEFINE_float("hyper_lambda", None, "HyperMorph models: the smoothness weight h "
                           "in [0, 1] to register at (default: the model's own, set by "
                           "vxm-choose-lambda)", flag_values=flag_values)


def load(model, hyper_lambda=None, source=None):
    """`VxmDense.load(model)` (a path or registered name; a loaded model passes through)
    made ready to register: a HyperMorph model at `hyper_lambda` (`at_lambda`)."""
    from vxm_tf import templates  # noqa: F401 - registered: a template model is named as one

    source = source or f"--model={model}"
    if isinstance(model, networks.VxmDense):
        return at_lambda(model, hyper_lambda, source)
    return at_lambda(networks.VxmDense.load(model), hyper_lambda, source)


DEAD_HYPERNET = ("its hypernetwork gives the same features at every weight (its ReLU "
                 "units died in training), so it registers alike at every h: retrain with "
                 "more --hyper_units or a lower --lr")


def score_grid(model, volumes, pairs, grid, batch_size=8):
    """Validation scores of a HyperMorph `model` at each `h` of `grid`: a list of
    `{'hyper_lambda', 'lambda', 'dice', 'folding_percent'}` (mean Dice over labels and
    `pairs` of `volumes`, which need segmentations; folding: % of voxels with a
    non-positive Jacobian determinant; `lambda`: vxm_tf's equivalent `--lambda`)."""
    if volumes.segs is None:
        raise ValueError("choosing a weight needs segmentations of the subjects")
    rows = []
    model = model.at_lambda(None) if model.hyper_lambda is not None else model
    for h in grid:
        registrar = AtLambda(model, h)
        dice, folding = [], []
        for (_, j), warp, moved in registration.register_pairs(registrar, volumes, pairs,
                                                               batch_size):
            dice.append(metrics.mean_dice(moved, volumes.segs[j], volumes.labels))
            folding.append(metrics.folding_percent(warp))
        rows.append({"hyper_lambda": float(h),
                     "lambda": float(lambda_of_hyper(h)) if h < 1 else float("inf"),
                     "dice": float(np.mean(dice)), "folding_percent": float(np.mean(folding))})
    return rows


def choose(rows, min_dice=None):
    """The row of `score_grid` to register with: the highest Dice (ties: the smoother,
    larger h); or, with `min_dice`, the least folding among rows of at least that Dice
    (ties: the higher Dice). `ValueError` when no row reaches `min_dice`."""
    if min_dice is None:
        return max(rows, key=lambda r: (r["dice"], r["hyper_lambda"]))
    eligible = [r for r in rows if r["dice"] >= min_dice]
    if not eligible:
        best = max(r["dice"] for r in rows)
        raise ValueError(f"--min_dice={min_dice}: no weight of the grid reaches it (best "
                         f"Dice {best:.4f})")
    return min(eligible, key=lambda r: (r["folding_percent"], -r["dice"]))

"""Instance optimisation's settings: `InstanceConfig`, its settings files and its flags.

`InstanceConfig` holds what `instance.optimise` does per pair (steps, rate, similarity,
smoothness weight, smoothing, space, window, grid, gradient); `save_settings` and
`load_settings` write and read the JSON that tools/tune_instance.py chooses for one model
(recording the model's weights, so that another model's settings are refused);
`define_flags` and `config_from_flags` are the `--instance_*` flags of `vxm-register` and
`vxm-evaluate`. Nothing here imports Keras or TensorFlow.
"""

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from vxm_tf import files
from vxm_tf.flagging import define_flags_of, flag_name, option, values_from_flags

SIMILARITIES = ("ncc", "mse")
SPACES = ("composition", "velocity", "displacement")
GRADIENTS = ("exact", "straight-through")
# squarings of the composed correction's velocity: fewer fold more, and each costs a warp
# per step
COMPOSED_SQUARINGS = 2


@dataclass(frozen=True)
class InstanceConfig:
    """`steps` Adam steps of rate `lr` (voxels of the network's field, whatever the
    optimisation grid: a step moves the anatomy as far at any `resolution`) per batch of
    pairs on
    `similarity` (NCC, or MSE) + `reg_weight` x Grad (l2) of the
    correction to the network's field; 0 steps keeps the network's prediction exactly.
    The correction is smoothed twice by a running mean of `smoothing` voxels (1: not
    smoothed). `space`: how the correction acts (the module's docstring): composed after
    the network's deformation, added to its velocity (models without integration fall
    back to their displacement) or added to its integrated displacement. `resolution`
    r > 1 optimises a correction on a grid r times coarser than the network's field (the
    field and the images resampled to it, the correction brought back to the field's
    grid): r^D times cheaper per step and smoother. `window` is NCC's window in voxels of
    the images, the same anatomy on every grid (`grid_window`). `gradient` (composition
    only): "exact" differentiates through the squarings of the correction's exponential;
    "straight-through" takes the exponential's Jacobian as the identity (exact at a zero
    correction, as diffeomorphic demons updates the velocity with the displacement's
    gradient): the step still warps by the exponential, so the deformation stays
    diffeomorphic, but skips the squarings' backward pass (their scatter-adds): a cheaper
    step, for slightly less progress per step."""
    # space, lr, reg_weight and smoothing: chosen on the 2D validation subjects (highest
    # Dice with folding under 0.1%; make tune-instance, reports/instance_sweep_oasis2d.md);
    # another model may want others (save_settings / load_settings, --instance_settings;
    # the authors' 3D model: make tune-instance-3d, reports/instance_sweep_synth3d.json)
    steps: int = option(0, "test-time instance optimisation: Adam steps per pair from the "
                        "network's field (0: the network alone)", flag="instance_steps")
    lr: float = option(1.0, "instance optimisation: Adam learning rate (voxels of the "
                       "network's field, at any --instance_resolution)", flag="instance_lr")
    similarity: str = option("ncc", "instance optimisation: image similarity",
                             flag="instance_similarity", choices=SIMILARITIES)
    reg_weight: float = option(0.25, "instance optimisation: weight of the Grad (l2) "
                               "smoothness of the correction to the network's field",
                               flag="instance_lambda")
    smoothing: int = option(3, "instance optimisation: width (voxels) of the running mean "
                            "applied twice to the correction of the network's field (1: "
                            "none)", flag="instance_smoothing")
    space: str = option("composition", "instance optimisation: compose a correction after "
                        "the network's deformation, or add it to its velocity (then "
                        "integrated) or to its integrated displacement", flag="instance_space",
                        choices=SPACES)
    window: int = option(9, "instance optimisation: NCC window in voxels of the images (the "
                         "nearest odd size on the optimisation grid)", flag="instance_window")
    resolution: int = option(1, "instance optimisation: optimise on a grid this many times "
                             "coarser than the network's field (1: the field's own grid; at "
                             "least 16 voxels an axis must remain)",
                             flag="instance_resolution")
    gradient: str = option("exact", "instance optimisation (composition): differentiate "
                           "through the correction's exponential, or take its Jacobian as "
                           "the identity (straight-through: a cheaper step)",
                           flag="instance_gradient", choices=GRADIENTS)

    def __post_init__(self):
        if int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"--instance_steps must be a non-negative integer, got "
                             f"{self.steps}")
        if not 0 < self.lr < float("inf"):
            raise ValueError(f"--instance_lr must be positive and finite, got {self.lr}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"--instance_similarity must be one of {SIMILARITIES}, got "
                             f"{self.similarity!r}")
        if not 0 <= self.reg_weight < float("inf"):
            raise ValueError(f"--instance_lambda must be non-negative and finite, got "
                             f"{self.reg_weight}")
        if self.space not in SPACES:
            raise ValueError(f"--instance_space must be one of {SPACES}, got {self.space!r}")
        if int(self.smoothing) != self.smoothing or self.smoothing < 1:
            raise ValueError(f"--instance_smoothing must be a positive integer, got "
                             f"{self.smoothing}")
        if int(self.window) != self.window or self.window < 3 or self.window % 2 == 0:
            # a 1-voxel window has no variance: NCC would be constant, nothing optimised
            raise ValueError(f"--instance_window must be odd and at least 3, got "
                             f"{self.window}")
        if int(self.resolution) != self.resolution or self.resolution < 1:
            raise ValueError(f"--instance_resolution must be a positive integer, got "
                             f"{self.resolution}")
        if self.gradient not in GRADIENTS:
            raise ValueError(f"--instance_gradient must be one of {GRADIENTS}, got "
                             f"{self.gradient!r}")
        if self.gradient != "exact" and self.space != "composition":
            raise ValueError(f"--instance_gradient={self.gradient} applies to "
                             f"--instance_space=composition, not {self.space}")

    def describe(self):
        """The settings in words, for reports."""
        grid = (f" on a grid {self.resolution} times coarser than the network's field"
                if self.resolution > 1 else "")
        window = (f" (window {self.window} image voxels)"
                  if self.similarity == "ncc" and self.window != InstanceConfig.window else "")
        gradient = (", differentiated as the identity (straight-through)"
                    if self.gradient == "straight-through" else "")
        target = (f"composed after the network's deformation (the exponential of a velocity "
                  f"by {COMPOSED_SQUARINGS} squarings{gradient})"
                  if self.space == "composition" else f"to the network's {self.space}")
        return (f"{self.similarity}{window} + {self.reg_weight:g} x Grad of a correction "
                f"{target}{grid} (smoothed by a running mean of {self.smoothing} voxels, "
                f"twice), Adam lr {self.lr:g}")


SETTINGS = ("lr", "similarity", "reg_weight", "smoothing", "space")
# settings added later: a file written before them means their defaults
LATER_SETTINGS = ("window", "resolution", "gradient")


def save_settings(path: str | os.PathLike, config: "InstanceConfig", **extra) -> None:
    """Write `config`'s settings (all but the step count) as JSON, with `extra` fields (what
    chose them): what `load_settings` reads back for a model of its own."""
    fields = {k: v for k, v in dataclasses.asdict(config).items()
              if k in SETTINGS + LATER_SETTINGS}
    if extra.get("model"):  # the weights it was chosen for, under whatever path or name
        extra["model_sha256"] = _model_file(extra["model"])
        extra["weights_sha256"] = _weights_id(extra["model"])
    files.write_text(path, json.dumps({**fields, **extra}, indent=1) + "\n")


def _model_file(value):
    """What identifies a model path or registered name: its file's sha256 (the same weights
    under another path or name), else the resolved path as a string."""
    from vxm_tf import models
    if models.is_name(value):
        return models.card(value).sha256
    try:
        path = Path(models.resolve(value)).resolve()
    except ValueError:
        return str(value)
    return models.sha256(path) if path.is_file() else str(path)


def _weights_id(value):
    """The sha256 of a model's weights (`networks.weights_sha256`): the same for an
    original `.h5` and its `.keras` conversion; None when the model cannot be loaded."""
    from vxm_tf import networks
    try:
        return networks.weights_sha256(networks.VxmDense.load(value))
    except (ValueError, OSError):
        return None


def _same_model(saved, chosen_id, model):
    """Whether `model` is the one settings `saved` were chosen for: the same file, else
    the same weights (another copy, a conversion)."""
    if _model_file(model) == chosen_id:
        return True
    given = _weights_id(model)
    recorded = saved.get("weights_sha256") or (
        _weights_id(saved["model"]) if saved.get("model") else None)
    return given is not None and given == recorded


def load_settings(path: str | os.PathLike, steps: int | None, model: str | None = None
                  ) -> "InstanceConfig":
    """`InstanceConfig` of `steps` steps with the settings in `path` (`save_settings`'s JSON,
    e.g. chosen for one model on its validation pairs by tools/tune_instance.py; `steps`
    None: the step count they were chosen with). With `model` (a path), settings recorded
    as chosen for another model are refused."""
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
    chosen_id = saved.get("model_sha256") or (_model_file(chosen_for) if chosen_for else None)
    if model and chosen_id and not _same_model(saved, chosen_id, model):
        raise ValueError(f"{path}: instance settings chosen for {chosen_for}, not {model}")
    if steps is None:
        steps = saved.get("chosen_with_steps")
        if steps is None:
            raise ValueError(f"{path}: no step count recorded (chosen_with_steps): give "
                             "--instance_steps")
    try:
        return InstanceConfig(steps, **{k: saved[k] for k in SETTINGS + LATER_SETTINGS
                                        if k in saved})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {err}") from None


# the flags of the settings (all but the step count), by InstanceConfig field
SETTING_FLAGS = {f.name: flag_name(f) for f in dataclasses.fields(InstanceConfig)
                 if f.name != "steps"}
# every instance-optimisation flag, for `--help`
FLAG_NAMES = ("instance_steps", "instance_settings", *SETTING_FLAGS.values())


def define_flags(flag_values=None):
    """The instance-optimisation flags of `register` and `evaluate` (idempotent): the
    fields of `InstanceConfig`, and `--instance_settings`."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    if "instance_steps" in fv:
        return
    define_flags_of(InstanceConfig, fv)
    flags.DEFINE_string("instance_settings", None, "instance optimisation: a JSON of "
                        "settings chosen for this model on validation subjects "
                        "(tools/tune_instance.py; reports/instance_sweep_synth3d.json for "
                        "the authors' 3D model), instead of the other --instance_* flags; "
                        "with the step count it was chosen with unless --instance_steps "
                        "is given", flag_values=fv)


def config_from_flags(fl) -> "InstanceConfig":
    """The `InstanceConfig` of the flags: `--instance_settings`'s file (chosen for
    `--model`; with the step count it was chosen with unless `--instance_steps` is given)
    or the individual flags, not both."""
    if fl.instance_settings:
        given = [f"--{name}" for name in SETTING_FLAGS.values() if fl[name].present]
        if given:
            raise ValueError(f"--instance_settings replaces {', '.join(given)}: give "
                             "one or the other")
        return load_settings(fl.instance_settings, fl.instance_steps
                             if fl["instance_steps"].present else None, fl.model)
    return values_from_flags(InstanceConfig, fl)

"""The voxelmorph 0.2 compatibility layer: its model files and weights in vxm_tf.

`read_original_config` reads the constructor arguments an original `VxmDense.save` stored
in an `.h5` (translated by `translate_original_config`: `int_downsize` -> `int_resolution`,
`unet_half_res` -> `svf_resolution=2`), `load_original_weights` copies weights by layer
name (`vxm_tf.networks.convert_original` writes an original model as a `.keras` file).
"""

import json

import h5py
import numpy as np

# options of the original VxmDense that vxm_tf leaves out, with the value it assumes
ORIGINAL_ONLY_OPTIONS = {"use_probs": False, "input_model": None, "hyp_model": None,
                         "fill_value": None, "reg_field": "preintegrated"}


def translate_original_config(config, source="the original config"):
    """voxelmorph 0.2 `VxmDense` arguments -> vxm_tf's: the deprecated `int_downsize` becomes
    `int_resolution` and `unet_half_res=True` becomes `svf_resolution=2`, as the original
    itself does; options vxm_tf leaves out must have their default (else `ValueError`)."""
    config = dict(config)
    config.pop("metadata", None)
    int_downsize = config.pop("int_downsize", None)
    if int_downsize is not None:
        config["int_resolution"] = int_downsize
    if config.pop("unet_half_res", False):
        if config.get("svf_resolution", 1) not in (1, 2):
            raise ValueError(f"{source}: unet_half_res=True contradicts svf_resolution="
                             f"{config['svf_resolution']}")
        config["svf_resolution"] = 2
    for key, default in ORIGINAL_ONLY_OPTIONS.items():
        value = config.pop(key, default)
        if value != default:
            raise ValueError(f"{source}: option {key}={value!r} of the original VxmDense is "
                             "not supported by vxm_tf")
    return config


def original_class_name(path):
    """The network class an `.h5` written by voxelmorph 0.2's `save` holds (VxmDense when
    it does not say, or holds weights only; `ValueError` for an unreadable file)."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 model file ({err})") from None
    try:
        return json.loads(raw if isinstance(raw, str) else raw.decode("utf-8")).get(
            "class_name", "VxmDense")
    except (ValueError, TypeError, AttributeError):
        return "VxmDense"


def read_original_config(path, class_name="VxmDense"):
    """Constructor arguments stored by voxelmorph 0.2's `model.save` in an `.h5` of a
    `class_name` network (VxmDense, HyperVxmDense)."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 model file ({err})") from None
    if raw is None:
        raise ValueError(f"{path}: no model_config attribute; this looks like weights only "
                         "(save_weights). Build VxmDense(...) with the original arguments "
                         "and call load_original_weights(model, path)")
    try:
        model_config = json.loads(raw if isinstance(raw, str) else raw.decode("utf-8"))
        config = model_config["config"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: model_config is not a saved {class_name} "
                         "configuration") from None
    if model_config.get("class_name", "VxmDense") != class_name:
        raise ValueError(f"{path}: holds a {model_config['class_name']}, not a {class_name}")
    return translate_original_config(config, path)


def load_original_weights(model, path, aliases=None):
    """Copy weights from an `.h5` written by voxelmorph 0.2 (`save_weights` or `save`).

    Layers are matched by name (`aliases`: {our layer name: the file's}); every weighted
    layer of `model` must be found with weights of the same shapes, else a `ValueError`
    names the layer.
    """
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 weights file ({err})") from None
    with f:
        group = f["model_weights"] if "model_weights" in f else f
        _load_layers(model, group, path, aliases or {})
    return model


def _load_layers(model, group, path, aliases):
    """Set the weights of `model`'s layers from `group`, by name; the layers of a nested
    model (e.g. the registration network of a template model) are found by their own
    names, as the original's flat files hold them."""
    import keras  # here: this module reads the files without Keras

    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.Model) and layer.name not in group:
            _load_layers(layer, group, path, aliases)
            continue
        name = aliases.get(layer.name, layer.name)
        if name not in group:
            raise ValueError(f"{path}: no weights for layer {layer.name!r}; was it saved "
                             "from a VxmDense with the same name and arguments?")
        layer_group = group[name]
        names = [n.decode() if isinstance(n, bytes) else n
                 for n in layer_group.attrs["weight_names"]]
        arrays = [np.asarray(layer_group[n]) for n in names]
        expected = [tuple(w.shape) for w in layer.weights]
        if [a.shape for a in arrays] != expected:
            raise ValueError(f"{path}: layer {layer.name!r} has weights of shapes "
                             f"{[a.shape for a in arrays]}, the model expects {expected}")
        layer.set_weights(arrays)


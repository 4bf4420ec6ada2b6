"""VoxelMorph networks: `VxmDense` and `Transform`, with the original Keras constructor
arguments (the U-Net: `vxm_tf.unet`, also importable from here as the original's).

Layer names match the original (`vxm_dense_unet_enc_conv_0_0`, `vxm_dense_flow`, ...) so
that weights written by voxelmorph 0.2 load by name (`vxm_tf.original.load_original_weights`).
"""

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
from numpy.typing import ArrayLike

from vxm_tf import compat, files, layers, original
from vxm_tf import ops as vxm_ops
from vxm_tf.original import load_original_weights  # noqa: F401 - the original API
from vxm_tf.unet import (  # noqa: F401 - networks.Unet etc., as the original's module
    DEFAULT_UNET_FEATURES,
    Unet,
    _check_inshape,
    _frozen,
    _listed,
    unet_features,
    unet_graph,
)


@keras.saving.register_keras_serializable(package="vxm_tf")
class VxmDense(keras.Model):
    """VoxelMorph dense registration network (Balakrishnan et al. 2019, Dalca et al. 2019).

    Inputs `[moving (B, *inshape, src_feats), fixed (B, *inshape, trg_feats)]`. Outputs
    `[moved, preint_flow]`, or `[moved, warped_fixed, preint_flow]` when `bidir`: the moved
    image and the velocity field at integration resolution (in voxels of that grid), which
    the Grad loss regularises, as the original's default `reg_field='preintegrated'`.

    Args:
        inshape: spatial shape, e.g. (160, 192) or (128, 128, 128).
        nb_unet_features: int or `[encoder, decoder]`; default
            `[[16, 32, 32, 32], [32, 32, 32, 32, 32, 16, 16]]`.
        nb_unet_levels, unet_feat_mult, nb_unet_conv_per_level: see `unet_features`.
        int_steps: scaling-and-squaring steps; 0 gives a plain (non-diffeomorphic) field.
        svf_resolution: voxel size of the predicted velocity relative to the image.
        int_resolution: voxel size at which the velocity is integrated.
        bidir: also warp the fixed image by the inverse field.
        src_feats, trg_feats: channels of the moving and fixed images.
        unet_half_res, int_downsize: the original's deprecated spellings of
            `svf_resolution=2` and `int_resolution`, accepted so that voxelmorph code and
            saved models read the same; the config stores the current names.
    """

    def __init__(self, inshape: Sequence[int], nb_unet_features: Sequence | None = None,
                 nb_unet_levels: int | None = None, unet_feat_mult: float = 1,
                 nb_unet_conv_per_level: int = 1, int_steps: int = 7,
                 svf_resolution: int = 1, int_resolution: int = 2, bidir: bool = False,
                 src_feats: int = 1, trg_feats: int = 1, name: str = "vxm_dense",
                 unet_half_res: bool = False, int_downsize: int | None = None,
                 _hypernet=None, **kwargs):
        if unet_half_res or int_downsize is not None:
            svf_resolution, int_resolution = (
                original.translate_original_config(
                    dict(svf_resolution=svf_resolution, int_resolution=int_resolution,
                         unet_half_res=unet_half_res, int_downsize=int_downsize),
                    f"VxmDense({name!r})")[k] for k in ("svf_resolution", "int_resolution"))
        # layers and functional graph
        encoder, decoder = unet_features(nb_unet_features, nb_unet_levels, unet_feat_mult,
                                         nb_unet_conv_per_level)
        inshape = _check_inshape(inshape, encoder, nb_unet_conv_per_level)
        ndims = len(inshape)
        source = keras.Input(shape=(*inshape, src_feats), name=f"{name}_source_input")
        target = keras.Input(shape=(*inshape, trg_feats), name=f"{name}_target_input")
        # HyperMorph (vxm_tf.hypermorph): more inputs, and features conditioning the U-Net
        extra_inputs, hyp_tensor = _hypernet(source) if _hypernet else ([], None)
        x = keras.layers.Concatenate(name=f"{name}_unet_input_concat")([source, target])
        nb_upsample_skips = int(np.floor(np.log(svf_resolution) / np.log(2)))
        x = unet_graph(x, encoder, decoder, nb_unet_conv_per_level, nb_upsample_skips,
                       f"{name}_unet", hyp_tensor=hyp_tensor)
        flow = getattr(keras.layers, f"Conv{ndims}D")(
            ndims, kernel_size=3, padding="same", dtype="float32", name=f"{name}_flow",
            kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=1e-5))(x)

        svf_size = tuple(int(np.round(n / svf_resolution)) for n in inshape)
        if tuple(flow.shape[1:-1]) != svf_size:
            flow = layers.RescaleTransform(svf_size[0] / flow.shape[1],
                                           name=f"{name}_svf_resize")(flow)
        resample = int_steps > 0 and int_resolution > 1
        if resample:
            int_size = tuple(int(np.round(n / int_resolution)) for n in inshape)
            if int_size != svf_size:
                flow = layers.RescaleTransform(int_size[0] / svf_size[0],
                                               name=f"{name}_flow_resize")(flow)
        preint_flow = flow
        fields = [("", flow)]
        if bidir:
            fields.append(("neg_", layers.Negate(name=f"{name}_neg_flow")(flow)))
        warped = []
        for prefix, field in fields:
            if int_steps > 0:
                field = layers.VecInt(method="ss", int_steps=int_steps,
                                      name=f"{name}_{prefix}flow_int")(field)
            if resample:
                field = layers.RescaleTransform(inshape[0] / int_size[0],
                                                name=f"{name}_{prefix}diffflow")(field)
            image = source if prefix == "" else target
            warped.append(layers.SpatialTransformer(
                interp_method="linear", indexing="ij",
                name=f"{name}_{prefix}transformer")([image, field]))
        super().__init__(inputs=[source, target, *extra_inputs],
                         outputs=[*warped, preint_flow], name=name, **kwargs)

        # the constructor's arguments, public, as Keras and keras-hub models keep them
        # (tuples: Keras would wrap lists in tracking containers)
        self.inshape = tuple(inshape)
        self.nb_unet_features = _frozen(nb_unet_features)
        self.nb_unet_levels, self.unet_feat_mult = nb_unet_levels, unet_feat_mult
        self.nb_unet_conv_per_level, self.int_steps = nb_unet_conv_per_level, int_steps
        self.svf_resolution, self.int_resolution = svf_resolution, int_resolution
        self.bidir, self.src_feats, self.trg_feats = bidir, src_feats, trg_feats

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "inshape": list(self.inshape),
                "nb_unet_features": _listed(self.nb_unet_features),
                "nb_unet_levels": self.nb_unet_levels, "unet_feat_mult": self.unet_feat_mult,
                "nb_unet_conv_per_level": self.nb_unet_conv_per_level,
                "int_steps": self.int_steps, "svf_resolution": self.svf_resolution,
                "int_resolution": self.int_resolution, "bidir": self.bidir,
                "src_feats": self.src_feats, "trg_feats": self.trg_feats}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def get_registration_model(self) -> keras.Model:
        """A model `[moving, fixed]` -> full-resolution displacement `(B, *inshape, D)`."""
        # the full-resolution field is the second input of the moving image's transformer
        return compat.untracked_cache(self, "_registration_model", lambda: keras.Model(
            self.inputs, self.get_layer(f"{self.name}_transformer").input[1]))

    def get_field_model(self) -> keras.Model:
        """A model `[moving, fixed]` -> the network's field before integration and resizing
        (its last output), without computing the rest."""
        return compat.untracked_cache(self, "_field_model",
                                      lambda: keras.Model(self.inputs, self.outputs[-1]))

    def register(self, moving: ArrayLike, fixed: ArrayLike) -> np.ndarray:
        """Displacement (voxels) taking `moving` onto `fixed`, both `(B, *inshape, C)`."""
        moving, fixed = self.check_pair(moving, fixed)
        return keras.ops.convert_to_numpy(
            self.get_registration_model().predict_on_batch([moving, fixed]))

    def register_inverse(self, moving: ArrayLike, fixed: ArrayLike) -> np.ndarray:
        """Displacement (voxels) taking `fixed` onto `moving`: the inverse of `register`'s,
        from the negated velocity integrated (diffeomorphic models only)."""
        moving, fixed = self.check_pair(moving, fixed)
        int_steps = self.int_steps
        if not int_steps:
            raise ValueError(f"{self.name} has int_steps=0 (no velocity field): it has no "
                             "inverse; train with --int_steps > 0")
        velocity = self.get_field_model().predict_on_batch([moving, fixed])
        inverse = vxm_ops.integrate_svf(-keras.ops.convert_to_tensor(velocity), int_steps)
        if tuple(inverse.shape[1:-1]) != tuple(self.inshape):
            inverse = vxm_ops.rescale_dense_transform(inverse,
                                                      self.inshape[0] / inverse.shape[1])
        return keras.ops.convert_to_numpy(inverse)

    def apply_transform(self, src: ArrayLike, trg: ArrayLike, img: ArrayLike,
                        interp_method: str = "linear") -> np.ndarray:
        """Register `src` to `trg` and warp `img` (B, *inshape, C) by that displacement."""
        warp = self.register(src, trg)
        return keras.ops.convert_to_numpy(vxm_ops.transform(img, warp, interp_method))

    def check_pair(self, moving: ArrayLike, fixed: ArrayLike
                   ) -> tuple[np.ndarray, np.ndarray]:
        """`(moving, fixed)` as float32 arrays `(B, *inshape, C)`; `ValueError` naming the
        shapes when they are not what the model takes."""
        moving = np.asarray(moving, dtype="float32")
        fixed = np.asarray(fixed, dtype="float32")
        expected = [tuple(t.shape[1:]) for t in self.inputs]
        if moving.shape[1:] != expected[0] or fixed.shape[1:] != expected[1]:
            raise ValueError(f"{self.name} takes moving (B, *{expected[0]}) and fixed "
                             f"(B, *{expected[1]}), got moving {moving.shape} and fixed "
                             f"{fixed.shape}")
        if moving.shape[0] != fixed.shape[0]:
            raise ValueError(f"moving and fixed batch sizes differ: {moving.shape} vs "
                             f"{fixed.shape}")
        return moving, fixed

    @classmethod
    def load(cls, path: str | os.PathLike) -> "VxmDense":
        """Load a `.keras` file, an `.h5` written by voxelmorph 0.2 (`save`), or a registered
        model by name (`vxm_tf.models`: e.g. `VxmDense.load("vxm-brain-t1-3d-mse")`)."""
        return load_network(cls, path)


@keras.saving.register_keras_serializable(package="vxm_tf")
class Transform(keras.Model):
    """A model that warps an image by a transform: `[image, transform]` -> moved image.

    image `(B, *inshape, nb_feats)`; transform a displacement `(B, *inshape, D)` in voxels
    (or on a grid `rescale` times coarser, resized and scaled first), or with `affine` a
    matrix `(B, D, D + 1)` of voxel coordinates centred on the grid (voxelmorph's
    convention). Returns `(B, *inshape, nb_feats)` (`interp_method` 'linear' or 'nearest';
    `fill_value` outside the image, None: the nearest edge voxel).
    """

    def __init__(self, inshape: Sequence[int], affine: bool = False,
                 interp_method: str = "linear", rescale: float | None = None,
                 fill_value: float | None = None, nb_feats: int = 1, **kwargs):
        inshape = tuple(int(n) for n in inshape)
        ndims = len(inshape)
        if affine and rescale is not None:
            raise ValueError("Transform: rescale applies to dense transforms, not affine ones")
        scan = keras.Input((*inshape, nb_feats), name="scan_input")
        if affine:
            transform = keras.Input((ndims, ndims + 1), name="trf_input")
            disp = layers.AffineToDense(inshape, name="trf_dense")(transform)
        else:
            grid = inshape if rescale is None else tuple(int(n / rescale) for n in inshape)
            transform = keras.Input((*grid, ndims), name="trf_input")
            disp = (transform if rescale is None
                    else layers.RescaleTransform(rescale, name="trf_rescale")(transform))
        moved = layers.SpatialTransformer(interp_method=interp_method, fill_value=fill_value,
                                          name="transformer")([scan, disp])
        super().__init__(inputs=[scan, transform], outputs=moved, **kwargs)
        self.inshape, self.affine, self.interp_method = inshape, bool(affine), interp_method
        self.rescale, self.fill_value, self.nb_feats = rescale, fill_value, int(nb_feats)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "inshape": list(self.inshape),
                "affine": self.affine, "interp_method": self.interp_method,
                "rescale": self.rescale, "fill_value": self.fill_value,
                "nb_feats": self.nb_feats}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# the networks of the original API that subclass or wrap VxmDense live in their own modules,
# which register their classes with Keras when imported
UNREGISTERED = ("HyperVxmDense and the template networks load once vxm_tf.hypermorph and "
                "vxm_tf.templates are imported")


def load_network(cls: type, path: str | os.PathLike) -> keras.Model:
    """A `cls` model (VxmDense, or another network of the original API) from a `.keras`
    file, an `.h5` written by voxelmorph 0.2's `save`, or a registered model's name;
    `ValueError` naming the file when it holds something else."""
    from vxm_tf import models
    path = str(models.resolve(path))
    if os.path.isdir(path):
        raise ValueError(f"{path}: a folder, not a model file (.keras or .h5)")
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such file")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: not a readable Keras model file (a .keras file is "
                             "a zip archive)")
        try:
            model = keras.saving.load_model(path, compile=False)
        except (OSError, KeyError, zipfile.BadZipFile) as err:
            raise ValueError(f"{path}: not a readable Keras model file ({err})") from None
        except TypeError as err:  # a class whose module is not imported
            raise ValueError(f"{path}: {str(err).splitlines()[0]} ({UNREGISTERED})") from None
        if not isinstance(model, cls):
            raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model
    found = original.original_class_name(path)
    if found != cls.__name__:  # a subclass's file (HyperVxmDense for VxmDense.load)
        registered = keras.saving.get_registered_object(f"vxm_tf>{found}")
        if isinstance(registered, type) and issubclass(registered, cls):
            return registered.load(path)
        if registered is None:
            raise ValueError(f"{path}: holds a {found}, not a {cls.__name__} "
                             f"({UNREGISTERED})")
    config = original.read_original_config(path, cls.__name__)
    model = cls(**config)
    load_original_weights(model, path)
    return model


def weights_sha256(model: keras.Model) -> str:
    """The sha256 of a model's weights (float32 bytes, in the model's weight order): the
    same model whatever file holds it (an original `.h5`, its `.keras` conversion)."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.weights:
        array = np.ascontiguousarray(keras.ops.convert_to_numpy(weight), dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_model(model: keras.Model, path: str | os.PathLike) -> None:
    """`model.save(path)` (a `.keras` file) through a temporary file: never half-written."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a Keras model file must end in .keras")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    with files.atomic_path(path) as tmp:
        model.save(tmp)


def convert_original(original_path: str | os.PathLike, out_path: str | os.PathLike
                     ) -> keras.Model:
    """Load a voxelmorph 0.2 `.h5` model file and save it as a `.keras` file; returns the
    model. The output must not be the input."""
    if Path(out_path).resolve() == Path(original_path).resolve():
        raise ValueError(f"{out_path}: the output would overwrite the original model")
    if not Path(original_path).is_file():
        raise ValueError(f"{original_path}: no such file")
    model = VxmDense.load(original_path)
    save_model(model, out_path)
    return model

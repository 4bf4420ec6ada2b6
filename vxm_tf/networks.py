"""VoxelMorph networks: `Unet` and `VxmDense`, with the original Keras constructor arguments.

Layer names match the original (`vxm_dense_unet_enc_conv_0_0`, `vxm_dense_flow`, ...) so
that weights written by voxelmorph 0.2 load by name (`vxm_tf.original.load_original_weights`).
"""

import os
import zipfile
from pathlib import Path

import keras
import numpy as np

from vxm_tf import compat, files, hyperlayers, layers, original
from vxm_tf import ops as vxm_ops
from vxm_tf.original import load_original_weights  # noqa: F401 - the original API

DEFAULT_UNET_FEATURES = ((16, 32, 32, 32), (32, 32, 32, 32, 32, 16, 16))


def unet_features(nb_features=None, nb_levels=None, feat_mult=1, nb_conv_per_level=1):
    """Resolve the original's `nb_features` forms to `(encoder, decoder)` feature lists.

    `None` gives the default VoxelMorph U-Net; an int needs `nb_levels` and grows by
    `feat_mult` per level; `[encoder, decoder]` is taken as given.
    """
    if nb_features is None:
        nb_features = DEFAULT_UNET_FEATURES
    if isinstance(nb_features, (int, np.integer)):
        if nb_levels is None:
            raise ValueError(f"nb_unet_levels is needed when nb_unet_features is an int "
                             f"({nb_features})")
        feats = np.round(nb_features * feat_mult ** np.arange(nb_levels)).astype(int)
        return ([int(f) for f in np.repeat(feats[:-1], nb_conv_per_level)],
                [int(f) for f in np.repeat(np.flip(feats), nb_conv_per_level)])
    if nb_levels is not None:
        raise ValueError(f"nb_unet_levels ({nb_levels}) only applies when nb_unet_features "
                         f"is an int, got {nb_features!r}")
    if len(nb_features) != 2:
        raise ValueError(f"nb_unet_features must be an int or [encoder, decoder] lists, "
                         f"got {nb_features!r}")
    encoder, decoder = nb_features
    if len(decoder) < len(encoder):
        raise ValueError(f"the decoder needs at least as many convolutions as the encoder, "
                         f"got encoder {list(encoder)} and decoder {list(decoder)}")
    return [int(f) for f in encoder], [int(f) for f in decoder]


def _conv_block(x, nb_feat, name, activate=True, hyp_tensor=None):
    ndims = len(x.shape) - 2
    if hyp_tensor is None:
        x = getattr(keras.layers, f"Conv{ndims}D")(
            nb_feat, kernel_size=3, padding="same", kernel_initializer="he_normal",
            name=name)(x)
    else:  # HyperMorph: the kernel made from the hypernetwork's features
        x = hyperlayers.HyperConvFromDense(ndims, nb_feat, 3, padding="same",
                                           name=name)([x, hyp_tensor])
    if activate:
        x = keras.layers.LeakyReLU(negative_slope=0.2, name=f"{name}_activation")(x)
    return x


def _pooling_dtype(ndims):
    """The pooling layers' dtype policy: the global one, except that TensorFlow has no
    float16 MaxPool3D kernel on CPUs, so under mixed_float16 there 3D pooling runs in
    float32 (the same maxima; the next convolution casts back)."""
    policy = keras.config.dtype_policy()
    if (ndims == 3 and policy.compute_dtype == "float16"
            and keras.backend.backend() == "tensorflow"):
        import tensorflow as tf

        if not tf.config.list_physical_devices("GPU"):
            return "float32"
    return None


def unet_graph(x, encoder, decoder, nb_conv_per_level=1, nb_upsample_skips=0, name="unet",
               hyp_tensor=None):
    """Apply the VoxelMorph U-Net to tensor `x` (B, *spatial, C); returns the last features.

    Max-pooling by 2 per level, LeakyReLU(0.2) after every convolution, skip connections
    concatenated after each upsampling; decoder convolutions beyond the encoder's count run
    at the output resolution (the original's "final convs"). With `hyp_tensor` (B, U), a
    hypernetwork's features, every convolution is a `HyperConvFromDense` (HyperMorph).
    """
    ndims = len(x.shape) - 2
    nb_levels = len(encoder) // nb_conv_per_level + 1
    skips = []
    for level in range(nb_levels - 1):
        for conv in range(nb_conv_per_level):
            x = _conv_block(x, encoder[level * nb_conv_per_level + conv],
                            f"{name}_enc_conv_{level}_{conv}", hyp_tensor=hyp_tensor)
        skips.append(x)
        x = getattr(keras.layers, f"MaxPooling{ndims}D")(
            2, name=f"{name}_enc_pooling_{level}", dtype=_pooling_dtype(ndims))(x)
    for level in range(nb_levels - 1):
        real_level = nb_levels - level - 2
        for conv in range(nb_conv_per_level):
            x = _conv_block(x, decoder[level * nb_conv_per_level + conv],
                            f"{name}_dec_conv_{real_level}_{conv}", hyp_tensor=hyp_tensor)
        if level < nb_levels - 1 - nb_upsample_skips:
            up_name = f"{name}_dec_upsample_{real_level}"
            x = getattr(keras.layers, f"UpSampling{ndims}D")(2, name=up_name)(x)
            x = keras.layers.Concatenate(name=f"{up_name}_concat")([x, skips.pop()])
    for num, nb_feat in enumerate(decoder[len(encoder):]):
        x = _conv_block(x, nb_feat, f"{name}_dec_final_conv_{num}", hyp_tensor=hyp_tensor)
    return x


def _check_inshape(inshape, encoder, nb_conv_per_level):
    inshape = tuple(int(n) for n in inshape)
    if len(inshape) not in (2, 3):
        raise ValueError(f"inshape must be 2D or 3D (spatial axes only), got {inshape}")
    if len(encoder) % nb_conv_per_level:
        raise ValueError(f"{len(encoder)} encoder convolutions do not split into "
                         f"{nb_conv_per_level} per level")
    factor = 2 ** (len(encoder) // nb_conv_per_level)
    if any(n % factor for n in inshape):
        raise ValueError(f"inshape {inshape} must be divisible by {factor} along every axis "
                         f"for a U-Net of {len(encoder) // nb_conv_per_level} poolings")
    return inshape


def _frozen(value):
    """Nested lists as tuples (kept as attributes without Keras' tracking wrappers)."""
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def _listed(value):
    """`_frozen`'s inverse, for a JSON config."""
    return [_listed(v) for v in value] if isinstance(value, tuple) else value


@keras.saving.register_keras_serializable(package="vxm_tf")
class Unet(keras.Model):
    """The VoxelMorph U-Net as a model of its own: `(B, *inshape[:-1], C)` -> features.

    Args:
        inshape: input shape including features, e.g. (160, 192, 2).
        nb_features, nb_levels, feat_mult, nb_conv_per_level: as `unet_features`.
        nb_upsample_skips: decoder upsamplings to leave out (output at lower resolution).
    """

    def __init__(self, inshape, nb_features=None, nb_levels=None, feat_mult=1,
                 nb_conv_per_level=1, nb_upsample_skips=0, name="unet", **kwargs):
        encoder, decoder = unet_features(nb_features, nb_levels, feat_mult, nb_conv_per_level)
        _check_inshape(inshape[:-1], encoder, nb_conv_per_level)
        inputs = keras.Input(shape=tuple(inshape), name=f"{name}_input")
        outputs = unet_graph(inputs, encoder, decoder, nb_conv_per_level, nb_upsample_skips,
                             name)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        # the constructor's arguments, public, as Keras and keras-hub models keep them
        self.inshape = tuple(inshape)
        self.nb_features = _frozen(nb_features)
        self.nb_levels, self.feat_mult = nb_levels, feat_mult
        self.nb_conv_per_level, self.nb_upsample_skips = nb_conv_per_level, nb_upsample_skips

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "inshape": list(self.inshape), "nb_features": _listed(self.nb_features),
                "nb_levels": self.nb_levels, "feat_mult": self.feat_mult,
                "nb_conv_per_level": self.nb_conv_per_level,
                "nb_upsample_skips": self.nb_upsample_skips}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


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

    def __init__(self, inshape, nb_unet_features=None, nb_unet_levels=None, unet_feat_mult=1,
                 nb_unet_conv_per_level=1, int_steps=7, svf_resolution=1, int_resolution=2,
                 bidir=False, src_feats=1, trg_feats=1, name="vxm_dense", unet_half_res=False,
                 int_downsize=None, _hypernet=None, **kwargs):
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

    def get_registration_model(self):
        """A model `[moving, fixed]` -> full-resolution displacement `(B, *inshape, D)`."""
        # the full-resolution field is the second input of the moving image's transformer
        return compat.untracked_cache(self, "_registration_model", lambda: keras.Model(
            self.inputs, self.get_layer(f"{self.name}_transformer").input[1]))

    def get_field_model(self):
        """A model `[moving, fixed]` -> the network's field before integration and resizing
        (its last output), without computing the rest."""
        return compat.untracked_cache(self, "_field_model",
                                      lambda: keras.Model(self.inputs, self.outputs[-1]))

    def register(self, moving, fixed):
        """Displacement (voxels) taking `moving` onto `fixed`, both `(B, *inshape, C)`."""
        moving, fixed = self.check_pair(moving, fixed)
        return keras.ops.convert_to_numpy(
            self.get_registration_model().predict_on_batch([moving, fixed]))

    def register_inverse(self, moving, fixed):
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

    def apply_transform(self, src, trg, img, interp_method="linear"):
        """Register `src` to `trg` and warp `img` (B, *inshape, C) by that displacement."""
        warp = self.register(src, trg)
        return keras.ops.convert_to_numpy(vxm_ops.transform(img, warp, interp_method))

    def check_pair(self, moving, fixed):
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
    def load(cls, path):
        """Load a `.keras` file, an `.h5` written by voxelmorph 0.2 (`save`), or a registered
        model by name (`vxm_tf.models`: e.g. `VxmDense.load("vxm-brain-t1-3d-mse")`)."""
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
            if not isinstance(model, cls):
                raise ValueError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
            return model
        config = original.read_original_config(path, cls.__name__)
        model = cls(**config)
        load_original_weights(model, path)
        return model


def save_model(model, path):
    """`model.save(path)` (a `.keras` file) through a temporary file: never half-written."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"{path}: a Keras model file must end in .keras")
    if not path.parent.is_dir():
        raise ValueError(f"{path}: folder {path.parent} does not exist")
    with files.atomic_path(path) as tmp:
        model.save(tmp)


def convert_original(original_path, out_path):
    """Load a voxelmorph 0.2 `.h5` model file and save it as a `.keras` file; returns the
    model. The output must not be the input."""
    if Path(out_path).resolve() == Path(original_path).resolve():
        raise ValueError(f"{out_path}: the output would overwrite the original model")
    if not Path(original_path).is_file():
        raise ValueError(f"{original_path}: no such file")
    model = VxmDense.load(original_path)
    save_model(model, out_path)
    return model

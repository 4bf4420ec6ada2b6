"""Learned templates (Dalca et al., NeurIPS 2019): an atlas image trained jointly with the
registration network that warps it onto every training scan.

`TemplateCreation` is voxelmorph 0.2's network of that name (same constructor, layer and
weight names, so the original's saved models load): the template is a weight of the
`atlas` layer; a bidirectional `VxmDense` registers it onto each input scan; `mean_stream`
keeps a running mean of the scan-to-template fields, which a loss drives to zero so the
template sits at the centre of the population.
"""

import h5py
import keras
import numpy as np
from keras import ops

from vxm_tf import compat, networks, original


@keras.saving.register_keras_serializable(package="vxm_tf")
class LocalParamWithInput(keras.layers.Layer):
    """A trainable array `shape` (the template), repeated for each sample of the input's
    batch: call on any `(B, ...)` tensor, returns `(B, *shape)` float32 (x `mult`)."""

    def __init__(self, shape, initializer="random_normal", mult=1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.shape = tuple(int(n) for n in shape)
        self.initializer = keras.initializers.get(initializer)
        self.mult = float(mult)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=self.shape,
                                      initializer=self.initializer)

    def call(self, x):
        value = ops.cast(self.kernel, "float32") * self.mult
        return ops.broadcast_to(value[None], (ops.shape(x)[0], *self.shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.shape)

    def get_config(self):
        return {**super().get_config(), "shape": list(self.shape), "mult": self.mult,
                "initializer": keras.initializers.serialize(self.initializer)}


@keras.saving.register_keras_serializable(package="vxm_tf")
class MeanStream(keras.layers.Layer):
    """The running mean of its input over the samples seen in training, as neurite's.

    Call on `(B, *shape)`; in training the mean and count (non-trainable weights, in that
    order) take in the batch, each sample weighing at least `1 / cap`; returns
    `min(1, count / cap) x mean` repeated over the batch (in inference the stored mean).
    """

    def __init__(self, cap=100, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.cap = float(cap)

    def build(self, input_shape):
        self.mean = self.add_weight(name="mean", shape=tuple(input_shape[1:]),
                                    initializer="zeros", trainable=False)
        self.count = self.add_weight(name="count", shape=(1,), initializer="zeros",
                                     trainable=False)

    def call(self, x, training=False):
        x = ops.cast(x, "float32")
        mean, count = self.mean, self.count
        if training:
            batch = ops.cast(ops.shape(x)[0], "float32")
            count = count + batch
            alpha = batch / ops.minimum(count, self.cap)
            mean = mean * (1 - alpha) + ops.mean(x, axis=0) * alpha
            self.mean.assign(mean)
            self.count.assign(count)
        return ops.minimum(1.0, count / self.cap) * ops.broadcast_to(mean[None], ops.shape(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "cap": self.cap}


def _named(tensors, names):
    """Each tensor under its own output name (Identity layers, no weights), so the
    losses of the nested registration network's outputs log apart."""
    return [t if n is None else keras.layers.Identity(name=n)(t)
            for t, n in zip(tensors, names)]


@keras.saving.register_keras_serializable(package="vxm_tf")
class TemplateCreation(keras.Model):
    """A template learned with its registration network (voxelmorph's `TemplateCreation`).

    Input: a scan `(B, *inshape, src_feats)`. Outputs `[template warped onto the scan,
    scan warped onto the template, mean stream of the scan-to-template fields,
    template-to-scan displacement]`, the last two `(B, *inshape, D)` in voxels: what the
    original's training losses take (similarity, similarity, MSE to zero, Grad).

    Args:
        inshape: spatial shape of the template and the scans.
        nb_unet_features: the U-Net's (see `VxmDense`).
        mean_cap: `MeanStream`'s cap.
        atlas_feats, src_feats: channels of the template and of the scans.
        **kwargs: `VxmDense`'s other arguments (`name` names it, default 'vxm_dense').
    """

    def __init__(self, inshape, nb_unet_features=None, mean_cap=100, atlas_feats=1,
                 src_feats=1, **kwargs):
        inshape = tuple(int(n) for n in inshape)
        kwargs.pop("bidir", None)
        trainable = kwargs.pop("trainable", True)
        scan = keras.Input((*inshape, src_feats), name="source_input")
        atlas = LocalParamWithInput((*inshape, atlas_feats),
                                    initializer=keras.initializers.RandomNormal(stddev=1e-7),
                                    name="atlas")(scan)
        vxm = networks.VxmDense(inshape, nb_unet_features=nb_unet_features, bidir=True,
                                src_feats=atlas_feats, trg_feats=src_feats, **kwargs)
        name = vxm.name
        fields = keras.Model(vxm.inputs, [
            *vxm.outputs[:2], vxm.get_layer(f"{name}_transformer").input[1],
            vxm.get_layer(f"{name}_neg_transformer").input[1]], name=name)
        y_source, y_target, pos_flow, neg_flow = fields([atlas, scan])
        mean_stream = MeanStream(mean_cap, name="mean_stream")(neg_flow)
        outputs = _named([y_source, y_target, mean_stream, pos_flow],
                         ["template_to_scan", "scan_to_template", None, "template_field"])
        super().__init__(inputs=[scan], outputs=outputs, name="template_creation",
                         trainable=trainable)
        self.inshape, self.nb_unet_features = inshape, networks._frozen(nb_unet_features)
        self.mean_cap, self.atlas_feats, self.src_feats = float(mean_cap), atlas_feats, \
            src_feats
        self.vxm_kwargs = {**kwargs, "name": name}

    def get_config(self):
        return {"inshape": list(self.inshape),
                "nb_unet_features": networks._listed(self.nb_unet_features),
                "mean_cap": self.mean_cap, "atlas_feats": self.atlas_feats,
                "src_feats": self.src_feats, "trainable": self.trainable, **self.vxm_kwargs}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def load(cls, path):
        """Load a `.keras` file or an `.h5` written by voxelmorph 0.2's `save`."""
        return networks.load_network(cls, path)

    @property
    def atlas_layer(self):
        return self.get_layer("atlas")

    def get_atlas(self):
        """The template `(*inshape)` (or `(*inshape, atlas_feats)` with several)."""
        return np.squeeze(keras.ops.convert_to_numpy(self.atlas_layer.kernel))

    def set_atlas(self, atlas):
        """Set the template from an array `(*inshape[, atlas_feats])` (a leading batch
        axis of 1 is dropped)."""
        atlas = np.asarray(atlas, np.float32)
        shape = self.atlas_layer.shape
        if atlas.shape[:1] == (1,) and atlas.ndim == len(shape) + 1:
            atlas = atlas[0]
        if atlas.shape == shape[:-1]:
            atlas = atlas[..., None]
        if atlas.shape != shape:
            raise ValueError(f"the template has shape {shape}, got {atlas.shape}")
        self.atlas_layer.set_weights([atlas])

    def get_registration_model(self):
        """A model `scan` -> template-to-scan displacement `(B, *inshape, D)` in voxels."""
        return compat.untracked_cache(self, "_registration_model",
                                      lambda: keras.Model(self.inputs, self.outputs[3]))

    def register(self, scan):
        """Displacement (voxels) taking the template onto each scan `(B, *inshape, C)`."""
        scan = np.asarray(scan, np.float32)
        expected = tuple(self.inputs[0].shape[1:])
        if scan.shape[1:] != expected:
            raise ValueError(f"the template model takes scans (B, *{expected}), got "
                             f"{scan.shape}")
        return keras.ops.convert_to_numpy(
            self.get_registration_model().predict_on_batch(scan))

    def registration_network(self):
        """A bidirectional `VxmDense` with this model's registration weights (a copy),
        taking `[template, scan]`: every command and function that registers uses it."""
        vxm = networks.VxmDense(self.inshape,
                                nb_unet_features=networks._listed(self.nb_unet_features),
                                bidir=True, src_feats=self.atlas_feats, trg_feats=self.src_feats,
                                **self.vxm_kwargs)
        vxm.set_weights(self.get_layer(vxm.name).get_weights())
        return vxm


@keras.saving.register_keras_serializable(package="vxm_tf")
class ConditionalTemplateCreation(keras.Model):
    """Templates conditioned on attributes (age, sex, ...): voxelmorph's network of that
    name (constructor, layer and weight names), Dalca et al. 2019.

    Inputs `[attributes (B, *pheno_input_shape), base template (B, *inshape, src_feats),
    scan (B, *inshape, src_feats)]`. A decoder makes an image from the attributes (a dense
    layer, `conv_nb_levels` upsampling levels, `extra_conv_layers` convolutions) that is
    added to the base template: the template for those attributes (`template`), which a
    bidirectional `VxmDense` registers onto the scan. Outputs `[template warped onto the
    scan, mean stream of the scan-to-template fields (with `use_mean_stream`),
    template-to-scan displacement, the same]` (the original's losses: similarity, MSE to
    zero, Grad, MSE to zero).

    Args:
        inshape: spatial shape; pheno_input_shape: shape of the attributes, e.g. (2,).
        conv_image_shape: shape the dense layer's output is reshaped to (default
            `(*inshape, conv_nb_features)`; smaller with `conv_nb_levels` upsamplings).
        conv_size, conv_nb_levels, conv_nb_features, extra_conv_layers: the decoder's.
        use_mean_stream, mean_cap: the mean stream output and its cap.
        **kwargs: `VxmDense`'s other arguments.
    """

    def __init__(self, inshape, pheno_input_shape, nb_unet_features=None, src_feats=1,
                 conv_image_shape=None, conv_size=3, conv_nb_levels=0, conv_nb_features=32,
                 extra_conv_layers=3, use_mean_stream=True, mean_cap=100, templcondsi=False,
                 templcondsi_init=None, **kwargs):
        if templcondsi or templcondsi_init is not None:
            raise ValueError("ConditionalTemplateCreation: templcondsi is not supported (the "
                             "original's branch does not run either)")
        inshape = tuple(int(n) for n in inshape)
        ndims = len(inshape)
        pheno_input_shape = tuple(np.atleast_1d(pheno_input_shape).astype(int).tolist())
        conv_image_shape = tuple(conv_image_shape or (*inshape, conv_nb_features))
        kwargs.pop("bidir", None)
        trainable = kwargs.pop("trainable", True)
        trg_feats = kwargs.pop("trg_feats", src_feats)
        conv = getattr(keras.layers, f"Conv{ndims}D")
        pheno = keras.Input(pheno_input_shape, name="pheno_input")
        x = keras.layers.Dense(int(np.prod(conv_image_shape)), activation="elu",
                               name="pheno_dense")(pheno)
        x = keras.layers.Reshape(conv_image_shape, name="pheno_reshape")(x)
        prefix = "atlas_decoder"
        for level in range(conv_nb_levels - 1):  # neurite's conv_dec, 2 convs a level
            x = getattr(keras.layers, f"UpSampling{ndims}D")(
                2, name=f"{prefix}_up_{conv_nb_levels + level}")(x)
            for k in range(2):
                x = conv(conv_nb_features, conv_size, padding="same", activation="elu",
                         name=f"{prefix}_conv_uparm_{conv_nb_levels + level}_{k}")(x)
        x = conv(conv_nb_features, 1, name=f"{prefix}_likelihood")(x)
        for n in range(extra_conv_layers):
            x = conv(conv_nb_features, conv_size, padding="same",
                     name=f"atlas_extra_conv_{n}")(x)
        tiny = keras.initializers.RandomNormal(stddev=1e-7)
        x = conv(src_feats, 3, padding="same", kernel_initializer=tiny, bias_initializer=tiny,
                 name="atlas_gen")(x)
        base = keras.Input((*inshape, src_feats), name="atlas_input")
        scan = keras.Input((*inshape, trg_feats), name="source_input")
        template = keras.layers.Add(name="atlas")([base, x])
        vxm = networks.VxmDense(inshape, nb_unet_features=nb_unet_features, bidir=True,
                                src_feats=src_feats, trg_feats=trg_feats, **kwargs)
        name = vxm.name
        fields = keras.Model(vxm.inputs, [
            vxm.outputs[0], vxm.get_layer(f"{name}_transformer").input[1],
            vxm.get_layer(f"{name}_neg_transformer").input[1]], name=name)
        y_source, pos_flow, neg_flow = fields([template, scan])
        outputs = _named([y_source, pos_flow, pos_flow],
                         ["template_to_scan", "template_field", "template_field_size"])
        if use_mean_stream:
            outputs.insert(1, MeanStream(mean_cap, name="mean_stream")(neg_flow))
        super().__init__(inputs=[pheno, base, scan], outputs=outputs,
                         name="conditional_template_creation", trainable=trainable)
        self.config = {
            "inshape": list(inshape), "pheno_input_shape": list(pheno_input_shape),
            "nb_unet_features": networks._listed(networks._frozen(nb_unet_features)),
            "src_feats": src_feats, "trg_feats": trg_feats,
            "conv_image_shape": list(conv_image_shape), "conv_size": conv_size,
            "conv_nb_levels": conv_nb_levels, "conv_nb_features": conv_nb_features,
            "extra_conv_layers": extra_conv_layers, "use_mean_stream": use_mean_stream,
            "mean_cap": mean_cap, **kwargs, "name": name}

    def get_config(self):
        return {**self.config, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def load(cls, path):
        """Load a `.keras` file or an `.h5` written by voxelmorph 0.2's `save` (its
        attribute layer, named `dense...` there, is `pheno_dense` here); a registered
        model's name loads its file."""
        from vxm_tf import models

        path = str(models.resolve(path))
        if path.endswith(".keras"):
            return networks.load_network(cls, path)
        model = cls(**original.read_original_config(path, cls.__name__))
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            dense = [name for name in group if name.startswith("dense")]
        if len(dense) != 1:
            raise ValueError(f"{path}: expected one dense layer (the attributes'), found "
                             f"{dense or 'none'}")
        return original.load_original_weights(model, path, {"pheno_dense": dense[0]})

    def get_template_model(self):
        """A model `[attributes, base template]` -> the template for those attributes."""
        return compat.untracked_cache(self, "_template_model", lambda: keras.Model(
            self.inputs[:2], self.get_layer("atlas").output))

    def template(self, attributes, base):
        """Templates `(B, *inshape, src_feats)` for attributes `(B, *pheno_input_shape)` on
        the base template `(*inshape[, src_feats])` (shared by all)."""
        attributes = np.asarray(attributes, np.float32)
        base = np.asarray(base, np.float32)
        shape = tuple(self.inputs[1].shape[1:])
        base = base[..., None] if base.shape == shape[:-1] else base
        if base.shape != shape:
            raise ValueError(f"the base template has shape {shape}, got {base.shape}")
        base = np.repeat(base[None], len(attributes), axis=0)
        return keras.ops.convert_to_numpy(
            self.get_template_model().predict_on_batch([attributes, base]))

"""The VoxelMorph U-Net (`Unet`, `unet_graph`) with the original's feature arguments.

Layer names match the original (`<name>_enc_conv_0_0`, ...), so its weights load by name.
"""

import keras
import numpy as np

from vxm_tf import hyperlayers

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

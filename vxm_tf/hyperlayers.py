"""HyperMorph layers (Hoopes et al. 2021): convolutions whose weights a hypernetwork makes.

`HyperConv2DFromDense` / `HyperConv3DFromDense` match neurite 0.2's layers of those names
(weights `hyperkernel_kernel`, `hyperkernel_bias`, `hyperbias_kernel`, `hyperbias_bias`, in
that order, so the original's saved weights load), in `keras.ops` for every backend.
`HyperParameter` feeds a hypernetwork a fixed value instead of an input.
"""

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="vxm_tf")
class HyperConvFromDense(keras.layers.Layer):
    """A convolution whose kernel and bias are linear maps of a hypernetwork's features.

    Call on `[x, h]`: features `x (B, *spatial, C_in)` and the hypernetwork's last layer
    `h (B, U)`. Sample `b`'s kernel `(*kernel_size, C_in, filters)` is `h[b] @ K + k` and
    its bias `h[b] @ Kb + kb`; returns `(B, *spatial', filters)` (`padding` 'same' keeps
    the spatial shape). Stride and dilation 1, as the original's U-Net uses it.

    The kernel's constant part (`hyperkernel_bias`) starts He-normal, so an untrained
    HyperMorph U-Net starts as an ordinary one (neurite's starts glorot-uniform: kernels
    sqrt(2 x filters) times smaller); the other weights start glorot-uniform as neurite's.

    Args:
        rank: 2 or 3 spatial axes.
        filters: output channels.
        kernel_size: int or `rank` ints.
        padding: 'same' or 'valid'.
        use_bias: whether the convolution adds a (hyper-made) bias.
        activation: applied to the output (None: linear).
    """

    def __init__(self, rank, filters, kernel_size, padding="valid", use_bias=True,
                 activation=None, **kwargs):
        super().__init__(**kwargs)
        padding = padding.lower() if isinstance(padding, str) else padding
        if rank not in (2, 3):
            raise ValueError(f"HyperConvFromDense: rank must be 2 or 3, got {rank}")
        if padding not in ("same", "valid"):
            raise ValueError(f"HyperConvFromDense: padding must be 'same' or 'valid', got "
                             f"{padding!r}")
        self.rank, self.filters, self.padding, self.use_bias = rank, int(filters), padding, \
            use_bias
        sizes = (kernel_size,) * rank if isinstance(kernel_size, int) else tuple(kernel_size)
        if len(sizes) != rank:
            raise ValueError(f"HyperConvFromDense: kernel_size needs {rank} entries, got "
                             f"{kernel_size!r}")
        self.kernel_size = tuple(int(k) for k in sizes)
        self.activation = keras.activations.get(activation)

    def build(self, input_shape):
        x_shape, h_shape = input_shape
        units = int(h_shape[-1])
        self.kernel_shape = (*self.kernel_size, int(x_shape[-1]), self.filters)
        size = math.prod(self.kernel_shape)
        # the original's order and names, so its saved weights load position by position;
        # the kernel's constant part starts as He-normal, as an ordinary convolution's
        fan_in = math.prod(self.kernel_shape[:-1])
        self.hyperkernel_kernel = self.add_weight(name="hyperkernel_kernel",
                                                  shape=(units, size))
        self.hyperkernel_bias = self.add_weight(
            name="hyperkernel_bias", shape=(size,),
            initializer=keras.initializers.RandomNormal(stddev=math.sqrt(2 / fan_in)))
        if self.use_bias:
            self.hyperbias_kernel = self.add_weight(name="hyperbias_kernel",
                                                    shape=(units, self.filters))
            self.hyperbias_bias = self.add_weight(name="hyperbias_bias", shape=(self.filters,))

    def call(self, inputs):
        x, h = inputs
        h = ops.cast(h, self.compute_dtype)
        kernels = ops.matmul(h, ops.cast(self.hyperkernel_kernel, self.compute_dtype))
        kernels = ops.reshape(kernels + ops.cast(self.hyperkernel_bias, self.compute_dtype),
                              (-1, *self.kernel_shape))
        if self.use_bias:
            biases = (ops.matmul(h, ops.cast(self.hyperbias_kernel, self.compute_dtype))
                      + ops.cast(self.hyperbias_bias, self.compute_dtype))
        else:
            biases = ops.zeros((ops.shape(h)[0], self.filters), self.compute_dtype)

        def one(sample):
            features, kernel, bias = sample
            return ops.conv(features[None], kernel, padding=self.padding)[0] + bias

        out = ops.vectorized_map(one, (x, kernels, biases))
        return out if self.activation is None else self.activation(out)

    def compute_output_shape(self, input_shape):
        x_shape = input_shape[0]
        spatial = x_shape[1:-1]
        if self.padding == "valid":
            spatial = tuple(None if n is None else n - k + 1
                            for n, k in zip(spatial, self.kernel_size))
        return (x_shape[0], *spatial, self.filters)

    def get_config(self):
        return {**super().get_config(), "rank": self.rank, "filters": self.filters,
                "kernel_size": list(self.kernel_size), "padding": self.padding,
                "use_bias": self.use_bias,
                "activation": keras.activations.serialize(self.activation)
                if self.activation is not None else None}


@keras.saving.register_keras_serializable(package="vxm_tf")
class HyperConv2DFromDense(HyperConvFromDense):
    """`HyperConvFromDense` with 2 spatial axes (neurite's name)."""

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs.pop("rank", None)
        super().__init__(2, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="vxm_tf")
class HyperConv3DFromDense(HyperConvFromDense):
    """`HyperConvFromDense` with 3 spatial axes (neurite's name)."""

    def __init__(self, filters, kernel_size, **kwargs):
        kwargs.pop("rank", None)
        super().__init__(3, filters, kernel_size, **kwargs)


@keras.saving.register_keras_serializable(package="vxm_tf")
class HyperParameter(keras.layers.Layer):
    """The hyperparameters `values` for every sample of a batch: call on any tensor
    `(B, ...)`, returns `(B, len(values))` float32 (a model's fixed choice, in place of an
    input)."""

    def __init__(self, values, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.values = [float(v) for v in values]

    def call(self, x):
        values = ops.convert_to_tensor(self.values, "float32")
        return ops.zeros((ops.shape(x)[0], 1), "float32") + values[None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.values))

    def get_config(self):
        return {**super().get_config(), "values": list(self.values)}

"""vxm_tf.compat: every private Keras / TensorFlow API vxm_tf uses still exists and does
what vxm_tf relies on; an upgrade that changes one fails here."""

import keras
import numpy as np
import tensorflow as tf

from vxm_tf import compat, networks

SMALL = [[4, 4], [4, 4, 4]]


def test_the_private_model_attributes_exist():
    assert hasattr(keras.Model, "_symbolic_build"), "Keras dropped Model._symbolic_build"
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    assert hasattr(model, "_distribute_strategy")
    assert compat.distribute_strategy(model) is None  # no tf.distribute scope here


def test_symbolic_build_creates_the_optimiser_slots_before_fit():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    assert not model.optimizer.built
    spec = (tf.TensorSpec((None, 3)), tf.TensorSpec((None, 2)))
    assert compat.symbolic_build(model, spec)
    assert model.optimizer.built and len(model.optimizer.variables) > 1


def test_xla_context_is_seen_inside_a_jit_compiled_function_only():
    seen = {}

    @tf.function(jit_compile=True)
    def compiled(x):
        seen["jit"] = compat.in_xla_context()
        return x + 1

    @tf.function
    def plain(x):
        seen["plain"] = compat.in_xla_context()
        return x + 1
    compiled(tf.constant(1.0))
    plain(tf.constant(1.0))
    assert seen == {"jit": True, "plain": False}
    assert compat.in_xla_context() is False  # eager


def test_an_untracked_cache_shares_weights_without_becoming_a_sublayer():
    model = networks.VxmDense((16, 16), nb_unet_features=SMALL)
    before = len(model.weights)
    field = model.get_field_model()
    assert model.get_field_model() is field  # computed once
    assert len(model.weights) == before  # not tracked: its weights are not counted twice
    assert all(any(w is v for v in model.weights) for w in field.weights)
    pair = np.random.default_rng(0).random((2, 1, 16, 16, 1)).astype("float32")
    assert model.register(pair[0], pair[1]).shape == (1, 16, 16, 2)

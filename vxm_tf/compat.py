"""Every use of a private Keras or TensorFlow API, in one place.

Each function names what it reaches into; tests/test_compat.py checks that the installed
Keras and TensorFlow still have it, so an upgrade that moves one fails there, loudly, rather
than silently changing a run.
"""

import keras


def distribute_strategy(model):
    """The `tf.distribute` strategy a Keras 3 model was built under, else None
    (`Model._distribute_strategy`)."""
    return getattr(model, "_distribute_strategy", None)


def symbolic_build(model, data_batch):
    """Build a compiled model's optimiser slots and metrics from a batch structure before
    `fit` traces its step (`Model._symbolic_build`, Keras 3's own pre-trace build); False
    where the installed Keras has none."""
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return False
    build(data_batch=data_batch)
    return True


def in_xla_context():
    """Whether the TensorFlow function being traced is compiled by XLA
    (`tensorflow.python.ops.control_flow_util.GraphOrParentsInXlaContext`); False when
    that test is missing or under another backend."""
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        import tensorflow as tf
        from tensorflow.python.ops import control_flow_util
        return bool(control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()))
    except (ImportError, AttributeError):
        return False


def untracked_cache(layer, name, make):
    """`make()`, computed once and kept on `layer` outside Keras's attribute tracking (a
    plain `__dict__` entry): a helper model or compiled function that shares the layer's
    weights must not become a sublayer (its weights would count twice and be saved)."""
    cached = layer.__dict__.get(name)
    if cached is None:
        cached = make()
        object.__setattr__(layer, name, cached)
    return cached

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as vxm_tf sets it (see its __init__)
# XLA (instance optimisation under TensorFlow, and JAX) with its LLVM back end unoptimised:
# the same operations, compiled faster; the tests' tiny arrays spend most of their XLA time
# compiling
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import pytest  # noqa: E402


def _grappler(on):
    """TensorFlow's graph optimiser (Grappler) on or off for graphs run from now on."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not on})


# Grappler off in the test processes: it rewrites each new graph before its first run (a
# tiny training: 5.3 -> 4.5 s), which the tests' many short-lived graphs pay for and never
# recoup. The commands the tests start as subprocesses keep it, as users do; a test that
# compares its own results with theirs to float rounding is marked `grappler`.
_grappler(False)


@pytest.fixture(autouse=True)
def _grappler_where_marked(request):
    marked = request.node.get_closest_marker("grappler") is not None
    if marked:
        _grappler(True)
    yield
    if marked:
        _grappler(False)


@pytest.fixture(autouse=True)
def _float32_policy_and_seed():
    """Every test starts from the float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run directory with a tiny VxmDense trained briefly on 32x32 synthetic subjects."""
    from vxm_tf import configs, trainer

    run_dir = tmp_path_factory.mktemp("run")
    config = configs.Config()
    config.data = configs.DataConfig(synthetic_shape=(32, 32), synthetic_labels=4,
                                     train=6, val=3, test=3)
    config.model = configs.ModelConfig(nb_features=[[8, 8, 8], [8, 8, 8, 8, 8]],
                                       int_resolution=1)
    config.loss = configs.LossConfig(similarity="mse", reg_weight=0.01)
    config.train = configs.TrainConfig(epochs=1, steps_per_epoch=200, lr=3e-3, verbose=0,
                                       model_dir=str(run_dir))
    trainer.train_and_evaluate(config, log=lambda _: None)
    keras.config.set_dtype_policy("float32")
    return run_dir

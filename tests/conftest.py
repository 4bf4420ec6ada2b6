import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as vxm_tf sets it (see its __init__)
# XLA (instance optimisation under TensorFlow, and JAX) with its LLVM back end unoptimised:
# the same operations, compiled faster; the tests' tiny arrays spend most of their XLA time
# compiling
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import pytest  # noqa: E402


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

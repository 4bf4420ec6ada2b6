"""Compute layer, loss and VxmDense outputs under the backend named by KERAS_BACKEND.

    KERAS_BACKEND=jax python tests/backend_run.py INPUTS.npz MODEL.keras OUTPUTS.npz

The backend test runs this in a subprocess (a process has one Keras backend) and compares
its answers with TensorFlow's.
"""

import sys

import keras
import numpy as np

from vxm_tf import instance, layers, losses, networks  # noqa: F401  (registers VxmDense)


def compute(inputs, model):
    image, disp, vel = inputs["image"], inputs["disp"], inputs["vel"]
    moving, fixed = inputs["moving"], inputs["fixed"]
    moved, flow = model.predict_on_batch([moving, fixed])
    out = {
        "linear": layers.SpatialTransformer()([image, disp]),
        "nearest": layers.SpatialTransformer(interp_method="nearest")([image, disp]),
        "vecint": layers.VecInt(int_steps=7)(vel),
        "rescale": layers.RescaleTransform(0.5)(vel),
        "ncc": losses.NCC()(moving, fixed),
        "mse": losses.MSE()(moving, fixed),
        "grad": losses.Grad("l2")(vel, vel),
        "moved": moved,
        "flow": flow,
        "warp": model.register(moving, fixed),
        "instance": instance.optimise(model, moving, fixed,
                                      instance.InstanceConfig(steps=3, lr=0.05, smoothing=3)),
    }
    return {k: keras.ops.convert_to_numpy(v) for k, v in out.items()}


def main(inputs_path, model_path, out_path):
    inputs = dict(np.load(inputs_path))
    model = keras.saving.load_model(model_path, compile=False)
    np.savez(out_path, backend=keras.backend.backend(), **compute(inputs, model))


if __name__ == "__main__":
    main(*sys.argv[1:4])

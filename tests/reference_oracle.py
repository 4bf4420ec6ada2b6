"""Test oracle: the original VoxelMorph (voxelmorph 0.2 on tf-keras), run in its own process.

    python tests/reference_oracle.py INPUTS.npz OUTPUTS.npz WORKDIR

Reads the arrays the parity tests made, computes the original's answers and writes them.
It must never share a process with Keras 3, so it sets TF_USE_LEGACY_KERAS before
importing TensorFlow and restores `inspect.getargspec` (gone since Python 3.11), which
neurite 0.2 still calls.
"""

import inspect
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
inspect.getargspec = lambda f: inspect.getfullargspec(f)[:4]

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import voxelmorph as vxm  # noqa: E402


def layer_cases(inputs):
    """Layers and losses on the random inputs, keyed by `<case>_<ndims>d`."""
    out = {}
    for nd in (2, 3):
        vol, disp = inputs[f"vol_{nd}d"], inputs[f"disp_{nd}d"]
        seg, vel = inputs[f"seg_{nd}d"], inputs[f"vel_{nd}d"]
        a, b = inputs[f"img_a_{nd}d"], inputs[f"img_b_{nd}d"]
        st = vxm.layers.SpatialTransformer
        out[f"linear_{nd}d"] = st(interp_method="linear")([vol, disp]).numpy()
        out[f"nearest_{nd}d"] = st(interp_method="nearest")([seg, disp]).numpy()
        out[f"fill_{nd}d"] = st(interp_method="linear", fill_value=-1.0)([vol, disp]).numpy()
        out[f"vecint_{nd}d"] = vxm.layers.VecInt(method="ss", int_steps=7)(vel).numpy()
        out[f"half_{nd}d"] = vxm.layers.RescaleTransform(0.5)(vel).numpy()
        out[f"double_{nd}d"] = vxm.layers.RescaleTransform(2.0)(vel).numpy()
        out[f"ncc_{nd}d"] = vxm.losses.NCC().loss(a, b).numpy()
        out[f"ncc5_{nd}d"] = vxm.losses.NCC(win=5).loss(a, b).numpy()
        out[f"mse_{nd}d"] = vxm.losses.MSE().loss(a, b).numpy()
        out[f"grad_l1_{nd}d"] = vxm.losses.Grad("l1").loss(None, vel).numpy()
        out[f"grad_l2_{nd}d"] = vxm.losses.Grad("l2", loss_mult=2).loss(None, vel).numpy()
        onehot_a, onehot_b = inputs[f"onehot_a_{nd}d"], inputs[f"onehot_b_{nd}d"]
        out[f"dice_{nd}d"] = vxm.losses.Dice().loss(onehot_a, onehot_b).numpy()
    return out


def model_case(inputs, workdir):
    """A 2D VxmDense with non-trivial random weights: saved weights and its outputs."""
    inshape = tuple(int(n) for n in inputs["model_inshape"])
    tf.keras.utils.set_random_seed(0)
    model = vxm.networks.VxmDense(inshape, int_steps=7, int_resolution=2)
    flow = model.get_layer("vxm_dense_flow")
    kernel, bias = flow.get_weights()
    rng = np.random.default_rng(0)
    flow.set_weights([rng.normal(0, 0.3, kernel.shape).astype("float32"), bias])
    model.save_weights(os.path.join(workdir, "original_weights.h5"))
    model.save(os.path.join(workdir, "original_model.h5"))
    moving, fixed = inputs["model_moving"].numpy(), inputs["model_fixed"].numpy()
    moved, preint = model.predict([moving, fixed], verbose=0)
    warp = model.register(moving, fixed)
    return {"model_moved": moved, "model_preint": preint, "model_warp": warp}


def hyper_case(inputs, workdir):
    """A 2D HyperVxmDense with random weights, two samples at different hyperparameters:
    its saved model and its outputs (moved, preintegrated field, full-resolution warp)."""
    inshape = tuple(int(n) for n in inputs["model_inshape"])
    tf.keras.utils.set_random_seed(1)
    model = vxm.networks.HyperVxmDense(inshape, nb_hyp_units=16, int_steps=7,
                                       int_resolution=2)
    flow = model.get_layer("hyper_vxm_dense_flow")
    kernel, bias = flow.get_weights()
    rng = np.random.default_rng(1)
    flow.set_weights([rng.normal(0, 0.3, kernel.shape).astype("float32"), bias])
    model.save(os.path.join(workdir, "original_hyper.h5"))
    moving, fixed = inputs["model_moving"].numpy(), inputs["model_fixed"].numpy()
    hyp = inputs["hyper_values"]
    hyp = hyp.numpy() if hasattr(hyp, "numpy") else hyp
    moved, preint = model.predict([moving, fixed, hyp], verbose=0)
    warp = tf.keras.Model(model.inputs, model.references.pos_flow).predict(
        [moving, fixed, hyp], verbose=0)
    return {"hyper_moved": moved, "hyper_preint": preint, "hyper_warp": warp}


def template_case(inputs, workdir):
    """A 2D TemplateCreation with a random template, registration weights and mean stream
    (saved), and its outputs on two scans; Transform with dense and affine transforms."""
    inshape = tuple(int(n) for n in inputs["model_inshape"])
    tf.keras.utils.set_random_seed(2)
    model = vxm.networks.TemplateCreation(inshape, int_steps=5)
    rng = np.random.default_rng(2)
    model.references.atlas_layer.set_weights([rng.random((*inshape, 1), dtype=np.float32)])
    flow = model.get_layer("vxm_dense_flow")
    kernel, bias = flow.get_weights()
    flow.set_weights([rng.normal(0, 0.3, kernel.shape).astype("float32"), bias])
    mean = rng.normal(0, 1, (*inshape, 2)).astype("float32")
    model.get_layer("mean_stream").set_weights([mean, np.array([40.0], np.float32)])
    model.save(os.path.join(workdir, "original_template.h5"))
    scans = inputs["model_moving"].numpy()
    outputs = model.predict(scans, verbose=0)
    out = {f"template_{k}": v for k, v in enumerate(outputs)}
    vol = inputs["model_fixed"].numpy()
    dense = vxm.networks.Transform(inshape)
    out["transform_dense"] = dense.predict([vol, inputs["transform_disp"]], verbose=0)
    affine = vxm.networks.Transform(inshape, affine=True)
    out["transform_affine"] = affine.predict([vol, inputs["transform_matrix"]], verbose=0)
    return out


def conditional_template_case(inputs, workdir):
    """A 2D ConditionalTemplateCreation with random weights (its attribute decoder too):
    saved, and its outputs and templates for two attribute vectors."""
    inshape = tuple(int(n) for n in inputs["model_inshape"])
    tf.keras.utils.set_random_seed(3)
    model = vxm.networks.ConditionalTemplateCreation(
        inshape, pheno_input_shape=(2,), conv_nb_features=4, conv_nb_levels=0,
        extra_conv_layers=3, int_steps=5)
    rng = np.random.default_rng(3)
    for name in ("atlas_gen", "vxm_dense_flow"):
        layer = model.get_layer(name)
        layer.set_weights([rng.normal(0, 0.3, w.shape).astype("float32")
                           for w in layer.get_weights()])
    model.save(os.path.join(workdir, "original_cond_template.h5"))
    pheno, base = inputs["cond_pheno"], inputs["model_fixed"].numpy()
    scans = inputs["model_moving"].numpy()
    outputs = model.predict([pheno, base, scans], verbose=0)
    template = tf.keras.Model(model.inputs[:2], model.get_layer("atlas").output).predict(
        [pheno, base], verbose=0)
    return {**{f"cond_{k}": v for k, v in enumerate(outputs)}, "cond_template": template}


def main(in_path, out_path, workdir):
    inputs = {k: tf.constant(v) if v.dtype == np.float32 else v
              for k, v in np.load(in_path).items()}
    outputs = {**layer_cases(inputs), **model_case(inputs, workdir),
               **hyper_case(inputs, workdir), **template_case(inputs, workdir),
               **conditional_template_case(inputs, workdir)}
    np.savez(out_path, **outputs)


if __name__ == "__main__":
    main(*sys.argv[1:4])

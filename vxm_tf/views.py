"""Training views of a `VxmDense`: models that share its weights and what `fit` trains
for `--aug_clean_targets` and `--seg_weight` (the `VxmDense` itself stays the saved model)."""

import keras

from vxm_tf import layers


def clean_target_model(model):
    """Training view of a unidirectional `VxmDense` for intensity-augmented scans.

    Inputs `[moving, fixed, moving_clean]`; outputs `[moved_clean, preint_flow]`: the
    field is predicted from `(moving, fixed)` as usual, but warps `moving_clean` (the same
    scan without intensity augmentation), so the similarity loss compares clean images.
    Shares `model`'s weights; output names match `model`'s, so the losses log alike.
    """
    if model.bidir:
        raise ValueError("clean_target_model takes a unidirectional VxmDense")
    name = model.name
    fields = keras.Model(model.inputs, [model.get_layer(f"{name}_transformer").input[1],
                                        model.outputs[-1]], name=model.output_names[-1])
    moving, fixed, clean = [keras.Input(shape=model.inputs[k].shape[1:], name=f"{name}_{n}")
                            for k, n in ((0, "source_input"), (1, "target_input"),
                                         (0, "clean_source_input"))]
    warp, preint_flow = fields([moving, fixed])
    moved = layers.SpatialTransformer(interp_method="linear", indexing="ij",
                                      name=f"{name}_transformer")([clean, warp])
    return keras.Model([moving, fixed, clean], [moved, preint_flow],
                       name=f"{name}_clean_target")


def seg_training_model(model, labels, resolution=1):
    """Semi-supervised training view of a unidirectional `VxmDense` (`--seg_weight`).

    Inputs `[moving, fixed, moving_seg]` (ids `(B, *spatial, 1)`); outputs `[moved,
    preint_flow, moved_seg]`: the moving segmentation's one-hot maps of `labels` warped
    (linear) by the same full-resolution field, for `losses.Dice(labels)` against the fixed
    segmentation. With `resolution` > 1 the one-hot maps are average-pooled by that factor
    and warped by the field resized to match (`losses.Dice(labels, resolution)`): 1/8 of
    the memory at 2 in 3D. Shares `model`'s weights; image and field outputs keep
    `model`'s names.
    """
    if model.bidir:
        raise ValueError("seg_training_model takes a unidirectional VxmDense")
    name = model.name
    fields = keras.Model(model.inputs, [model.get_layer(f"{name}_transformer").input[1],
                                        model.outputs[0], model.outputs[-1]],
                         name=f"{name}_fields")
    moving, fixed = [keras.Input(shape=model.inputs[k].shape[1:], name=f"{name}_{n}")
                     for k, n in ((0, "source_input"), (1, "target_input"))]
    moving_seg = keras.Input(shape=(*model.inputs[0].shape[1:-1], 1),
                             name=f"{name}_source_seg_input")
    warp, moved, preint_flow = fields([moving, fixed])
    moved = keras.layers.Identity(name=f"{name}_transformer")(moved)
    preint_flow = keras.layers.Identity(name=model.output_names[-1])(preint_flow)
    one_hot = layers.OneHot(labels, name=f"{name}_seg_one_hot")(moving_seg)
    if resolution > 1:
        spatial = tuple(model.inputs[0].shape[1:-1])
        if any(n % resolution for n in spatial):
            raise ValueError(f"seg_resolution {resolution} must divide the image shape "
                             f"{spatial}")
        pool = getattr(keras.layers, f"AveragePooling{len(spatial)}D")
        one_hot = pool(resolution, dtype="float32", name=f"{name}_seg_pool")(one_hot)
        warp = layers.RescaleTransform(1 / resolution, name=f"{name}_seg_field")(warp)
    moved_seg = layers.SpatialTransformer(interp_method="linear", indexing="ij",
                                          name=f"{name}_seg_transformer")([one_hot, warp])
    return keras.Model([moving, fixed, moving_seg], [moved, preint_flow, moved_seg],
                       name=f"{name}_seg_supervised")

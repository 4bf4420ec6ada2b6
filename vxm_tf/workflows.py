"""Registration and warping on files: the work behind `vxm-register` and `vxm-warp`.

`register_files` registers one scan onto another and writes the moved image, its
segmentation, the displacement (world mm), its inverse and the affine pre-alignment;
`register_list` registers a list of scans onto one fixed scan with one loaded model;
`warp_file` applies a saved displacement to any image in the moving scan's world space.
Every path and header is checked before any work, and the outputs of one call are written
all together or not at all. Registering imports TensorFlow; warping does not (`vxm-warp`
starts in a moment).
"""

import os
from pathlib import Path

import numpy as np

from vxm_tf import files, geometry, io, models


def check_outputs(paths, inputs=(), text=()):
    """Every output has a known suffix and a writable folder, no two outputs share a path,
    and no output would overwrite an input: checked before any work, so nothing is
    half-written. `text`: outputs that are text files (not named as images)."""
    seen = [p for p in inputs if p]
    for path in [*paths, *text]:
        if not path:
            continue
        if Path(path).is_dir():
            raise io.VolumeError(f"{path}: a folder stands there; give a file name")
        if path not in text and io.file_type(path) is None:
            raise io.VolumeError(f"{path}: unknown file type; expected one of "
                                 f"{', '.join(io.SUFFIXES)}")
        if path in text and io.file_type(path) is not None:
            raise io.VolumeError(f"{path}: a text file (a 4x4 matrix), not an image: name "
                                 "it .txt")
        folder = Path(path).parent
        if not folder.is_dir():
            raise io.VolumeError(f"{path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise io.VolumeError(f"{path}: folder {folder} is not writable")
        earlier = next((p for p in seen if files.same_file(p, path)), None)
        if earlier is not None:
            raise ValueError(f"{path}: the same file is given twice ({earlier!r} already); "
                             "an output may not be an input or another output")
        seen.append(path)


# below this fraction of near-minimum voxels, an image is not a skull-stripped scan on a dark
# background (a brain in its field of view has far more; noise or a cropped image less)
MIN_BACKGROUND = 0.1


def background_fraction(data):
    """The fraction of voxels within 5% of the intensity range above its minimum."""
    low, high = float(np.min(data)), float(np.max(data))
    return float(np.mean(data <= low + 0.05 * (high - low))) if high > low else 1.0


# an image of at most this many integer values is taken for a label map (a scan, even an
# 8-bit one, has more)
LABEL_LIKE = 64


# below this fraction of the fixed image's foreground inside the moving scan, the two do not
# share a world space (wrong affines, or another subject's scan space without pre-alignment)
MIN_OVERLAP = 0.2


def register_files(model_path, moving_path, fixed_path, moved_path, warp_path="",
                   moving_seg_path="", moved_seg_path="", normalise="auto",
                   instance_config=None, affine_config=None, affine_path="",
                   inverse_path="", log=None, hyper_lambda=None):
    """Register `moving_path` onto `fixed_path` and write the requested outputs
    (`model_path`: a model file, a registered name or a loaded `VxmDense`; `affine_config`:
    pre-alignment, default affine; `instance_config`: optional test-time instance
    optimisation; `normalise`: `normalise_pair`'s method; `log`: called with the sentence
    saying how the intensities were scaled; `hyper_lambda`: a HyperMorph model's weight)."""
    from vxm_tf import affine, hypermorph, instance, registration  # TensorFlow
    from vxm_tf.data.volumes import check_intensities, normalise_image, normalise_pair
    if bool(moving_seg_path) != bool(moved_seg_path):
        raise ValueError("--moving_seg and --moved_seg go together")
    if io.file_type(warp_path) == ".mgz":
        raise io.VolumeError(f"{warp_path}: displacement fields are written as NIfTI or npz")
    model_file = models.resolve(model_path) if isinstance(model_path, (str, os.PathLike)) else ""
    check_outputs([moved_path, warp_path, moved_seg_path, inverse_path],
                  inputs=[model_file, moving_path, fixed_path, moving_seg_path],
                  text=[affine_path] if affine_path else [])
    affine_config = affine.AffineConfig() if affine_config is None else affine_config
    model = hypermorph.load(model_path, hyper_lambda)
    if instance_config is not None:
        instance.check_for_model(instance_config, model)
    moving, fixed = io.load_volume(moving_path), io.load_volume(fixed_path)
    placed = {path: io.has_affine(path) for path in (moving_path, fixed_path)}
    if len(set(placed.values())) > 1:  # one in world space, the other nowhere
        bare = next(path for path, known in placed.items() if not known)
        raise io.VolumeError(f"{bare}: an npz without an `affine` array has no place in "
                             "world space, the other scan has one: save its affine in the "
                             "npz (key `affine`) or give both scans as NIfTI")
    ndims = len(model.inshape)
    for volume in (moving, fixed):
        if volume.data.ndim != ndims:
            raise ValueError(f"{volume.path}: a {volume.data.ndim}D image, but the model "
                             f"registers {ndims}D images")
        check_intensities(volume.data, volume.path, normalise)
    seg = io.load_volume(moving_seg_path, labels=True) if moving_seg_path else None
    if seg is not None and seg.data.ndim != ndims:
        raise ValueError(f"{moving_seg_path}: a {seg.data.ndim}D label map for the "
                         f"{ndims}D moving image")
    moving_scaled, fixed_scaled, said = normalise_pair(moving.data, fixed.data, normalise)
    if log:
        log(said)
        for volume in (moving, fixed):
            background = background_fraction(volume.data)
            if background < MIN_BACKGROUND:
                log(f"warning: {volume.path}: only {background:.0%} of its voxels are dark "
                    "background; the brain models take skull-stripped scans on a dark "
                    "background, and register other images meaninglessly")
            values = np.unique(volume.data)
            if len(values) <= LABEL_LIKE and np.array_equal(values, np.round(values)):
                log(f"warning: {volume.path} looks like a label map ({len(values)} integer "
                    "values), registered here as an image; a segmentation goes with "
                    "--moving_seg")
    result = registration.register_volumes(
        model, io.Volume(moving_scaled, moving.affine), io.Volume(fixed_scaled, fixed.affine),
        affine_config, instance_config, inverse=bool(inverse_path))
    foreground = normalise_image(fixed.data, "minmax") > 0.1
    overlap = geometry.inside_fraction(result.coords[foreground], moving.data.shape)
    if overlap < MIN_OVERLAP:
        raise ValueError(f"{moving_path}: only {overlap:.0%} of the fixed image falls inside "
                         f"it after --affine={affine_config.kind}; check both affines, or "
                         "pre-align with --affine=affine")
    background = float(moving.data.min())
    with files.all_or_nothing():  # every output, or none of them
        io.save_volume(moved_path, geometry.sample(moving.data, result.coords, 1, background),
                       fixed.affine)
        if warp_path:
            io.save_displacement(warp_path, geometry.world_displacement(
                result.coords, moving.affine, fixed.affine), fixed.affine)
        if inverse_path:
            io.save_displacement(inverse_path, geometry.world_displacement(
                result.inverse, fixed.affine, moving.affine), moving.affine)
        if affine_path:
            files.write_text(affine_path, "\n".join(" ".join(f"{v:.9g}" for v in row)
                                                    for row in result.matrix) + "\n")
        if seg is not None:
            seg_coords = geometry.apply(geometry.voxel_map(moving.affine, seg.affine, ndims),
                                        result.coords)
            io.save_volume(moved_seg_path, geometry.sample(seg.data, seg_coords, 0), fixed.affine)


def read_moving_list(list_path):
    """[(name, image, seg or "")] from a list file; names (file names without suffix) must
    be distinct, as they name the outputs."""
    if not os.path.isfile(list_path):
        raise ValueError(f"{list_path}: no such file")
    entries, names = [], {}
    with open(list_path) as file:
        for number, line in enumerate(file, 1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            if len(fields) > 2:
                raise ValueError(f"{list_path}:{number}: expected `image` or `image seg`, "
                                 f"got {len(fields)} fields")
            image = fields[0]
            missing = next((f for f in fields if not os.path.isfile(f)), None)
            if missing:  # known before any scan is registered
                raise ValueError(f"{list_path}:{number}: {missing}: no such file")
            name = Path(image).name
            suffix = io.file_type(image)
            name = name[:-len(suffix)] if suffix else name
            if name in names:
                raise ValueError(f"{list_path}:{number}: {image} has the same name as line "
                                 f"{names[name]}; outputs would collide")
            names[name] = number
            entries.append((name, image, fields[1] if len(fields) == 2 else ""))
    if not entries:
        raise ValueError(f"{list_path}: no scans listed")
    return entries


def register_list(model_path, list_path, fixed_path, out_dir, normalise="auto",
                  instance_config=None, affine_config=None, log=print, hyper_lambda=None):
    """Register every scan of `list_path` onto `fixed_path` with one loaded model, writing
    its outputs into `out_dir`. A scan that cannot be registered is reported (one line
    through `log`) and skipped. Returns the names of the failed scans."""
    from vxm_tf import hypermorph  # TensorFlow
    entries = read_moving_list(list_path)
    if not Path(out_dir).is_dir():
        raise ValueError(f"--out_dir {out_dir}: no such folder")
    outputs = {name: [str(Path(out_dir) / f"{name}_{kind}") if kind else "" for kind in (
        "moved.nii.gz", "warp.nii.gz", "moved_seg.nii.gz" if seg else "", "affine.txt")]
        for name, _, seg in entries}
    inputs = [fixed_path, list_path, *(p for _, image, seg in entries for p in (image, seg))]
    for path in (p for paths in outputs.values() for p in paths if p):
        clash = next((q for q in inputs if q and files.same_file(q, path)), None)
        if clash:  # one scan's output would replace another's input
            raise ValueError(f"--out_dir {out_dir}: {path} would overwrite the input {clash}; "
                             "write the outputs into another folder")
    model = hypermorph.load(model_path, hyper_lambda)
    failed = []
    for k, (name, image, seg) in enumerate(entries, 1):
        moved, warp, moved_seg, matrix = outputs[name]
        try:
            register_files(model, image, fixed_path, moved, warp, seg, moved_seg,
                           normalise, instance_config, affine_config, matrix)
        except (ValueError, OSError) as err:
            failed.append(name)
            log(f"[{k}/{len(entries)}] {name}: skipped: {err}")
            continue
        log(f"[{k}/{len(entries)}] {name}: done")
    return failed


# below this fraction of the field's points inside the image, the image is not in the
# world space the field maps into (another subject's scan, or a wrong affine)
MIN_INSIDE = 0.2


# an integer image with at most this many values is taken for a label map
LABEL_VALUES = 256


def warp_file(moving_path, warp_path, moved_path, interp=None):
    """Warp the image or label map `moving_path` by the displacement `warp_path` (world mm on
    its grid) and write `moved_path` on the warp's grid with its affine; `interp` linear or
    nearest (None: linear, except that an integer image of at most `LABEL_VALUES` values, a
    label map, is refused: linear interpolation would blend its labels into new values).
    The output may not be one of the inputs; nothing is written on an error."""
    if not Path(moved_path).parent.is_dir():
        raise io.VolumeError(f"{moved_path}: folder {Path(moved_path).parent} does not exist")
    files.check_not_inputs(moved_path, {"--moving": moving_path, "--warp": warp_path},
                           "--moved")
    if io.file_type(moved_path) is None:
        raise io.VolumeError(f"{moved_path}: unknown file type; expected one of "
                             f"{', '.join(io.SUFFIXES)}")
    labels = interp == "nearest"
    moving = io.load_volume(moving_path, labels=labels)
    warp = io.load_displacement(warp_path)
    ndims = moving.data.ndim
    field = warp.data
    if ndims == 2:
        if field.shape[2] != 1:
            raise ValueError(f"{warp_path}: a 3D field ({field.shape[:3]}) for the 2D image "
                             f"{moving_path}")
        field = field[:, :, 0]
    coords = geometry.moving_coordinates(field, warp.affine, moving.affine, ndims)
    inside = geometry.inside_fraction(coords, moving.data.shape)
    if inside < MIN_INSIDE:
        raise ValueError(f"{moving_path}: only {inside:.0%} of {warp_path}'s points fall "
                         "inside this image: it is not in the space the field maps into (the "
                         "moving scan it was registered from)")
    if interp is None:
        values = np.unique(moving.data)
        integers = np.array_equal(values, np.round(values))
        if integers and len(values) <= LABEL_VALUES:
            raise ValueError(f"{moving_path} looks like a label map ({len(values)} integer "
                             "values): pass --interp=nearest (or --interp=linear to blend "
                             "them anyway)")
    cval = 0 if labels else float(moving.data.min())
    io.save_volume(moved_path, geometry.sample(moving.data, coords, 0 if labels else 1, cval),
                   warp.affine)

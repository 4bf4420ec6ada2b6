"""Register two scans: `python -m vxm_tf.register --model=M --moving=A --fixed=B --moved=C`.

Scans (.nii, .nii.gz, .mgz, .npz) of any size, orientation and voxel size are registered in
world coordinates (their affines): the moving scan is pre-aligned to the fixed one
(`--affine=affine|rigid|none`), resampled onto the model's grid over the fixed scan's box,
deformed by the network, and the composed transform brings it onto the fixed grid in one
interpolation. Outputs, all on the fixed grid with the fixed affine: the moved image (float32),
`--moved_seg` (nearest), `--warp` (the displacement in world mm, ITK / ANTs layout: see
`io.save_displacement`; apply it with `python -m vxm_tf.warp`), `--affine_out` (the
pre-alignment as a 4x4 RAS matrix taking fixed-space points to moving-space points), and
`--inverse_warp` on the moving grid (fixed-space images onto the moving scan). All
outputs are checked before the work starts and written atomically.
"""

import os
from pathlib import Path

from absl import flags

from vxm_tf import cli

cli.quiet_tensorflow_import()

import numpy as np  # noqa: E402

from vxm_tf import (  # noqa: E402
    affine,
    files,
    geometry,
    hypermorph,
    instance,
    io,
    models,
    registration,
)
from vxm_tf.data.volumes import (  # noqa: E402
    NORMALISATIONS,
    check_intensities,
    normalise_image,
    normalise_pair,
)

FLAGS = flags.FLAGS


def define_flags():
    """Declare this entry point's flags (run as a program only)."""
    flags.DEFINE_string("model", None, "model file (.keras, or an original voxelmorph .h5) or "
                        "registered name (vxm-models list)")
    flags.DEFINE_string("moving", None, "moving image")
    flags.DEFINE_string("moving_list", None, "instead of --moving: a text file of moving "
                        "scans, one per line (`image` or `image seg`), all registered onto "
                        "--fixed in one process; outputs go to --out_dir")
    flags.DEFINE_string("out_dir", None, "with --moving_list: folder for each scan's "
                        "NAME_moved.nii.gz, NAME_warp.nii.gz, NAME_affine.txt and, with a "
                        "seg, NAME_moved_seg.nii.gz")
    flags.DEFINE_string("fixed", None, "fixed image")
    flags.DEFINE_string("moved", None, "output: moving image warped onto the fixed one")
    flags.DEFINE_string("warp", "", "output: displacement field (NIfTI)")
    flags.DEFINE_string("moving_seg", "", "moving segmentation to warp (nearest)")
    flags.DEFINE_string("moved_seg", "", "output: warped moving segmentation")
    flags.DEFINE_enum("affine", "affine", affine.KINDS, "pre-alignment of the moving scan "
                      "before the network: affine (12 parameters), rigid, or none (scans "
                      "already aligned in world coordinates)")
    flags.DEFINE_string("inverse_warp", "", "output: the inverse displacement on the moving "
                        "scan's grid (world mm, as --warp), mapping fixed-space images such "
                        "as an atlas's labels onto the moving scan with vxm_tf.warp")
    flags.DEFINE_string("affine_out", "", "output: the pre-alignment as a 4x4 text matrix "
                        "(RAS mm, fixed-space point -> moving-space point)")
    flags.DEFINE_enum("normalise", "auto", NORMALISATIONS,
                      "intensity scaling of both images before registration (models are "
                      "trained on [0, 1]): auto keeps the two as they are when both are in "
                      "[0, 1], else min-max scales both (the same for both scans, and said)")
    instance.define_flags()
    hypermorph.define_flags()
    flags.mark_flags_as_required(["model", "fixed"])
    flags.mark_flags_as_mutual_exclusive(["moving", "moving_list"], required=True)
    cli.require_together("moving", "moved")
    cli.require_together("moving_list", "out_dir")


def check_outputs(paths, inputs=(), text=()):
    """Every output has a known suffix and a writable folder, no two outputs share a path,
    and no output would overwrite an input: checked before any work, so nothing is
    half-written. `text`: outputs that are text files (any suffix)."""
    seen = {Path(p).resolve(): p for p in inputs if p}
    for path in [*paths, *text]:
        if not path:
            continue
        if Path(path).is_dir():
            raise io.VolumeError(f"{path}: a folder stands there; give a file name")
        if path not in text and io.file_type(path) is None:
            raise io.VolumeError(f"{path}: unknown file type; expected one of "
                                 f"{', '.join(io.SUFFIXES)}")
        folder = Path(path).parent
        if not folder.is_dir():
            raise io.VolumeError(f"{path}: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise io.VolumeError(f"{path}: folder {folder} is not writable")
        if Path(path).resolve() in seen:
            raise ValueError(f"{path}: the same path is given for two files "
                             f"({seen[Path(path).resolve()]!r} already)")
        seen[Path(path).resolve()] = path


# below this fraction of near-minimum voxels, an image is not a skull-stripped scan on a dark
# background (a brain in its field of view has far more; noise or a cropped image less)
MIN_BACKGROUND = 0.1


def background_fraction(data):
    """The fraction of voxels within 5% of the intensity range above its minimum."""
    low, high = float(np.min(data)), float(np.max(data))
    return float(np.mean(data <= low + 0.05 * (high - low))) if high > low else 1.0


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
    if bool(moving_seg_path) != bool(moved_seg_path):
        raise ValueError("--moving_seg and --moved_seg go together")
    if io.file_type(warp_path) == ".mgz":
        raise io.VolumeError(f"{warp_path}: displacement fields are written as NIfTI or npz")
    model_file = models.resolve(model_path) if isinstance(model_path, (str, os.PathLike)) else ""
    check_outputs([moved_path, warp_path, moved_seg_path],
                  inputs=[model_file, moving_path, fixed_path, moving_seg_path],
                  text=[affine_path] if affine_path else [])
    affine_config = affine.AffineConfig() if affine_config is None else affine_config
    model = hypermorph.load(model_path, hyper_lambda)
    if instance_config is not None:
        instance.check_for_model(instance_config, model)
    moving, fixed = io.load_volume(moving_path), io.load_volume(fixed_path)
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
    entries = read_moving_list(list_path)
    if not Path(out_dir).is_dir():
        raise ValueError(f"--out_dir {out_dir}: no such folder")
    model = hypermorph.load(model_path, hyper_lambda)
    failed = []
    for k, (name, image, seg) in enumerate(entries, 1):
        out = Path(out_dir) / name
        try:
            register_files(model, image, fixed_path, f"{out}_moved.nii.gz",
                           f"{out}_warp.nii.gz", seg, f"{out}_moved_seg.nii.gz" if seg else "",
                           normalise, instance_config, affine_config, f"{out}_affine.txt")
        except (ValueError, OSError) as err:
            failed.append(name)
            log(f"[{k}/{len(entries)}] {name}: skipped: {err}")
            continue
        log(f"[{k}/{len(entries)}] {name}: done")
    return failed


def main(argv):
    cli.check_args(argv)
    instance_config = cli.call(instance.config_from_flags, FLAGS)
    affine_config = cli.call(affine.AffineConfig, FLAGS.affine)
    if FLAGS.moving_list:
        single = [f"--{name}" for name in ("moved", "warp", "moving_seg", "moved_seg",
                                           "inverse_warp", "affine_out") if FLAGS[name].value]
        if single:  # each scan's outputs are named in --out_dir, its seg in the list
            cli.fail(f"--moving_list writes NAME_moved.nii.gz, NAME_warp.nii.gz, "
                     "NAME_affine.txt (and NAME_moved_seg.nii.gz for a listed seg) into "
                     f"--out_dir; {', '.join(single)} belong to one --moving scan")
        failed = cli.call(register_list, FLAGS.model, FLAGS.moving_list, FLAGS.fixed,
                          FLAGS.out_dir, FLAGS.normalise, instance_config, affine_config,
                          print, FLAGS.hyper_lambda)
        if failed:
            cli.fail(f"{len(failed)} scan(s) of {FLAGS.moving_list} failed: "
                     f"{', '.join(failed)}")
        return
    cli.call(register_files, FLAGS.model, FLAGS.moving, FLAGS.fixed, FLAGS.moved, FLAGS.warp,
             FLAGS.moving_seg, FLAGS.moved_seg, FLAGS.normalise, instance_config,
             affine_config, FLAGS.affine_out, FLAGS.inverse_warp, print, FLAGS.hyper_lambda)
    written = [FLAGS.moved, FLAGS.warp, FLAGS.moved_seg, FLAGS.inverse_warp, FLAGS.affine_out]
    print(f"wrote {', '.join(path for path in written if path)}")


FLAG_GROUPS = [
    ("model", ["model", "hyper_lambda"]),
    ("input/output", ["moving", "fixed", "moved", "warp", "moving_seg", "moved_seg",
                      "inverse_warp", "affine_out", "moving_list", "out_dir"]),
    ("pre-alignment and intensities", ["affine", "normalise"]),
    ("instance optimisation", list(instance.FLAG_NAMES)),
]


def console():
    """The `vxm-register` command (also `python -m vxm_tf.register`)."""
    define_flags()
    cli.run(main, __doc__, FLAG_GROUPS)


if __name__ == "__main__":
    console()

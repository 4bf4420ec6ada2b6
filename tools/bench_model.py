"""Benchmark VxmDense: training step, registration, peak memory; vxm_tf vs voxelmorph 0.2.

    python tools/bench_model.py --out bench/model.json            (make bench-model)
    python tools/bench_model.py --shapes 160x192 --impls vxm_tf   (a quick look)

Each (implementation, shape) runs in its own process, so peak memory (max RSS) is its own
and the original (tf-keras) never shares a process with Keras 3. All run the same way
(vxm_tf-svf2: vxm_tf with svf_resolution=2, the original's unet_half_res; -remat: also
with --remat, the integration's intermediates recomputed in the backward pass):
VxmDense with default features, int_steps 7, int_resolution 2, NCC + Grad('l2') with
weights [1, 1], Adam 1e-4, batch 1, `train_on_batch` on random images; registration is
`predict_on_batch` of the model from (moving, fixed) to the full-resolution warp. Times are
medians after warm-up steps. Both run TensorFlow with oneDNN (TF_ENABLE_ONEDNN_OPTS=1).
Writes JSON and a markdown table beside it.
"""

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import reporting

from vxm_tf.training.devices import cpu_model

DEFAULT_SHAPES = ("160x192", "64x64x64", "128x128x128")
# vxm_tf-svf2: the same network with svf_resolution=2 (the original's unet_half_res, the
# design of the authors' 3D brain model): no full-resolution decoder convolutions;
# vxm_tf-svf2-remat: the same trained with --remat
IMPLS = ("vxm_tf", "vxm_tf-svf2", "vxm_tf-svf2-remat", "voxelmorph-0.2")


def steps_for(shape):
    voxels = int(np.prod(shape))
    if voxels > 1e6:
        return 2, 4
    if voxels > 1e5:
        return 2, 8
    return 5, 30


def build_vxm_tf(shape, svf_resolution=1, remat=False):
    import keras  # TF_ENABLE_ONEDNN_OPTS comes from run_worker, whatever the import order

    import vxm_tf
    import vxm_tf.losses
    import vxm_tf.networks
    from vxm_tf import experiment

    model = experiment.with_remat(lambda: vxm_tf.networks.VxmDense(
        shape, int_steps=7, int_resolution=2, svf_resolution=svf_resolution), remat)
    model.compile(keras.optimizers.Adam(1e-4),
                  loss=[vxm_tf.losses.NCC(), vxm_tf.losses.Grad("l2", loss_mult=2)],
                  loss_weights=[1.0, 1.0])
    version = f"{vxm_tf.__version__} (keras {keras.__version__})"
    return model, model.get_registration_model(), version


def build_original(shape):
    inspect.getargspec = lambda f: inspect.getfullargspec(f)[:4]
    import tensorflow as tf
    import voxelmorph as vxm

    model = vxm.networks.VxmDense(shape, int_steps=7, int_resolution=2)
    model.compile(tf.keras.optimizers.Adam(1e-4),
                  loss=[vxm.losses.NCC().loss, vxm.losses.Grad("l2", loss_mult=2).loss],
                  loss_weights=[1.0, 1.0])
    return model, model.get_registration_model(), vxm.__version__


def worker(impl, shape):
    """Time one implementation at one shape in this process; print a JSON line."""
    if impl == "voxelmorph-0.2":
        model, registration, version = build_original(shape)
    else:
        model, registration, version = build_vxm_tf(shape, 1 if impl == "vxm_tf" else 2,
                                                    remat=impl.endswith("-remat"))
    rng = np.random.default_rng(0)
    moving = rng.random((1, *shape, 1), dtype=np.float32)
    fixed = rng.random((1, *shape, 1), dtype=np.float32)
    zeros = np.zeros((1, *[n // 2 for n in shape], len(shape)), np.float32)
    warmup, steps = steps_for(shape)
    train_times, register_times = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        model.train_on_batch([moving, fixed], [fixed, zeros])
        if i >= warmup:
            train_times.append(time.perf_counter() - start)
    for i in range(warmup + steps):
        start = time.perf_counter()
        registration.predict_on_batch([moving, fixed])
        if i >= warmup:
            register_times.append(time.perf_counter() - start)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"impl": impl, "version": version, "shape": list(shape),
                      "train_step_s": float(np.median(train_times)),
                      "register_s": float(np.median(register_times)),
                      "train_steps_timed": steps, "peak_rss_gib": round(peak_gib, 3)}))


def run_worker(impl, shape_text):
    # the same TensorFlow kernels for both: oneDNN, which TensorFlow leaves off on CPUs
    # without AVX-512 (vxm_tf turns it on; the original would run 3.8x slower there)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="1")
    if impl == "voxelmorph-0.2":
        env["TF_USE_LEGACY_KERAS"] = "1"
    cmd = [sys.executable, __file__, "--worker", impl, "--shapes", shape_text]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        return {"impl": impl, "shape": shape_text, "error": run.stderr.strip()[-500:]}
    return json.loads(run.stdout.strip().splitlines()[-1])


def markdown(results, machine):
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["shape"], r["impl"], "error", "error", ""])
            continue
        rows.append(["x".join(map(str, r["shape"])), f"{r['impl']} {r['version']}",
                     f"{r['train_step_s']:.4f}", f"{r['register_s']:.4f}",
                     f"{r['peak_rss_gib']:.2f}"])
    lines = [f"Machine: {machine}", "", *reporting.table(
        ["shape", "implementation", "train step (s)", "registration (s)", "peak RSS (GiB)"],
        rows)]
    by = {(tuple(r["shape"]), r["impl"]): r for r in results if "error" not in r}
    speedups = []
    for shape in dict.fromkeys(tuple(r["shape"]) for r in results if "error" not in r):
        ours, orig = by.get((shape, "vxm_tf")), by.get((shape, "voxelmorph-0.2"))
        if ours and orig:
            speedups.append(["x".join(map(str, shape)),
                             f"{orig['train_step_s'] / ours['train_step_s']:.2f}x",
                             f"{orig['register_s'] / ours['register_s']:.2f}x"])
    lines += ["", *reporting.table(["shape", "train speed-up", "registration speed-up"],
                                   speedups)]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help="comma-separated shapes such as 160x192,64x64x64")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"subset of {IMPLS}")
    parser.add_argument("--out", help="JSON results file (a .md table is written beside it)")
    parser.add_argument("--worker", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shapes = [tuple(int(n) for n in s.split("x")) for s in args.shapes.split(",")]
    if args.worker:
        worker(args.worker, shapes[0])
        return
    impls = args.impls.split(",")
    unknown = set(impls) - set(IMPLS)
    if unknown:
        parser.error(f"unknown --impls {sorted(unknown)}; choose from {IMPLS}")
    results = []
    for shape in shapes:
        for impl in impls:
            result = run_worker(impl, "x".join(map(str, shape)))
            print(json.dumps(result), flush=True)
            results.append(result)
    machine = (f"{cpu_model()}, {os.cpu_count()} CPU cores, Python "
               f"{platform.python_version()}, TensorFlow oneDNN on")
    table = markdown(results, machine)
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
        tmp.replace(out)
        out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()

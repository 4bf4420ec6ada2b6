"""The GPU check: VxmDense under Keras 3 on JAX (no TensorFlow), timed on whatever device
JAX sees (`make gpu-check` runs it on the lent GPU machine through tools/gpu_check.sh).

    KERAS_BACKEND=jax python tools/bench_gpu.py --out bench/gpu.json
    KERAS_BACKEND=jax python tools/bench_gpu.py --shape 32,32,32 --train_steps 4 \
        --out /tmp/gpu.json                                          (a dry run on a CPU)

Measures, each part in its own process (so peak device memory is its own):
- a training step (batch 1, default VxmDense, int_steps 7, int_resolution 2, NCC + Grad,
  Adam, `train_on_batch`) and a registration (`predict_on_batch`, moving + fixed to the
  warp) at `--shape`, under the float32, mixed_bfloat16 and mixed_float16 policies;
  median seconds after warm-up steps, peak device memory;
- `vxm_tf.train` for `--train_steps` steps on synthetic subjects of `--shape` (the 3D
  configuration, the pair source through `keras.utils.PyDataset`): steady seconds per step
  and whether the loss stayed finite;
- with `--pretrained` and `--oasis`: `vxm_tf.evaluate` of the authors' model on the real
  neurite-OASIS pairs at full resolution, without and with instance optimisation.
Writes JSON and a markdown table beside it.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
ROOT = Path(__file__).resolve().parents[1]


def device_memory():
    """Peak bytes in use on the first JAX device, or None where JAX does not report it."""
    import jax

    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def step_worker(shape, precision, warmup, steps):
    """Seconds per training step and per registration under `precision`."""
    import jax
    import keras

    from vxm_tf import losses, networks

    keras.config.set_dtype_policy(precision)
    keras.utils.set_random_seed(0)
    model = networks.VxmDense(shape, int_steps=7, int_resolution=2)
    model.compile(keras.optimizers.Adam(1e-4),
                  loss=[losses.NCC(), losses.Grad("l2", loss_mult=2)], loss_weights=[1.0, 1.0])
    rng = np.random.default_rng(0)
    moving, fixed = (rng.random((1, *shape, 1), dtype=np.float32) for _ in range(2))
    zeros = np.zeros((1, *model.outputs[-1].shape[1:]), np.float32)
    times, losses_seen = [], []
    for n in range(warmup + steps):
        start = time.perf_counter()
        logs = model.train_on_batch([moving, fixed], [fixed, zeros], return_dict=True)
        losses_seen.append(float(logs["loss"]))  # a float: waits for the device
        if n >= warmup:
            times.append(time.perf_counter() - start)
    registration = model.get_registration_model()
    reg_times = []
    for n in range(warmup + steps):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(registration.predict_on_batch([moving, fixed]))
        if n >= warmup:
            reg_times.append(time.perf_counter() - start)
    # the network alone: both images already on the device, one compiled call, the warp
    # left there (what a pipeline that keeps its data on the GPU pays per pair)
    compiled = jax.jit(lambda m, f: registration([m, f], training=False))
    on_device = [jax.device_put(a) for a in (moving, fixed)]
    device_times = []
    for n in range(warmup + steps):
        start = time.perf_counter()
        compiled(*on_device).block_until_ready()
        if n >= warmup:
            device_times.append(time.perf_counter() - start)
    return {"precision": precision, "train_step_s": float(np.median(times)),
            "register_s": float(np.median(reg_times)),
            "register_device_s": float(np.median(device_times)),
            "loss_finite": bool(np.all(np.isfinite(losses_seen))),
            "peak_device_bytes": device_memory(), "device": str(jax.devices()[0])}


def jax_env():
    """The environment of a part: Keras on JAX, this checkout importable."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": path}


def run_json(args, timeout):
    """Run a worker (`--worker ...`) in its own process; its last stdout line is JSON."""
    start = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                             timeout=timeout, env=jax_env())
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if run.returncode:
        return {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip()
                else f"exit {run.returncode}", "stderr_tail": run.stderr[-2000:]}
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - start
    return result


def module(name, args, timeout):
    """`python -m name args` under JAX; (ok, stderr tail, seconds)."""
    start = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-m", name, *args], capture_output=True,
                             text=True, timeout=timeout, env=jax_env())
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s", time.perf_counter() - start
    return run.returncode == 0, run.stderr[-2000:], time.perf_counter() - start


def train_run(shape, steps, timeout):
    """`vxm_tf.train` on synthetic subjects of `shape`: two epochs of `steps` / 2."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--dataset=synthetic", f"--synthetic_shape={','.join(map(str, shape))}",
                "--train=4", "--val=2", "--test=0", "--synthetic_labels=8",
                "--epochs=2", f"--steps_per_epoch={max(steps // 2, 1)}", "--precision=auto",
                "--verbose=0", f"--model_dir={tmp}/run"]
        ok, err, seconds = module("vxm_tf.train", args, timeout)
        if not ok:
            return {"error": err.strip().splitlines()[-1] if err.strip() else "failed",
                    "stderr_tail": err}
        timing = json.loads(Path(f"{tmp}/run/timing.json").read_text())
        config = json.loads(Path(f"{tmp}/run/config.json").read_text())
        history = Path(f"{tmp}/run/history.csv").read_text().splitlines()
        return {"steps": 2 * max(steps // 2, 1), "seconds_per_step": timing["seconds_per_step"],
                "epoch_seconds": timing["epoch_seconds"], "wall_s": seconds,
                "precision": config["resolved_precision"], "history": history}


def pretrained_run(model, oasis, instance_steps, timeout):
    """`vxm_tf.evaluate` of the authors' model on the real pairs, per instance setting."""
    rows = []
    for steps in instance_steps:
        with tempfile.TemporaryDirectory() as tmp:
            args = [f"--model={model}", "--dataset=oasis", f"--data_dir={oasis}", "--train=0",
                    "--val=0", "--test=2", f"--instance_steps={steps}", f"--out_dir={tmp}/e"]
            ok, err, seconds = module("vxm_tf.evaluate", args, timeout)
            if not ok:
                rows.append({"instance_steps": steps, "error": err.strip().splitlines()[-1]})
                continue
            summary = json.loads(Path(f"{tmp}/e/summary.json").read_text())
            rows.append({"instance_steps": steps, "wall_s": seconds,
                         **{k: summary.get(k) for k in ("pairs", "dice_before", "dice_after",
                                                        "hd95_after", "folding_percent",
                                                        "seconds")}})
    return rows


def fmt(value, digits=4):
    return "" if value is None else f"{value:.{digits}f}"


def markdown(results):
    lines = [f"# VxmDense on {results['device']} (Keras 3 on JAX, no TensorFlow)", "",
             "Generated by `tools/bench_gpu.py` (`make gpu-check` on the lent GPU machine); "
             f"{results['date']}, keras {results['keras']}, jax {results['jax']}."
             + "".join(f" Kept {k}." for k in results.get("kept", [])), "",
             f"## Training step and registration at {results['shape']}, batch 1", "",
             "Registration: `predict_on_batch` from numpy arrays to a numpy warp (host "
             "transfers included), and on the device (images already there, one compiled call, "
             "the warp left there).", "",
             "| precision | train step (s) | registration (s) | registration on device (s) | "
             "peak device memory (GiB) | loss finite |", "|---|---|---|---|---|---|"]
    for row in results["steps"]:
        if "error" in row:
            lines.append(f"| {row['precision']} | failed: {row['error']} | | | | |")
            continue
        peak = row["peak_device_bytes"]
        lines.append(f"| {row['precision']} | {fmt(row['train_step_s'])} | "
                     f"{fmt(row['register_s'])} | {fmt(row.get('register_device_s'))} | "
                     f"{fmt(peak and peak / 2**30, 2)} | "
                     f"{row['loss_finite']} |")
    base = {r["precision"]: r for r in results["steps"] if "error" not in r}
    if "float32" in base:
        for name in PRECISIONS[1:]:
            if name in base:
                speedup = base["float32"]["train_step_s"] / base[name]["train_step_s"]
                lines.append(f"\n{name}: {speedup:.2f}x float32's training speed.")
    train = results.get("train")
    if train:
        lines += ["", f"## `vxm_tf.train`, synthetic subjects at {results['shape']}", ""]
        if "error" in train:
            lines.append(f"failed: {train['error']}")
        else:
            lines.append(f"{train['steps']} steps, precision {train['precision']}: "
                         f"{train['seconds_per_step']:.4f} s per step (steady epoch), epochs "
                         f"{', '.join(f'{s:.1f}' for s in train['epoch_seconds'])} s, whole "
                         f"process {train['wall_s']:.0f} s.")
    if results.get("pretrained"):
        lines += ["", "## The authors' model on the real neurite-OASIS pair (full resolution)",
                  "", "| instance steps | Dice before | Dice after | HD95 mm | folding % | "
                  "s / pair |", "|---|---|---|---|---|---|"]
        for row in results["pretrained"]:
            if "error" in row:
                lines.append(f"| {row['instance_steps']} | failed: {row['error']} | | | | |")
                continue
            lines.append(f"| {row['instance_steps']} | {fmt(row['dice_before'], 3)} | "
                         f"{fmt(row['dice_after'], 3)} | {fmt(row['hd95_after'], 2)} | "
                         f"{fmt(row['folding_percent'], 3)} | {fmt(row['seconds'], 3)} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128,128,128")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per precision")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--train_steps", type=int, default=200)
    parser.add_argument("--pretrained", help="the authors' .h5 (or a converted .keras)")
    parser.add_argument("--oasis", help="a neurite-OASIS 3D folder with two subjects")
    parser.add_argument("--instance_steps", default="0,50")
    parser.add_argument("--timeout", type=int, default=240, help="seconds per part")
    parser.add_argument("--out", required=True, help="JSON file (a .md is written beside)")
    parser.add_argument("--keep", help="an earlier JSON of this check: its train and "
                        "pretrained parts are kept where this run skips them")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        shape = tuple(int(n) for n in args.shape.split(","))
        instance_steps = [int(n) for n in args.instance_steps.split(",")]
    except ValueError:
        parser.error("--shape and --instance_steps take comma-separated integers")
    if args.worker:
        print(json.dumps(step_worker(shape, args.worker, args.warmup, args.steps)))
        return
    if os.environ.get("KERAS_BACKEND") not in (None, "jax"):
        parser.error("this check runs Keras on JAX (KERAS_BACKEND=jax)")
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras

    results = {"device": str(jax.devices()[0]), "platform": platform.node(),
               "date": time.strftime("%Y-%m-%d"), "keras": keras.__version__,
               "jax": jax.__version__, "shape": "x".join(map(str, shape)), "steps": []}
    if args.keep:
        earlier = json.loads(Path(args.keep).read_text())
        for part in ("train", "pretrained"):
            if part in earlier:
                results[part] = earlier[part]
                results.setdefault("kept", []).append(
                    f"{part}: from the run of {earlier['date']} on {earlier['device']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(results, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(results))

    for precision in args.precisions.split(","):
        row = run_json(["--worker", precision, "--shape", args.shape, "--warmup",
                        str(args.warmup), "--steps", str(args.steps), "--out", args.out],
                       args.timeout)
        results["steps"].append({"precision": precision, **row})
        print(json.dumps(results["steps"][-1]), flush=True)
        save()
    if args.train_steps:
        results["train"] = train_run(shape, args.train_steps, args.timeout)
        print(json.dumps(results["train"]), flush=True)
        save()
    if args.pretrained and args.oasis:
        results["pretrained"] = pretrained_run(args.pretrained, args.oasis, instance_steps,
                                               args.timeout)
        print(json.dumps(results["pretrained"]), flush=True)
        save()
    print(markdown(results))


if __name__ == "__main__":
    main()

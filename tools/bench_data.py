"""Benchmark the pair pipeline: pairs per second delivered by `tf.data` (`make bench-data`).

    python tools/bench_data.py --out bench/data.json

Synthetic volumes at 160x192 (the neurite-OASIS slice) and 128^3, streamed as all ordered
pairs, batch 1, with and without augmentation (rotation 10 degrees, flip, gamma, noise).
Compares with the model's training-step rate from bench/model.json when present (the data
side should deliver at least 10x the pairs the model consumes). Then the data memory: peak
memory of a fresh process that loads 20 or 400 subjects (64^3 npz files, as a prepared cache
holds them) and streams 200 augmented batches of pairs, with every subject in memory and
with the default budget (`--cache_mb`), each measured in its own process. Writes JSON and
markdown.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import reporting

from vxm_tf import cli

cli.quiet_tensorflow_import()
from vxm_tf import data  # noqa: E402

AUGMENT = data.Augmentation(rotate_deg=10, flip=True, gamma=0.2, noise=0.02)


def pairs_per_second(volumes, augmentation, count, flow_shape):
    ds = data.pair_dataset(volumes, data.all_pairs(len(volumes)), augmentation=augmentation,
                           flow_shape=flow_shape, repeat=True)
    iterator = iter(ds)
    next(iterator)
    start = time.perf_counter()
    for _ in range(count):
        next(iterator)
    return count / (time.perf_counter() - start)


MEMORY_SHAPE, MEMORY_SUBJECTS = (64, 64, 64), (20, 400)


def write_subjects(folder, count):
    """`count` random subjects as npz files (`vol` float32, `seg` int16)."""
    rng = np.random.default_rng(0)
    for k in range(count):
        np.savez(Path(folder) / f"s{k:04d}.npz",
                 vol=rng.random(MEMORY_SHAPE, dtype=np.float32),
                 seg=rng.integers(0, 8, MEMORY_SHAPE).astype(np.int16))


def rss_mib():
    """This process's resident memory now, MiB (Linux)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_worker(folder, count, cache_mb):
    """In this process: load `count` subjects of `folder` (all of them kept when
    `cache_mb` is 0), stream 200 augmented batches; print the peak RSS in MiB and what
    the data added to the process's memory before loading (imports done)."""
    subjects = [data.Subject(f"s{k:04d}", str(Path(folder) / f"s{k:04d}.npz"),
                             str(Path(folder) / f"s{k:04d}.npz")) for k in range(count)]
    before = rss_mib()
    volumes = data.load_volumes(subjects, cache_bytes=cache_mb * 2**20 if cache_mb else None)
    source = data.PairSource(volumes, data.all_pairs(count), batch_size=1, repeat=True,
                             augmentation=data.Augmentation(gamma=0.2, noise=0.02),
                             flow_shape=(32, 32, 32, 3))
    largest = rss_mib()
    for k in range(200):
        source.batch(k)
        largest = max(largest, rss_mib())
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 1024, "data_mib": largest - before}))


def memory_rows(default_mb):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        write_subjects(folder, max(MEMORY_SUBJECTS))
        for count in MEMORY_SUBJECTS:
            for cache_mb in (0, default_mb):
                run = subprocess.run([sys.executable, __file__, "--memory_worker", folder,
                                      str(count), str(cache_mb)], capture_output=True,
                                     text=True, check=True)
                result = json.loads(run.stdout.strip().splitlines()[-1])
                rows.append({"subjects": count, "cache_mb": cache_mb, **result})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def model_steps_per_second(model_json, shape):
    if not Path(model_json).exists():
        return None
    for row in json.loads(Path(model_json).read_text())["results"]:
        if row.get("impl") == "vxm_tf" and tuple(row.get("shape", ())) == tuple(shape):
            return 1.0 / row["train_step_s"]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON results (a .md table is written beside it)")
    parser.add_argument("--model_json", default="bench/model.json")
    parser.add_argument("--memory_worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory_budget_mb", type=reporting.at_least(1), default=64,
                        help="the budget measured beside 'all kept' (the training default, "
                        "2048 MiB, would hold all 400 of these small subjects)")
    args = parser.parse_args()
    if args.memory_worker:
        folder, count, cache_mb = args.memory_worker
        return memory_worker(folder, int(count), int(cache_mb))
    rows = []
    for shape, subjects, count in (((160, 192), 48, 2000), ((128, 128, 128), 6, 20)):
        volumes = data.synthetic_volumes(subjects, shape, nb_labels=8)
        flow_shape = (*[n // 2 for n in shape], len(shape))
        model_rate = model_steps_per_second(args.model_json, shape)
        for name, aug in (("none", None), ("rotate+flip+gamma+noise", AUGMENT)):
            rate = pairs_per_second(volumes, aug, count if aug is None else count // 4,
                                    flow_shape)
            rows.append({"shape": list(shape), "augmentation": name, "pairs_per_s": rate,
                         "model_steps_per_s": model_rate,
                         "ratio": rate / model_rate if model_rate else None})
            print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    lines = [f"Machine: {machine}", "", *reporting.table(
        ["shape", "augmentation", "pairs/s", "model steps/s", "data / model"],
        [["x".join(map(str, r["shape"])), r["augmentation"], f"{r['pairs_per_s']:.1f}",
          f"{r['model_steps_per_s']:.2f}" if r["model_steps_per_s"] else "n/a",
          f"{r['ratio']:.1f}x" if r["ratio"] else "n/a"] for r in rows])]
    memory = memory_rows(args.memory_budget_mb)
    lines += ["", f"Data memory: a process loads the subjects "
              f"({'x'.join(map(str, MEMORY_SHAPE))} npz files) and streams 200 augmented "
              "batches; 'all' keeps every subject in memory (`--cache_mb=0`), a budget reads "
              "the others again when needed. Data: the largest resident memory while loading "
              "and streaming, less the process's before loading (its imports); peak: the "
              "process's peak RSS, TensorFlow's import included.", "",
              *reporting.table(
                  ["subjects", "subjects kept", "data (MiB)", "peak RSS (MiB)"],
                  [[r["subjects"], f"{r['cache_mb']} MiB" if r["cache_mb"] else "all",
                    f"{r['data_mib']:.0f}", f"{r['peak_rss_mib']:.0f}"] for r in memory])]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine, "results": rows, "memory": memory},
                                  indent=2) + "\n")
        out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()

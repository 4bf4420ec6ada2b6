"""Benchmark the pair pipeline: pairs per second delivered by `tf.data` (`make bench-data`).

    python tools/bench_data.py --out bench/data.json

Synthetic volumes at 160x192 (the neurite-OASIS slice) and 128^3, streamed as all ordered
pairs, batch 1, with and without augmentation (rotation 10 degrees, flip, gamma, noise).
Compares with the model's training-step rate from bench/model.json when present (the data
side should deliver at least 10x the pairs the model consumes). Writes JSON and markdown.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

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
    args = parser.parse_args()
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
    lines = [f"Machine: {machine}", "", "| shape | augmentation | pairs/s | model steps/s | "
             "data / model |", "|---|---|---|---|---|"]
    for r in rows:
        model = f"{r['model_steps_per_s']:.2f}" if r["model_steps_per_s"] else "n/a"
        ratio = f"{r['ratio']:.1f}x" if r["ratio"] else "n/a"
        lines.append(f"| {'x'.join(map(str, r['shape']))} | {r['augmentation']} | "
                     f"{r['pairs_per_s']:.1f} | {model} | {ratio} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine, "results": rows}, indent=2) + "\n")
        out.with_suffix(".md").write_text(table)


if __name__ == "__main__":
    main()

"""DeepLabv3+ xception_65 CPU inference: ours (Keras 3 on TensorFlow) beside smp + timm (PyTorch).

Both run in the same invocation, configuration by configuration, so the ratio
compares like with like on a shared machine. Prints a table and writes JSON.

    python benchmarks/inference_cpu.py --output benchmarks/results/inference_cpu.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from deeplab_xception import build_model  # noqa: E402
from deeplab_xception.budget import count_multiply_adds  # noqa: E402
from deeplab_xception.deeplab import default_atrous_rates  # noqa: E402
from deeplab_xception.inference import compiled_call  # noqa: E402
from deeplab_xception.io import write_json  # noqa: E402

PEAK_FMA_GFLOPS = 204.0  # a plain FMA loop on two cores of this machine kind


def timings(seconds):
    return {"median": float(np.median(seconds)), "min": float(min(seconds)),
            "max": float(max(seconds)), "runs": len(seconds)}


def time_ours(model, batch, size, repeats):
    run = compiled_call(model, freeze_after_pixels=0)  # the steady state
    images = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    run(images)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(run(images))
        seconds.append(time.perf_counter() - start)
    return seconds


def time_peer(python, batch, size, output_stride, repeats, threads):
    command = [python, os.path.join(os.path.dirname(__file__), "peer_smp.py"),
               "--batch", str(batch), "--size", str(size), "--output-stride", str(output_stride),
               "--rates", *map(str, default_atrous_rates(output_stride)),
               "--repeats", str(repeats), "--threads", str(threads)]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--output-strides", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed runs at batch 1; repeats / batch, at least 3, at larger batches")
    parser.add_argument("--peer-python", default=".venv-peer/bin/python",
                        help="python of an environment with benchmarks/requirements-peer.txt")
    parser.add_argument("--output", default="benchmarks/results/inference_cpu.json")
    args = parser.parse_args()
    threads = os.cpu_count()
    rows = []
    for output_stride in args.output_strides:
        model = build_model("deeplab", backbone="xception_65", output_stride=output_stride)
        blocks = count_multiply_adds(model, (args.size, args.size))
        multiply_adds = sum(exact for _, exact in blocks.values())
        for batch in args.batches:
            repeats = max(3, args.repeats // batch)
            ours = timings([s / batch for s in time_ours(model, batch, args.size, repeats)])
            row = {"output_stride": output_stride, "batch": batch, "input_size": args.size,
                   "multiply_adds_per_image": multiply_adds, "ours_seconds_per_image": ours,
                   "ours_images_per_second": 1.0 / ours["median"],
                   "ours_gflops": 2 * multiply_adds / ours["median"] / 1e9}
            row["ours_fraction_of_fma_peak"] = row["ours_gflops"] / PEAK_FMA_GFLOPS
            if os.path.exists(args.peer_python):
                peer = time_peer(args.peer_python, batch, args.size, output_stride, repeats, threads)
                row["peer_seconds_per_image"] = timings([s / batch for s in peer["seconds"]])
                row["peer_input_size"] = peer["input_size"]
                row["ratio_ours_over_peer"] = ours["median"] / row["peer_seconds_per_image"]["median"]
            rows.append(row)
            print(format_row(row), flush=True)
    report = {"machine": {"cpus": threads, "platform": platform.platform(),
                          "processor": platform.processor()},
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "rows": rows}
    write_json(args.output, report, indent=1)


def format_row(row):
    ours = row["ours_seconds_per_image"]
    text = (f"OS {row['output_stride']:2d} batch {row['batch']}: ours {ours['median']:.3f} s/img "
            f"(min {ours['min']:.3f}, max {ours['max']:.3f}), {row['ours_gflops']:.0f} GFLOP/s "
            f"= {100 * row['ours_fraction_of_fma_peak']:.0f}% of FMA peak")
    if "peer_seconds_per_image" in row:
        peer = row["peer_seconds_per_image"]
        text += (f" | smp {peer['median']:.3f} s/img (min {peer['min']:.3f}, max {peer['max']:.3f})"
                 f" | ours/smp {row['ratio_ours_over_peer']:.2f}")
    return text


if __name__ == "__main__":
    main()

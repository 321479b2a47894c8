"""Cold start of `deeplab-xception segment` on one photo: wall time and peak RSS.

`--phases` times, in one fresh process, each step of what the command does
(imports, loading the model file, building the inference function, the first
call, a second call), with the peak RSS after each.
Without it, the whole command runs `--repeats` times as a user runs it, each
a fresh process under /usr/bin/time.

    python benchmarks/cold_start.py --model xception65.keras --phases
    python benchmarks/cold_start.py --model xception65.keras --repeats 3 \
        --output benchmarks/results/cold_start.json
"""

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

START = time.perf_counter()


def peak_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_inputs(model_path, photo_path, size):
    """A random-weight xception_65 DeepLabv3+ (21 classes) and a noise photo, unless there."""
    import cv2
    import numpy as np

    if not os.path.exists(photo_path):
        rng = np.random.default_rng(0)
        cv2.imwrite(photo_path, rng.integers(0, 256, (size[0], size[1], 3)).astype("uint8"))
    if not os.path.exists(model_path):
        from large_image import write_weights

        write_weights(model_path)


def phases(model_path, photo_path, freeze_after_pixels):
    """[(phase, seconds, peak RSS GiB after it)] of one segmentation, step by step."""
    rows = []

    def mark(name, since):
        now = time.perf_counter()
        rows.append((name, now - since, peak_gib()))
        return now

    t = START
    import keras  # noqa: F401
    import tensorflow as tf  # noqa: F401
    t = mark("import tensorflow + keras", t)
    from deeplab_xception.data.preprocessing import preprocess_array
    from deeplab_xception.runtime.compiled import compiled_call
    from deeplab_xception.io import read_image
    from deeplab_xception.weights import load_model
    t = mark("import the package", t)
    model = load_model(model_path)
    t = mark("load_model (.keras)", t)
    logits = keras.Model(model.input, model.get_layer(model.LOGITS).output)
    thresholds = [] if freeze_after_pixels is None else [freeze_after_pixels] * 2
    call = compiled_call(logits, "float32", *thresholds)
    t = mark("compiled_call (build the inference function)", t)
    images = preprocess_array(read_image(photo_path)[None])
    call(images)
    t = mark("first call (tracing, graph optimization, run)", t)
    call(images)
    mark("second call (the run alone)", t)
    return rows


def command_runs(model_path, photo_path, repeats, env):
    """[(seconds, peak RSS GiB)] of the whole `segment` command, each a fresh process."""
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            command = ["/usr/bin/time", "-f", "%e %M", sys.executable, "-c",
                       "from deeplab_xception.cli import entry_point; entry_point()",
                       "segment", photo_path, "--weights", model_path, "--output-dir", out]
            result = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        seconds, kib = re.findall(r"^([\d.]+) (\d+)$", result.stderr, re.M)[-1]
        runs.append((float(seconds), int(kib) / 2**20))
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help=".keras file (written if missing)")
    parser.add_argument("--photo", default="cold_start_photo.jpg", help="written if missing")
    parser.add_argument("--size", type=int, nargs=2, default=(375, 500), metavar=("H", "W"))
    parser.add_argument("--phases", action="store_true", help="time each step in this process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", help="JSON results")
    parser.add_argument("--freeze-after-pixels", type=int, help="--phases: 0 folds and freezes at "
                        "once (the behaviour before InferenceFunction); default the package's")
    parser.add_argument("--write-inputs", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_inputs:
        return write_inputs(args.model, args.photo, args.size)
    if not (os.path.exists(args.model) and os.path.exists(args.photo)):  # in its own process
        subprocess.run([sys.executable, __file__, "--write-inputs", "--model", args.model,
                        "--photo", args.photo, "--size", *map(str, args.size)], check=True)
    if args.phases:
        rows = phases(args.model, args.photo, args.freeze_after_pixels)
        for name, seconds, peak in rows:
            print(f"{name:55s} {seconds:7.2f} s  peak RSS {peak:5.2f} GiB")
        result = {"phases": [{"phase": n, "seconds": s, "peak_rss_gib": p} for n, s, p in rows]}
    else:
        runs = command_runs(args.model, args.photo, args.repeats, dict(os.environ))
        seconds = statistics.median(s for s, _ in runs)
        peak = statistics.median(p for _, p in runs)
        print(f"segment, one {args.size[1]}x{args.size[0]} photo: median {seconds:.1f} s, "
              f"peak RSS {peak:.2f} GiB over {len(runs)} cold starts")
        result = {"runs": [{"seconds": s, "peak_rss_gib": p} for s, p in runs],
                  "median_seconds": seconds, "median_peak_rss_gib": peak}
    result.update(machine=platform.processor() or platform.machine(), cores=os.cpu_count())
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

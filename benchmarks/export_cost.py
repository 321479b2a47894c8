"""What exporting xception_65 with the procedure inside costs, and what each runtime then takes.

Part 1: `deeplab-xception export` per format, each a fresh process: wall time, peak RSS
(of that process, from wait4), file size. Part 2: one process runs `Segmenter` (what
`segment` runs) and each exported file in its runtime, alternately, on a 513x513 and a
2048x1024 image (tiles of 513, overlapping by a third: 18 tiles), and reports the
median seconds per image and each runtime's agreement with `Segmenter`'s labels.

    python benchmarks/export_cost.py --work /scratch/export --rounds 2 \
        --output benchmarks/results/export_cost.json
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
CLI = "from deeplab_xception.cli import entry_point; entry_point()"
FILES = {"saved_model": "segmenter", "onnx": "segmenter.onnx", "tflite": "segmenter.tflite"}
PROCEDURE = ["--tile", "513", "513"]
SIZES = [(513, 513), (1024, 2048)]


def cpu_model():
    with open("/proc/cpuinfo") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))


def size_of(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def export_cost(weights, work, fmt):
    """{seconds, peak_rss_gib, mib, stages} of one export in a fresh process."""
    path = os.path.join(work, FILES[fmt])
    command = [sys.executable, "-c", CLI, "export", "--weights", weights, "--format", fmt,
               "--output", path, "--overwrite", *PROCEDURE]
    env = dict(os.environ, PYTHONPATH=REPO)
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    stages = []
    for line in process.stderr:  # export: <stage>, one line each
        stages.append((round(time.perf_counter() - start, 1), line.strip()))
        print(f"  {fmt} {stages[-1][0]:7.1f} s  {line.strip()}", file=sys.stderr, flush=True)
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"export --format {fmt} failed ({status})")
    cost = {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
            "mib": round(size_of(path) / 2**20, 1), "stages": stages}
    print(f"  {fmt}: {cost['seconds']} s, peak RSS {cost['peak_rss_gib']} GiB, "
          f"{cost['mib']} MiB", file=sys.stderr, flush=True)
    return cost


def runtimes(weights, work):
    """{name: call(uint8 H x W x 3) -> uint8 labels}: Segmenter and the three files."""
    import numpy as np
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from deeplab_xception.runtime.segmenter import Segmenter
    from deeplab_xception.runtime.image_files import load_segmentation_model

    segmenter = Segmenter(load_segmentation_model(weights), tile=(513, 513))
    saved = tf.saved_model.load(os.path.join(work, FILES["saved_model"]))
    serve = saved.signatures["segment_images"]
    session = onnxruntime.InferenceSession(os.path.join(work, FILES["onnx"]))
    litert = Interpreter(os.path.join(work, FILES["tflite"]), num_threads=os.cpu_count())
    runner = litert.get_signature_runner()
    return {
        "segment (Segmenter)": lambda image: segmenter.labels(image[None])[0],
        "SavedModel (TensorFlow)": lambda image: serve(images=image[None])["labels"][0].numpy(),
        "ONNX (onnxruntime)": lambda image: session.run(["labels"], {"image": image})[0],
        "TFLite (LiteRT)": lambda image: np.asarray(runner(image=image)["labels"]),
    }


def time_runtimes(weights, work, rounds):
    import numpy as np

    calls = runtimes(weights, work)
    results = {}
    for height, width in SIZES:
        image = np.random.default_rng(0).integers(0, 256, (height, width, 3)).astype("uint8")
        times = {name: [] for name in calls}
        labels = {}
        for name, call in calls.items():  # warm-up: first calls trace and allocate
            labels[name] = call(image)
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call(image)
                times[name].append(time.perf_counter() - start)
                print(f"  {width}x{height} {name}: {times[name][-1]:.2f} s", file=sys.stderr,
                      flush=True)
        reference = labels["segment (Segmenter)"]
        results[f"{width}x{height}"] = {
            name: {"seconds": round(statistics.median(t), 2),
                   "labels_agree": round(float((labels[name] == reference).mean()), 5)}
            for name, t in times.items()}
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True, help="a folder for the model and the exports")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--formats", nargs="+", default=list(FILES))
    parser.add_argument("--skip-export", action="store_true", help="time the files already there")
    parser.add_argument("--output")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    weights = os.path.join(args.work, "xception65.keras")
    if not os.path.exists(weights):
        from large_image import write_weights

        write_weights(weights)
    report = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
              "procedure": " ".join(PROCEDURE), "load_before": os.getloadavg()}
    if not args.skip_export:
        report["export"] = {fmt: export_cost(weights, args.work, fmt) for fmt in args.formats}
    if args.rounds:
        report["per_image"] = time_runtimes(weights, args.work, args.rounds)
    report["load_after"] = os.getloadavg()
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

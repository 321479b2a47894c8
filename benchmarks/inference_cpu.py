"""DeepLabv3+ xception_65 CPU inference: ours (Keras 3 on TensorFlow) in each precision beside
smp + timm (PyTorch: eager, bf16 autocast, torch.compile) and OpenVINO on the same network.

Everything runs in the same invocation, configuration by configuration, ours
and the peers alternating (`--rounds` times, each timing every side once), so
the ratios compare like with like on a shared machine; the load average before
and after each timing is recorded beside it. GFLOP/s are set against the
float32 and bfloat16 matmul rates that the peer environment measures on the
same cores in the same run. Prints a table and writes JSON.

    python benchmarks/inference_cpu.py --output benchmarks/results/inference_cpu.json
    python benchmarks/inference_cpu.py --ours float32 bfloat16 --peers eager compile openvino-bf16
    python benchmarks/inference_cpu.py --batches 1 --rounds 2 --ours float32 --peers eager compile-f32 openvino-f32
"""

import argparse
import json
import os
import platform
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from deeplab_xception import build_model  # noqa: E402
from deeplab_xception.runtime.multiply_adds import count_multiply_adds  # noqa: E402
from deeplab_xception.models.deeplab import default_atrous_rates  # noqa: E402
from deeplab_xception.runtime.compiled import compiled_call  # noqa: E402
from deeplab_xception.io import write_json  # noqa: E402
from deeplab_xception.runtime.precision import cpu_flags, resolve_precision  # noqa: E402
from deeplab_xception.runtime.timing import timed_runs, with_trained_shifts  # noqa: E402

PEER_MODES = ("eager", "autocast", "compile", "compile-f32", "openvino-f32", "openvino-bf16")
BF16_PEERS = {"autocast", "compile", "openvino-bf16"}
ISA_FLAGS = ("avx", "fma", "amx", "vnni", "bf16")

def timings(seconds):
    return {"median": float(np.median(seconds)), "min": float(min(seconds)),
            "max": float(max(seconds)), "runs": len(seconds)}


def loadavg():
    """The 1-minute load average: how busy the shared machine was around a timing."""
    return os.getloadavg()[0]


def cpu_model(cpuinfo="/proc/cpuinfo"):
    try:
        with open(cpuinfo) as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def time_ours(run, batch, size, repeats):
    images = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    return timed_runs(run, images, repeats)


def run_peer(python, threads, repeats, *options):
    command = [python, os.path.join(os.path.dirname(__file__), "peer_smp.py"),
               "--repeats", str(repeats), "--threads", str(threads), *options]
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_peer(python, mode, batch, size, output_stride, repeats, threads):
    return run_peer(python, threads, repeats, "--mode", mode, "--batch", str(batch),
                    "--size", str(size), "--output-stride", str(output_stride),
                    "--rates", *map(str, default_atrous_rates(output_stride)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--output-strides", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed runs at batch 1; repeats / batch, at least 3, at larger batches")
    parser.add_argument("--rounds", type=int, default=1,
                        help="times every side is timed per configuration, alternating")
    parser.add_argument("--ours", nargs="+", default=["float32", "bfloat16"],
                        choices=("float32", "bfloat16"), help="our precisions to time")
    parser.add_argument("--peers", nargs="*", default=list(PEER_MODES), choices=PEER_MODES)
    parser.add_argument("--peer-python", default=".venv-peer/bin/python",
                        help="python of an environment with benchmarks/requirements-peer.txt")
    parser.add_argument("--output", default="benchmarks/results/inference_cpu.json")
    args = parser.parse_args()
    threads = os.cpu_count()
    peers = args.peers if os.path.exists(args.peer_python) else []
    flags = cpu_flags()
    report = {"machine": {"cpus": threads, "platform": platform.platform(),
                          "processor": cpu_model(),
                          "isa_flags": sorted(f for f in flags if any(k in f for k in ISA_FLAGS)),
                          "auto_precision": resolve_precision("auto")},
              "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "rows": []}
    # the bfloat16 rate only where a bfloat16 side runs: emulated, it takes minutes
    matmul = ["--mode", "matmul", "--matmul-dtypes", "float32"] + (
        ["bfloat16"] if "bfloat16" in args.ours or set(peers) & BF16_PEERS else [])
    if peers:
        report["matmul_gflops_before"] = run_peer(args.peer_python, threads, 20, *matmul)
    for output_stride in args.output_strides:
        # nonzero folded biases, as trained weights give: the fusions a trained model gets
        model = with_trained_shifts(
            build_model("deeplab", backbone="xception_65", output_stride=output_stride))
        blocks = count_multiply_adds(model, (args.size, args.size))
        multiply_adds = sum(exact for _, exact in blocks.values())
        # the steady state: folded and frozen from the start, built once per output stride
        ours = {p: compiled_call(model, p, freeze_after_pixels=0) for p in args.ours}
        for batch in args.batches:
            repeats = max(3, args.repeats // batch)
            row = {"output_stride": output_stride, "batch": batch, "input_size": args.size,
                   "multiply_adds_per_image": multiply_adds, "runs": {}}
            sides = ([(f"ours-{p}", lambda p=p: time_ours(ours[p], batch, args.size, repeats))
                      for p in args.ours]
                     + [(mode, lambda mode=mode: time_peer(
                         args.peer_python, mode, batch, args.size, output_stride, repeats,
                         threads)) for mode in peers])
            measured = {name: {"seconds": [], "rounds": []} for name, _ in sides}
            for _ in range(args.rounds):
                for name, measure in sides:
                    before = loadavg()
                    result = measure()
                    seconds = result if isinstance(result, list) else result.pop("seconds")
                    seconds = [s / batch for s in seconds]
                    measured[name]["seconds"] += seconds
                    measured[name]["rounds"].append(
                        {"median": float(np.median(seconds)), "loadavg_before": before,
                         "loadavg_after": loadavg(), **(result if isinstance(result, dict) else {})})
            for name, m in measured.items():
                run = timings(m["seconds"])
                run["gflops"] = 2 * multiply_adds / run["median"] / 1e9
                run["rounds"] = m["rounds"]
                row["runs"][name] = run
            report["rows"].append(row)
            print(format_row(row, f"ours-{report['machine']['auto_precision']}"), flush=True)
    if peers:
        report["matmul_gflops_after"] = run_peer(args.peer_python, threads, 20, *matmul)
        print("matmul GFLOP/s before, after:", report["matmul_gflops_before"]["gflops"],
              report["matmul_gflops_after"]["gflops"])
    write_json(args.output, report, indent=1)


def format_row(row, auto):
    """One line per configuration; the ratio is ours as `auto` runs it over the fastest peer."""
    runs = row["runs"]
    cells = [f"OS {row['output_stride']:2d} batch {row['batch']}:"]
    for name, run in runs.items():
        cells.append(f"{name} {run['median']:.3f} s/img ({run['gflops']:.0f} GFLOP/s)")
    peers = [(r["median"], n) for n, r in runs.items() if not n.startswith("ours")]
    if peers and auto in runs:
        fastest, name = min(peers)
        cells.append(f"{auto} / {name} {runs[auto]['median'] / fastest:.2f}")
    return " | ".join(cells)


if __name__ == "__main__":
    main()

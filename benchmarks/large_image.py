"""Peak memory and time of `segment` on one 12-megapixel photo (4032 x 3024), xception_65.

Writes a generated photo (smooth color fields, edges and noise, JPEG) and an
xception_65 DeepLabv3+ with random weights in the official layout (or takes
`--weights`), then runs `deeplab-xception segment` in a fresh process per
configuration under `/usr/bin/time -f %M` (peak RSS) and times it. `--before`
runs the same commands with another checkout of the package on PYTHONPATH
(e.g. a `git worktree` of the previous release), to compare.

    python benchmarks/large_image.py --configs os16 os8-multiscale
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "os16": ["--output-stride", "16"],
    "os8-multiscale": ["--output-stride", "8", "--scales", "0.5", "0.75", "1", "1.25", "1.5",
                       "1.75", "--flip"],
}
CLI = "from deeplab_xception.cli import entry_point; entry_point()"


def write_photo(path, height=3024, width=4032, seed=0):
    """A photo-like JPEG: blurred color fields with sharp-edged shapes and sensor noise."""
    import cv2

    rng = np.random.default_rng(seed)
    fields = cv2.resize(rng.uniform(0, 255, (12, 16, 3)).astype(np.float32), (width, height),
                        interpolation=cv2.INTER_CUBIC)
    for _ in range(40):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.circle(fields, center, int(rng.integers(50, 600)), color, -1)
    photo = np.clip(fields + rng.normal(0, 6, fields.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(path, photo, [cv2.IMWRITE_JPEG_QUALITY, 92])


WRITE_WEIGHTS = """
import sys
import numpy as np
from deeplab_xception import build_model
model = build_model("deeplab", backbone="xception_65", num_classes=21)
rng = np.random.default_rng(0)
for w in model.weights:
    value = rng.normal(0.0, 0.05, w.shape)
    if "variance" in w.path:
        value = 1.0 + np.abs(value)
    w.assign(value.astype("float32"))
model.save(sys.argv[1])
"""


def write_weights(path):
    """In a process of its own, so that the model's memory is not held during the runs."""
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", WRITE_WEIGHTS, path], env=env, check=True)


def measure(checkout, photo, weights, extra, output_dir, timeout=None):
    """(peak RSS in GiB, wall seconds, CPU seconds, exit status) of one `segment` run; a run
    stopped at `timeout` seconds exits 124 and reports the peak it reached."""
    env = dict(os.environ, PYTHONPATH=checkout, TF_CPP_MIN_LOG_LEVEL="3")
    limit = ["timeout", str(timeout)] if timeout else []
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        command = ["/usr/bin/time", "-f", "%M %U %S", "-o", report.name, *limit, sys.executable, "-c", CLI,
                   "segment", photo, "--weights", weights, "--output-dir", output_dir, *extra]
        start = time.perf_counter()
        status = subprocess.run(command, env=env).returncode
        seconds = time.perf_counter() - start
        peak_kib, user, system = report.read().split()[-3:]
    return int(peak_kib) / 2**20, seconds, float(user) + float(system), status


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["os16"])
    parser.add_argument("--before", metavar="CHECKOUT",
                        help="also run each configuration with this checkout of the package")
    parser.add_argument("--size", type=int, nargs=2, default=(3024, 4032), metavar=("H", "W"),
                        help="the generated photo's size (default 3024 4032, 12 megapixels)")
    parser.add_argument("--timeout", type=int, help="stop each run after this many seconds")
    parser.add_argument("--weights", help="a .keras xception_65 DeepLab (default: random weights)")
    parser.add_argument("--work-dir", default=None, help="where the photo, weights and outputs go")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further segment options, e.g. --tile off")
    parser.add_argument("--output", default="benchmarks/results/large_image.json")
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="large-image-")
    os.makedirs(work, exist_ok=True)
    photo = os.path.join(work, f"photo-{args.size[1]}x{args.size[0]}.jpg")
    if not os.path.exists(photo):
        write_photo(photo, *args.size)
    weights = args.weights or os.path.join(work, "xception65_random.keras")
    if not os.path.exists(weights):
        write_weights(weights)
    checkouts = {"after": REPO, **({"before": args.before} if args.before else {})}
    rows = []
    for config in args.configs:
        for label, checkout in checkouts.items():
            peak, seconds, cpu, status = measure(checkout, photo, weights, CONFIGS[config] + args.extra,
                                            os.path.join(work, f"out-{label}-{config}"),
                                            args.timeout)
            rows.append({"config": config, "code": label, "options": CONFIGS[config] + args.extra,
                         "peak_rss_gib": peak, "seconds": seconds, "cpu_seconds": cpu,
                         "exit_status": status})
            print(f"{config:<16} {label:<7} peak RSS {peak:6.2f} GiB  {seconds:8.1f} s  "
                  f"CPU {cpu:8.1f} s  exit {status}", flush=True)
    sys.path.insert(0, REPO)
    from deeplab_xception.io import write_json

    write_json(args.output, {"image": f"{args.size[1]}x{args.size[0]} JPEG", "timeout": args.timeout, "model": "xception_65 DeepLabv3+, 21 classes",
                             "runs": rows}, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

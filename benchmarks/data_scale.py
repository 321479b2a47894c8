"""Scale drill: fine-tuning, evaluation and conversion straight from full-size dataset folders.

Generates a VOC-layout folder (500x375 JPEG photos) or a Cityscapes-layout one
(2048x1024 PNG) of random-ish content and, for each N, runs the README's
`finetune` command (xception_tiny, 3 steps), `evaluate` and
`records` as subprocesses under `/usr/bin/time -f %M`,
recording peak RSS, wall time, time to the first training step, and the
input pipeline's images/s alone (training augmentation at the config's crop,
no model). `--checkout` picks the source tree the commands run from, so one
script measures two versions side by side:

    python benchmarks/data_scale.py --layout voc --sizes 30 100 300 --work-dir drill \
        --checkout . --output voc.json
    python benchmarks/data_scale.py --layout cityscapes --parameter-server 300 ...
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from deeplab_xception.data.classes import bit_palette  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYOUTS = {"voc": ((375, 500), ".jpg"), "cityscapes": ((1024, 2048), ".png")}
FINETUNE_STEPS = 3
PIPELINE_BATCHES = 6
PIPELINE_BATCH = 8

PIPELINE_PROBE = """
import sys, time
from deeplab_xception.segment.datasets import load_dataset
from deeplab_xception.segment import pipeline
from deeplab_xception.segment.config import SegmentConfig
from deeplab_xception.config import load_config
config = load_config(SegmentConfig, sys.argv[1], sys.argv[2:])
data = config.data
dataset = load_dataset(data.format, data.root, data.train_split)
batches = iter(pipeline.train_dataset(dataset, {batch}, tuple(data.crop_size), data.min_scale,
                                      data.max_scale, data.scale_step, data.flip))
next(batches)
start = time.perf_counter()
for _ in range({count}):
    next(batches)
print("IMAGES_PER_SECOND", {count} * {batch} / (time.perf_counter() - start))
"""


def random_scene(rng, size):
    """A smooth gradient, blobs and noise (compresses like a photo, not like noise), and its
    label of class ids drawn over the same blobs."""
    height, width = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3) + (x / width)[..., None] * rng.uniform(-60, 60, 3)
    image = base + (y / height)[..., None] * rng.uniform(-60, 60, 3)
    label = np.zeros(size, np.uint8)
    for _ in range(6):
        cy, cx = int(rng.integers(0, height)), int(rng.integers(0, width))
        axes = (int(rng.integers(width // 20, width // 5)), int(rng.integers(height // 20, height // 5)))
        value = int(rng.integers(1, 20))
        cv2.ellipse(label, (cx, cy), axes, 0, 0, 360, value, -1)
        color = rng.uniform(0, 255, 3)
        image[label == value] = color
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    return image, label


def write_folder(root, layout, count, unique=10, seed=0):
    """`count` examples in `layout`, `unique` distinct scenes copied round (file sizes and
    decoding costs are what matter here); split files (VOC) or split folders of links
    (Cityscapes) named train_<N> and val_<N> then take the first N."""
    rng = np.random.default_rng(seed)
    size, ext = LAYOUTS[layout]
    names = [f"{i:06d}" for i in range(count)]
    for index, name in enumerate(names):
        if layout == "voc":
            image_path = os.path.join(root, "JPEGImages", name + ext)
            label_path = os.path.join(root, "SegmentationClass", name + ".png")
        else:
            image_path = os.path.join(root, "leftImg8bit", "all", "city", f"city_{name}_leftImg8bit.png")
            label_path = os.path.join(root, "gtFine", "all", "city", f"city_{name}_gtFine_labelIds.png")
        if os.path.exists(label_path):
            continue
        os.makedirs(os.path.dirname(image_path), exist_ok=True)
        os.makedirs(os.path.dirname(label_path), exist_ok=True)
        if index >= unique:
            source = names[index % unique]
            shutil.copyfile(image_path.replace(name, source), image_path)
            shutil.copyfile(label_path.replace(name, source), label_path)
            continue
        image, label = random_scene(rng, size)
        cv2.imwrite(image_path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if layout == "voc":  # palette PNGs in VOC's colors, as SegmentationClass holds them
            indexed = Image.fromarray(label, mode="P")
            indexed.putpalette(bit_palette(256).flatten().tolist())
            indexed.save(label_path)
        else:  # train ids 0..18 as Cityscapes label ids
            label_ids = np.array([7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31,
                                  32, 33, 0], np.uint8)
            cv2.imwrite(label_path, label_ids[np.minimum(label, 19)])
    return names


def make_split(root, layout, names, split):
    if layout == "voc":
        folder = os.path.join(root, "ImageSets", "Segmentation")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{split}.txt"), "w") as f:
            f.write("".join(name + "\n" for name in names))
        return
    for part, suffix in (("leftImg8bit", "_leftImg8bit.png"), ("gtFine", "_gtFine_labelIds.png")):
        folder = os.path.join(root, part, split, "city")
        os.makedirs(folder, exist_ok=True)
        for name in names:
            link = os.path.join(folder, f"city_{name}{suffix}")
            if not os.path.exists(link):
                os.symlink(os.path.join(root, part, "all", "city", f"city_{name}{suffix}"), link)


def timed(command, env, first_step=None):
    """(peak RSS GiB, wall s, seconds to the first line matching `first_step`, output tail)."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.time()
        process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss.name, *command],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        first, tail = None, []
        buffer = b""
        while True:
            chunk = process.stdout.read1(65536) if hasattr(process.stdout, "read1") else b""
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = re.split(rb"[\r\n]", buffer)
            for line in lines:
                text = re.sub(r"\x1b\[[0-9;]*m", "", line.decode(errors="replace"))
                if first is None and first_step and re.match(first_step, text.strip()):
                    first = time.time() - start
                if text.strip():
                    tail = (tail + [text])[-6:]
        code = process.wait()
        wall = time.time() - start
        peak = int(rss.read().strip().splitlines()[-1]) / 2**20
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n" + "\n".join(tail))
    return peak, wall, first, tail


def run_size(args, root, layout, count, env):
    config = f"segment_{layout}.yaml"  # shipped with the package, found by name
    train_split, val_split = f"train_{count}", f"val_{count}"
    overrides = [f"data.root={root}", f"data.train_split={train_split}", f"data.val_split={val_split}",
                 "model.backbone=xception_tiny", "init.weights=''",
                 f"trainer.train_steps={FINETUNE_STEPS}", "trainer.batch_size_per_replica=2",
                 "trainer.summary_every=1"]
    row = {"n": count}
    with tempfile.TemporaryDirectory(dir=args.work_dir) as scratch:
        model_dir = os.path.join(scratch, "run")
        cli = [sys.executable, "-c", "from deeplab_xception.cli import entry_point; entry_point()"]
        peak, wall, first, _ = timed(
            [*cli, "finetune", "--config", config, *overrides, f"trainer.model_dir={model_dir}"],
            env, first_step=rf"1/{FINETUNE_STEPS}\b")
        row["finetune"] = {"peak_rss_gib": peak, "wall_s": wall, "first_step_s": first}
        if args.evaluate:
            peak, wall, _, _ = timed(
                [*cli, "evaluate", "--weights", os.path.join(model_dir, "model.keras"), "--format",
                 layout, "--data", root, "--split", val_split, "--output-dir",
                 os.path.join(scratch, "eval")], env)
            row["evaluate"] = {"peak_rss_gib": peak, "wall_s": wall, "images_per_s": count / wall}
        if args.records:
            peak, wall, _, _ = timed(
                [*cli, "records", "--format", layout, "--data", root, "--split", train_split,
                 "--output-dir", os.path.join(scratch, "records")], env)
            row["records"] = {"peak_rss_gib": peak, "wall_s": wall, "images_per_s": count / wall}
    return _with_pipeline_rate(row, config, overrides, env)


def _with_pipeline_rate(row, config, overrides, env):
    """`row` with the input pipeline's training images/s alone (no model)."""
    probe = PIPELINE_PROBE.format(batch=PIPELINE_BATCH, count=PIPELINE_BATCHES)
    peak, wall, _, tail = timed([sys.executable, "-c", probe, config, *overrides], env)
    rate = float(next(line.split()[1] for line in tail if line.startswith("IMAGES_PER_SECOND")))
    row["pipeline"] = {"peak_rss_gib": peak, "images_per_s": rate}
    return row


def run_parameter_server(args, root, layout, count, env):
    """Fine-tuning from the folder on a local cluster (2 workers, 1 parameter server)."""
    config = f"segment_{layout}.yaml"  # shipped with the package, found by name
    with tempfile.TemporaryDirectory(dir=args.work_dir) as scratch:
        command = [sys.executable, "-c", "from deeplab_xception.cli import entry_point; entry_point()",
                   "finetune", "--config", config, f"data.root={root}",
                   f"data.train_split=train_{count}", "model.backbone=xception_tiny",
                   "init.weights=''", f"trainer.train_steps={FINETUNE_STEPS}",
                   "trainer.batch_size_per_replica=2", "trainer.summary_every=1",
                   "trainer.strategy=parameter_server", f"trainer.model_dir={scratch}/run"]
        launch = ("import sys; from deeplab_xception.training import launcher; "
                  "sys.exit(launcher.run(sys.argv[1:], 'workers=2,ps=1', 'parameter_server'))")
        peak, wall, first, tail = timed([sys.executable, "-c", launch, *command], env,
                                        first_step=rf"1/{FINETUNE_STEPS}\b")
        return {"n": count, "chief_peak_rss_gib": peak, "wall_s": wall, "first_step_s": first,
                "model_written": os.path.isfile(f"{scratch}/run/model.keras")}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=sorted(LAYOUTS), required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=(30, 100, 300))
    parser.add_argument("--work-dir", required=True, help="where the folders are generated (kept)")
    parser.add_argument("--checkout", default=REPO, help="the source tree the commands run from")
    parser.add_argument("--no-evaluate", dest="evaluate", action="store_false")
    parser.add_argument("--no-records", dest="records", action="store_false")
    parser.add_argument("--parameter-server", type=int, metavar="N",
                        help="instead: fine-tune from N images with the parameter-server strategy")
    parser.add_argument("--output", help="JSON results file")
    args = parser.parse_args()
    root = os.path.join(args.work_dir, layout_folder := f"{args.layout}_layout")
    count = args.parameter_server or max(args.sizes)
    start = time.time()
    names = write_folder(root, args.layout, count)
    print(f"{layout_folder}: {count} examples ready in {time.time() - start:.0f} s", flush=True)
    env = {**os.environ, "PYTHONPATH": os.path.abspath(args.checkout), "TF_CPP_MIN_LOG_LEVEL": "2",
           "KERAS_BACKEND": "tensorflow"}
    results = {"layout": args.layout, "checkout": os.path.abspath(args.checkout), "rows": []}
    sizes = [args.parameter_server] if args.parameter_server else args.sizes
    for n in sizes:
        make_split(root, args.layout, names[:n], f"train_{n}")
        make_split(root, args.layout, names[:n], f"val_{n}")
    for n in sizes:
        row = (run_parameter_server(args, root, args.layout, n, env) if args.parameter_server
               else run_size(args, root, args.layout, n, env))
        print(json.dumps(row), flush=True)
        results["rows"].append(row)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

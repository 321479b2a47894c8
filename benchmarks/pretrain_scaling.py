"""Asynchronous pretraining throughput on this machine, from 1 to N workers, as JSON.

Each point is a local parameter-server cluster (1 chief, N workers, 1 PS)
running the shipped pretrain_tiny.yaml; throughput is the median of the chief's
`images_per_second` summaries after the first (which includes tracing); the
scheduling gap is the time the chief's loop waited to read summaries' losses,
per 100 steps (its `summary_wait_seconds`). It also records the parameter bytes
of the paper's xception_65 classifier, from
which docs/pretraining.md derives the PS capacity of the 50-worker job.

    python benchmarks/pretrain_scaling.py --workers 1 2 3 --steps 60
"""

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile

import tensorflow as tf

from deeplab_xception import build_model
from deeplab_xception.io import write_json
from deeplab_xception.training.launcher import LocalCluster, cluster_layout
from deeplab_xception.pretrain import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summaries(model_dir, tag):
    values = []
    for path in sorted(glob.glob(os.path.join(model_dir, "train", "events*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            values += [float(tf.make_ndarray(v.tensor)) for v in event.summary.value
                       if v.tag == tag]
    return values


def run_point(workers, steps, batch, image_size, shapes, root):
    model_dir = os.path.join(root, f"workers_{workers}")
    command = [sys.executable, "-c", "from deeplab_xception.cli import entry_point; entry_point()",
               "pretrain", "--config", "pretrain_tiny.yaml",
               "trainer.strategy=parameter_server", f"trainer.model_dir={model_dir}",
               f"data.train={shapes['train']}", f"data.eval={shapes['eval']}", "data.synthetic=false",
               f"data.image_size={image_size}", f"trainer.train_steps={steps}",
               f"trainer.batch_size_per_replica={batch}", f"trainer.summary_every={max(steps // 6, 1)}",
               f"trainer.checkpoint_every={steps}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    with LocalCluster(command, cluster_layout(workers, 1), env=env) as job:
        if job.wait() != 0:
            raise SystemExit(f"the {workers}-worker run failed")
    interval = max(steps // 6, 1)
    waits = summaries(model_dir, "summary_wait_seconds")[1:-1]  # not tracing, not the final join
    return (statistics.median(summaries(model_dir, "images_per_second")[1:]),
            sum(waits) / (len(waits) * interval) * 100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results",
                                                      "pretrain_scaling.json"))
    args = parser.parse_args()
    paper_model = build_model("classifier", backbone="xception_65")
    results = {
        "machine": {"cpus": os.cpu_count()},
        "run": {"backbone": "xception_tiny", "image_size": args.image_size,
                "batch_per_worker": args.batch, "steps": args.steps, "ps": 1},
        "xception_65_classifier": {
            "trainable_parameters": sum(int(w.numpy().size) for w in paper_model.trainable_weights),
            "parameter_bytes": sum(int(w.numpy().nbytes) for w in paper_model.weights)},
        "points": [],
    }
    with tempfile.TemporaryDirectory() as root:
        shapes = synthetic.write_tfrecords(os.path.join(root, "data"), train_images=256,
                                           eval_images=16, image_size=args.image_size)
        for workers in args.workers:
            total, waits = run_point(workers, args.steps, args.batch, args.image_size, shapes, root)
            results["points"].append({"workers": workers, "images_per_second": total,
                                      "per_worker": total / workers,
                                      "summary_wait_seconds_per_100_steps": waits})
            print(json.dumps(results["points"][-1]), flush=True)
    base = results["points"][0]["per_worker"]
    for point in results["points"]:
        point["scaling_efficiency"] = point["per_worker"] / base
    write_json(args.out, results, indent=1)
    print(f"\n{'workers':>7} {'images/s':>9} {'per worker':>10} {'efficiency':>10} {'wait/100':>8}")
    for point in results["points"]:
        print(f"{point['workers']:>7} {point['images_per_second']:>9.1f} {point['per_worker']:>10.1f} "
              f"{point['scaling_efficiency']:>10.2f} "
              f"{point['summary_wait_seconds_per_100_steps']:>8.2f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

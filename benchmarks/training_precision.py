"""Seconds per training step of the package's loop in each `trainer.dtype_policy`, as JSON.

For the pretraining and the segmentation configs (as in training_overhead.py:
the application's own task, its data one random batch held in memory), runs
`train()` once per dtype policy, in the order given, `--rounds` times over, so
drifts in machine load fall on every policy alike. A step's time is the
difference between the wall times of consecutive `loss` summaries; the first
`--warmup` steps (tracing) are dropped. Reports the median per policy and
its ratio to float32.

    python benchmarks/training_precision.py --rounds 2 --warmup 2 --steps 4
"""

import argparse
import contextlib
import io
import os
import platform
import statistics
import tempfile

import keras
import tensorflow as tf

from deeplab_xception.io import write_json
from deeplab_xception.training import TrainerConfig, train
from deeplab_xception.training.config import DTYPE_POLICIES

from training_overhead import DEFAULTS, InMemoryTask, loop_step_times, make_batch, make_task


def step_times(application, backbone, size, batch, dtype_policy, warmup, steps):
    task, defaults = make_task(application, backbone, size)
    task.config.trainer.dtype_policy = dtype_policy
    with tempfile.TemporaryDirectory(prefix="precision-") as model_dir:
        config = TrainerConfig(
            model_dir=model_dir, train_steps=warmup + steps, batch_size_per_replica=batch,
            optimizer=defaults.optimizer, learning_rate=defaults.learning_rate,
            examples_per_epoch=defaults.examples_per_epoch or 1281167,
            weight_decay=defaults.weight_decay, summary_every=1, checkpoint_every=warmup + steps,
            keep_checkpoints=1, dtype_policy=dtype_policy)
        with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
            train(InMemoryTask(task, make_batch(application, size, batch)), config)
        walls, _ = loop_step_times(model_dir)
    return [walls[s] for s in sorted(walls) if s > warmup]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=sorted(DEFAULTS), default=["pretrain", "segment"])
    parser.add_argument("--dtype-policy", nargs="+", choices=DTYPE_POLICIES,
                        default=list(DTYPE_POLICIES))
    parser.add_argument("--backbone", default="xception_65")
    parser.add_argument("--pretrain-batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "training_precision.json"))
    args = parser.parse_args()
    results = []
    for application in args.config:
        _, size, batch = DEFAULTS[application]
        batch = args.pretrain_batch if application == "pretrain" else batch
        times = {p: [] for p in args.dtype_policy}
        for _ in range(args.rounds):
            for policy in args.dtype_policy:
                times[policy] += step_times(application, args.backbone, size, batch, policy,
                                            args.warmup, args.steps)
                print(f"[{application}] {policy}: {statistics.median(times[policy]):.3f} s/step",
                      flush=True)
        medians = {p: statistics.median(t) for p, t in times.items()}
        results.append({"config": application, "backbone": args.backbone, "image_size": size,
                        "batch": batch, "median_s": medians, "all_s": times,
                        "ratio_to_float32": {p: m / medians["float32"] for p, m in medians.items()}
                        if "float32" in medians else None})
    print(f"\n{'config':<9} {'dtype_policy':<15} {'s/step':>7} {'img/s':>7} {'vs float32':>10}")
    for r in results:
        for p, m in r["median_s"].items():
            ratio = r["ratio_to_float32"][p] if r["ratio_to_float32"] else float("nan")
            print(f"{r['config']:<9} {p:<15} {m:>7.3f} {r['batch'] / m:>7.2f} {ratio:>10.2f}")
    write_json(args.out, {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                          "tensorflow": tf.__version__, "keras": keras.__version__,
                          "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

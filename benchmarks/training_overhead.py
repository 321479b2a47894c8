"""Overhead of the package's training loop against a bare `tf.function` step, as JSON.

Two configurations, each on one process with the default strategy:

- pretrain: `pretrain.task.ClassificationTask` (classifier, 1001 classes);
- segment: `segment.task.SegmentationTask` (DeepLabv3+, 21 classes, OS 16).

"ours" is `deeplab_xception.training.train(task, config)` itself, unchanged,
with the task's `train_dataset` replaced by one random batch held in memory
(`Dataset.from_tensors(batch).repeat()`), so no decoding or augmentation is
timed. Its seconds per step are the differences between the wall times of
consecutive `loss` summaries (`summary_every=1`): one full iteration of the
loop, the step and its per-step bookkeeping included. The first `--warmup`
steps (tracing included) are dropped; the final checkpoint and model save,
after the loop, are not timed.

"bare" builds the same model (same task, same seed), the same SGD with the
same momentum, and runs a plain `tf.function` on the same in-memory tensors:
forward pass, the task's loss plus the same L2 weight decay, gradients and
`apply_gradients`, then reads the loss back. The learning rate is a constant.

What remains between the two is the loop itself: reading the batch from a
`tf.data` iterator inside the step, `strategy.run` / `strategy.reduce`, the
learning-rate schedule and the step counter in the graph, and the Python loop
with its per-step summaries. The loop cannot be interleaved step by step with
the bare step, so the bare steps run in two halves, before and after the
trainer's run (bare, ours, bare), to share any drift in machine load. The
second half starts with one untimed step: the first bare step after the
trainer's run is several times slower (its cached kernels were evicted).

    python benchmarks/training_overhead.py --warmup 2 --steps 8
"""

import argparse
import contextlib
import glob
import io
import os
import platform
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from deeplab_xception.io import write_json
from deeplab_xception.training import TrainerConfig, train
from deeplab_xception.training.optimization import decayed_kernels, weight_decay

DEFAULTS = {  # backbone, image size, batch
    "pretrain": ("xception_65", 299, 32),
    "segment": ("xception_65", 257, 4),
}
NUM_SEG_CLASSES = 21


def make_task(application, backbone, size):
    """The application's own task, its data replaced by nothing (train_dataset is overridden)."""
    if application == "pretrain":
        from deeplab_xception.pretrain.config import PretrainConfig
        from deeplab_xception.pretrain.task import ClassificationTask
        config = PretrainConfig()
        config.model.backbone = backbone
        config.data.image_size = size
        task = ClassificationTask.__new__(ClassificationTask)  # skips the data check
        task.config = config
        return task, config.trainer
    from deeplab_xception.segment.config import SegmentConfig
    from deeplab_xception.segment.task import SegmentationTask
    config = SegmentConfig()
    config.model.backbone = backbone
    config.model.output_stride = 16
    config.data.crop_size = (size, size)
    task = SegmentationTask.__new__(SegmentationTask)  # skips loading a dataset from disk
    task.config = config
    task.classes = tuple(f"class_{i}" for i in range(NUM_SEG_CLASSES))
    return task, config.trainer


def make_batch(application, size, batch, seed=0):
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    if application == "pretrain":
        labels = tf.constant(rng.integers(1, 1001, (batch,)).astype(np.int32))
    else:
        labels = tf.constant(rng.integers(0, NUM_SEG_CLASSES, (batch, size, size)).astype(np.int32))
    return images, labels


class InMemoryTask:
    """Delegates model and loss to `task`; the training data is one batch, repeated."""

    def __init__(self, task, batch):
        self.task, self.batch = task, batch

    def build_model(self):
        return self.task.build_model()

    def loss(self, labels, outputs):
        return self.task.loss(labels, outputs)

    def train_dataset(self, input_context, batch_size):
        assert batch_size == int(self.batch[0].shape[0])
        return tf.data.Dataset.from_tensors(self.batch).repeat()


def bare_stepper(task, trainer_config, seed):
    keras.utils.set_random_seed(seed)
    model = task.build_model()
    optimizer = keras.optimizers.SGD(learning_rate=trainer_config.learning_rate.initial,
                                     momentum=trainer_config.optimizer.momentum,
                                     nesterov=trainer_config.optimizer.nesterov)
    optimizer.build(model.trainable_variables)
    kernels = decayed_kernels(model)

    @tf.function
    def step(images, labels):
        with tf.GradientTape() as tape:
            loss = task.loss(labels, model(images, training=True))
            total = loss + weight_decay(kernels, trainer_config.weight_decay)
        gradients = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    def timed(images, labels):
        start = time.perf_counter()
        loss = float(step(images, labels))
        return time.perf_counter() - start, loss
    return timed


def loop_step_times(model_dir):
    """Seconds between consecutive `loss` summaries, and the trainer's own images/s."""
    walls, rates = {}, {}
    for path in sorted(glob.glob(os.path.join(model_dir, "train", "events*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "loss":
                    walls[event.step] = event.wall_time
                elif value.tag == "images_per_second":
                    rates[event.step] = float(tf.make_ndarray(value.tensor))
    steps = sorted(walls)
    return ({s: walls[s] - walls[p] for p, s in zip(steps, steps[1:])}, rates)


def summary(times, batch):
    median = statistics.median(times)
    return {"median_s": median, "min_s": min(times), "max_s": max(times),
            "images_per_second": batch / median, "steps": len(times), "all_s": times}


def run_config(application, backbone, size, batch, warmup, steps, seed):
    task, trainer_defaults = make_task(application, backbone, size)
    data = make_batch(application, size, batch, seed)
    print(f"[{application}] {backbone} {size}x{size} batch {batch}: bare warm-up", flush=True)
    bare = bare_stepper(task, trainer_defaults, seed)
    for _ in range(warmup):
        bare(*data)
    first_half = (steps + 1) // 2
    bare_times = [bare(*data)[0] for _ in range(first_half)]

    print(f"[{application}] ours: train() for {warmup + steps} steps", flush=True)
    with tempfile.TemporaryDirectory(prefix="overhead-") as model_dir:
        config = TrainerConfig(
            model_dir=model_dir, train_steps=warmup + steps, batch_size_per_replica=batch,
            optimizer=trainer_defaults.optimizer, learning_rate=trainer_defaults.learning_rate,
            weight_decay=trainer_defaults.weight_decay, summary_every=1,
            checkpoint_every=warmup + steps, keep_checkpoints=1, strategy="default", seed=seed)
        with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
            train(InMemoryTask(task, data), config)
        walls, rates = loop_step_times(model_dir)
    ours_times = [walls[s] for s in sorted(walls) if s > warmup]
    ours_rates = [rates[s] for s in sorted(rates) if s > warmup]

    print(f"[{application}] bare: second half", flush=True)
    bare(*data)  # untimed: the trainer's run evicted the bare step's cached oneDNN kernels
    bare_times += [bare(*data)[0] for _ in range(steps - first_half)]

    ours, bare_summary = summary(ours_times, batch), summary(bare_times, batch)
    ours["trainer_reported_images_per_second_median"] = statistics.median(ours_rates)
    return {"config": application, "backbone": backbone, "image_size": size, "batch": batch,
            "output_stride": 16 if application == "segment" else None,
            "warmup_steps": warmup, "timed_steps": steps, "ours": ours, "bare": bare_summary,
            "overhead": ours["median_s"] / bare_summary["median_s"] - 1}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=sorted(DEFAULTS), default=["pretrain", "segment"])
    parser.add_argument("--backbone", help="default: xception_65")
    parser.add_argument("--image-size", type=int, help="default: 299 (pretrain), 257 (segment)")
    parser.add_argument("--batch-size", type=int, help="default: 32 (pretrain), 4 (segment)")
    parser.add_argument("--segment-image-size", type=int,
                        help="segment crop when both configs run (default 257)")
    parser.add_argument("--segment-batch-size", type=int,
                        help="segment batch when both configs run (default 4)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                      "results", "training_overhead.json"))
    args = parser.parse_args()

    results = []
    for application in args.config:
        backbone, size, batch = DEFAULTS[application]
        both = len(args.config) > 1
        if application == "segment" and both:
            size = args.segment_image_size or size
            batch = args.segment_batch_size or batch
        else:
            size = args.image_size or size
            batch = args.batch_size or batch
        results.append(run_config(application, args.backbone or backbone, size, batch,
                                  args.warmup, args.steps, args.seed))

    print(f"\n{'config':<9} {'size':>4} {'batch':>5} {'ours s/step (min, max)':>26} "
          f"{'bare s/step (min, max)':>26} {'ours img/s':>10} {'bare img/s':>10} {'overhead':>8}")
    for r in results:
        o, b = r["ours"], r["bare"]
        print(f"{r['config']:<9} {r['image_size']:>4} {r['batch']:>5} "
              f"{o['median_s']:>8.3f} ({o['min_s']:.3f}, {o['max_s']:.3f}) "
              f"{b['median_s']:>8.3f} ({b['min_s']:.3f}, {b['max_s']:.3f}) "
              f"{o['images_per_second']:>10.2f} {b['images_per_second']:>10.2f} "
              f"{100 * r['overhead']:>7.1f}%")

    record = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "tensorflow": tf.__version__, "keras": keras.__version__,
              "strategy": "default", "results": results}
    write_json(args.out, record)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

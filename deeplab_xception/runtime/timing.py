"""Measured inference time of a model on this machine, on the path the command line runs."""

import time

import numpy as np

from deeplab_xception.runtime.compiled import compiled_call


def timed_runs(run, images, repeats):
    """Wall times of `repeats` calls of `run(images)`, after one untimed call (tracing)."""
    np.asarray(run(images))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(run(images))
        times.append(time.perf_counter() - start)
    return times


def with_trained_shifts(model, seed=0):
    """`model`, in place, with nonzero batch-norm means and offsets and conv biases, drawn
    from N(0, 0.1), as a trained model has. A fresh model's are zero, so are its folded
    biases, and TensorFlow's graph optimizer drops a zero bias and with it the fused conv +
    bias + ReLU: a fresh xception_65 times up to 1.2x slower than a trained one
    (docs/benchmarks.md). Timing-only: the weights stop being the ones it was built with."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.rsplit("/", 1)[-1] in ("moving_mean", "beta", "bias"):
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype("float32"))
    return model


def measure_seconds(model, image_size, repeats, precision="float32"):
    """(median wall time of one batch-1 prediction on the inference path the CLI uses, the
    precision it computed in)."""
    images = np.random.default_rng(0).uniform(-1, 1, (1, *image_size, 3)).astype("float32")
    run = compiled_call(model, precision, freeze_after_pixels=0)  # the steady state
    return float(np.median(timed_runs(run, images, repeats))), run.precisions

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


def measure_seconds(model, image_size, repeats, precision="float32"):
    """(median wall time of one batch-1 prediction on the inference path the CLI uses, the
    precision it computed in)."""
    images = np.random.default_rng(0).uniform(-1, 1, (1, *image_size, 3)).astype("float32")
    run = compiled_call(model, precision, freeze_after_pixels=0)  # the steady state
    return float(np.median(timed_runs(run, images, repeats))), run.precisions

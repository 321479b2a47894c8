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


def traced_kernels(function, images, runs=1):
    """TensorFlow only: ([(op type, node name, seconds)] of every kernel of `runs` traced
    session runs of the concrete `function`, after one untimed run; their wall times).
    The labels name the kernels actually run, after TF's graph optimizer fused what it
    fuses, which a `tf.function` call does not show."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(function.graph.as_graph_def(), name="")
    feed, fetch = function.inputs[0].name, function.outputs[0].name
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    kernels, walls = [], []
    with tf.compat.v1.Session(graph=graph) as session:
        session.run(fetch, {feed: images})
        for _ in range(runs):
            metadata = tf.compat.v1.RunMetadata()
            start = time.perf_counter()
            session.run(fetch, {feed: images}, options=options, run_metadata=metadata)
            walls.append(time.perf_counter() - start)
            for device in metadata.step_stats.dev_stats:
                for node in device.node_stats:
                    label = node.timeline_label
                    op = (label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label
                          else node.node_name)
                    kernels.append((op, node.node_name, node.all_end_rel_micros / 1e6))
    return kernels, walls


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

"""Where CPU inference time goes: per-op-type time of the frozen DeepLabv3+ graph, as JSON.

Runs the graph the CLI runs (`compiled_call`: batch norms folded, dilated
depthwise convs sharing space-to-batch, weights frozen) through a TensorFlow
session with full tracing, which records every kernel's time after
TensorFlow's graph optimizer has fused what it fuses, and sums them by op
type. `--no-fold` profiles the frozen graph without the package's batch-norm
folding, to compare, and `--per-conv-space-to-batch` the folded graph with
TensorFlow's space-to-batch around each dilated depthwise conv;
`--precision bfloat16` profiles the bfloat16 graph, each op type labeled with
the dtype it computes in (the graph's `T`), so casts and ops left in float32
show; `--static-shape` traces it for the one size, as an export does, where
TensorFlow's optimizer sees every shape. The model gets nonzero batch-norm shifts first (`with_trained_shifts`),
as trained weights have; `--fresh-weights` profiles it as built, whose zero
folded biases TensorFlow drops, and the fusions with them. Times are means over
the traced runs; shares are of the summed kernel time (one op at a time on
these two cores, so close to the wall time).

    python benchmarks/profile_inference.py --output-stride 16
"""

import argparse
import collections
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from deeplab_xception import build_model  # noqa: E402
from deeplab_xception.runtime.compiled import FrozenGraph  # noqa: E402
from deeplab_xception.runtime.folding import fold_batch_norms, inference_copy  # noqa: E402
from deeplab_xception.io import write_json  # noqa: E402
from deeplab_xception.runtime.precision import with_precision  # noqa: E402
from deeplab_xception.runtime.timing import traced_kernels, with_trained_shifts  # noqa: E402


def node_dtypes(graph_def):
    """{node name: the dtype attr T (or DstT for casts) as a name}."""
    dtypes = {}
    for node in graph_def.node:
        for attr in ("T", "DstT"):
            if attr in node.attr and node.attr[attr].type:
                dtypes[node.name] = tf.dtypes.as_dtype(node.attr[attr].type).name
                break
    return dtypes


def profile(function, images, runs):
    """({op type[dtype]: mean seconds per run}, wall times)."""
    dtypes = node_dtypes(function.graph.as_graph_def())
    kernels, walls = traced_kernels(function, images, runs)
    per_op = collections.Counter()
    for op, node, seconds in kernels:
        dtype = dtypes.get(node)
        per_op[f"{op}[{dtype}]" if dtype else op] += seconds / runs
    return per_op, walls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-fold", action="store_true", help="skip the package's batch-norm folding")
    parser.add_argument("--per-conv-space-to-batch", action="store_true",
                        help="fold, but leave each dilated depthwise conv to TensorFlow")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--fresh-weights", action="store_true",
                        help="the model as built: zero batch-norm shifts, so zero folded biases")
    parser.add_argument("--static-shape", action="store_true",
                        help="trace for the one input size, as an export does, not for every size")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--output", default="benchmarks/results/profile_inference.json")
    args = parser.parse_args()
    model = build_model("deeplab", backbone="xception_65", output_stride=args.output_stride)
    if not args.fresh_weights:
        with_trained_shifts(model)
    shared = not (args.no_fold or args.per_conv_space_to_batch)
    if args.no_fold:
        inference = model
    else:
        inference = inference_copy(model) if shared else fold_batch_norms(model)
    shape = (1, args.size, args.size, 3) if args.static_shape else (None, None, None, 3)
    function = FrozenGraph(with_precision(inference, args.precision), shape).function
    images = np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)).astype("float32")
    per_op, walls = profile(function, images, args.runs)
    total = sum(per_op.values())
    rows = [{"op": op, "seconds": seconds, "share": seconds / total}
            for op, seconds in per_op.most_common()]
    print(f"{'op':<36} {'ms':>8} {'share':>6}")
    for row in rows[:args.top]:
        print(f"{row['op']:<36} {1e3 * row['seconds']:>8.1f} {100 * row['share']:>5.1f}%")
    print(f"{'all kernels':<36} {1e3 * total:>8.1f}   wall median {1e3 * float(np.median(walls)):.1f} ms")
    report = {"output_stride": args.output_stride, "size": args.size, "folded": not args.no_fold,
              "fresh_weights": args.fresh_weights,
              "shared_space_to_batch": shared, "static_shape": args.static_shape,
              "precision": args.precision,
              "runs": args.runs, "wall_seconds": walls, "kernel_seconds": total, "ops": rows}
    write_json(args.output, report, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""Dilated depthwise convs with one space-to-batch per conv (TensorFlow's way) against one per
run of layers (`deeplab_xception.models.dilated`): xception_65 DeepLabv3+, frozen graphs, on the CPU.

Both graphs are built from the same folded model; they are timed alternately,
one image each in turn, in one process, and their logits compared (max
absolute difference, share of equal labels). Each run records its wall time
and this process's CPU time (both threads): on a machine shared with other
work the CPU time still counts the work done, where the wall time also counts
the waits for a core. Prints a line per output stride and writes JSON with
the load average before and after. `--precision bfloat16` compares the two
graphs as `compiled_call` builds them in bfloat16.

    python benchmarks/dilated_path.py --output benchmarks/results/dilated_path_epyc_avx2.json
    python benchmarks/dilated_path.py --precision bfloat16 --output benchmarks/results/dilated_path_amx_bfloat16.json
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from deeplab_xception import build_model  # noqa: E402
from deeplab_xception.models.dilated import with_shared_space_to_batch  # noqa: E402
from deeplab_xception.runtime.compiled import FrozenGraph  # noqa: E402
from deeplab_xception.runtime.folding import _FoldedAway, fold_batch_norms  # noqa: E402
from deeplab_xception.io import write_json  # noqa: E402
from deeplab_xception.runtime.precision import with_precision  # noqa: E402
from deeplab_xception.runtime.timing import with_trained_shifts  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-strides", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each graph")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--output", default="benchmarks/results/dilated_path.json")
    args = parser.parse_args()
    images = np.random.default_rng(0).uniform(-1, 1, (1, args.size, args.size, 3)).astype("float32")
    report = {"size": args.size, "repeats": args.repeats, "precision": args.precision, "rows": []}
    for output_stride in args.output_strides:
        # nonzero folded biases, as trained weights give: the fusions a trained model gets
        model = with_trained_shifts(
            build_model("deeplab", backbone="xception_65", output_stride=output_stride))
        folded = fold_batch_norms(model)
        graphs = {"per_conv": folded,
                  "shared": with_shared_space_to_batch(folded, (_FoldedAway,))}
        graphs = {name: FrozenGraph(with_precision(graph, args.precision))
                  for name, graph in graphs.items()}
        logits = {name: np.asarray(graph(images)) for name, graph in graphs.items()}
        seconds = {name: [] for name in graphs}
        cpu_seconds = {name: [] for name in graphs}
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            for name, graph in graphs.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                np.asarray(graph(images))
                seconds[name].append(time.perf_counter() - start)
                cpu_seconds[name].append(time.process_time() - start_cpu)
        medians = {name: float(np.median(s)) for name, s in seconds.items()}
        cpu = {name: float(np.median(s)) for name, s in cpu_seconds.items()}
        row = {"output_stride": output_stride, "seconds": seconds, "median": medians,
               "cpu_seconds": cpu_seconds, "cpu_median": cpu,
               "shared_over_per_conv": medians["shared"] / medians["per_conv"],
               "cpu_shared_over_per_conv": cpu["shared"] / cpu["per_conv"],
               "max_abs_logit_difference": float(np.abs(logits["shared"] - logits["per_conv"]).max()),
               "max_abs_logit": float(np.abs(logits["per_conv"]).max()),
               "equal_labels": float(np.mean(logits["shared"].argmax(-1)
                                             == logits["per_conv"].argmax(-1))),
               "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]}
        report["rows"].append(row)
        print(f"OS {output_stride}: per conv {medians['per_conv']:.3f} s, shared "
              f"{medians['shared']:.3f} s, ratio {row['shared_over_per_conv']:.3f} (CPU time "
              f"{cpu['per_conv']:.2f}, {cpu['shared']:.2f} s, ratio "
              f"{row['cpu_shared_over_per_conv']:.3f}); logits differ "
              f"by at most {row['max_abs_logit_difference']:.2e} (of {row['max_abs_logit']:.2f}), "
              f"labels equal {100 * row['equal_labels']:.2f}%; load {load_before:.1f} to "
              f"{row['loadavg_after']:.1f}", flush=True)
        del graphs, folded, model
    write_json(args.output, report, indent=1)


if __name__ == "__main__":
    main()

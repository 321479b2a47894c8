"""OpenVINO on the CPU: our exported ONNX segmenter in float32 (and bfloat16 where the CPU
has it) against its int8 post-training quantization by NNCF, timed alternately in one
process. Speed only.

Run in the peer environment (benchmarks/requirements-peer.txt plus nncf) on a
file from `deeplab-xception export --format onnx --input-size H W`. NNCF
calibrates on `--calibration` random uint8 images: enough to place the
quantizers and time the result, not to judge its accuracy, which needs
trained weights and real images. Prints one line and writes JSON.

    deeplab-xception export --weights x65_os8.keras --format onnx --input-size 513 513 --output runs/x65_os8.onnx
    .venv-peer/bin/python benchmarks/int8_openvino.py runs/x65_os8.onnx --output benchmarks/results/int8_openvino.json
"""

import argparse
import json
import os
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ONNX file with one fixed-size uint8 image input")
    parser.add_argument("--calibration", type=int, default=8, help="random images NNCF calibrates on")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each, alternating")
    parser.add_argument("--output", default="benchmarks/results/int8_openvino.json")
    args = parser.parse_args()
    import nncf
    import openvino

    core = openvino.Core()
    model = core.read_model(args.model)
    shape = tuple(model.inputs[0].get_shape())
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(args.calibration)]
    start = time.perf_counter()
    quantized = nncf.quantize(model, nncf.Dataset(calibration), subset_size=args.calibration)
    quantize_seconds = time.perf_counter() - start
    # int8 layers run in int8 whatever the hint; the hint sets the precision of the rest
    variants = [("float32", model, "f32"), ("int8", quantized, "f32")]
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        variants += [("bfloat16", model, "bf16"), ("int8+bfloat16", quantized, "bf16")]
    requests = {name: core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": hint})
                .create_infer_request() for name, m, hint in variants}
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    outputs = {name: [np.copy(o) for o in r.infer({0: image}).values()]
               for name, r in requests.items()}
    seconds = {name: [] for name in requests}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, request in requests.items():
            start = time.perf_counter()
            request.infer({0: image})
            seconds[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(s)) for name, s in seconds.items()}
    labels = {name: next((o for o in out if np.issubdtype(o.dtype, np.integer)), None)
              for name, out in outputs.items()}
    agreement = ({name: float(np.mean(l == labels["float32"])) for name, l in labels.items()}
                 if labels["float32"] is not None else None)
    report = {"model": os.path.basename(args.model), "input_shape": list(shape),
              "openvino": openvino.__version__, "nncf": nncf.__version__,
              "calibration_images": args.calibration, "quantize_seconds": quantize_seconds,
              "seconds": seconds, "median": medians,
              "over_float32": {name: m / medians["float32"] for name, m in medians.items()},
              "label_agreement_random_weights": agreement,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]}
    print(", ".join(f"{name} {m:.3f} s" for name, m in medians.items())
          + f" (quantized in {quantize_seconds:.0f} s); load {load_before:.1f} to "
          f"{report['loadavg_after']:.1f}")
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

"""OpenVINO on the CPU: our exported ONNX segmenter in float32 against its int8 post-training
quantization by NNCF, timed alternately in one process. Speed only.

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
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    requests = {name: core.compile_model(m, "CPU", config).create_infer_request()
                for name, m in (("float32", model), ("int8", quantized))}
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
    labels = [o for o in outputs["float32"] if o.ndim == 3]
    agreement = (float(np.mean(labels[0] == next(o for o in outputs["int8"] if o.ndim == 3)))
                 if labels else None)
    report = {"model": os.path.basename(args.model), "input_shape": list(shape),
              "openvino": openvino.__version__, "nncf": nncf.__version__,
              "calibration_images": args.calibration, "quantize_seconds": quantize_seconds,
              "seconds": seconds, "median": medians, "int8_over_float32": medians["int8"] / medians["float32"],
              "label_agreement_random_weights": agreement,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]}
    print(f"float32 {medians['float32']:.3f} s, int8 {medians['int8']:.3f} s, ratio "
          f"{report['int8_over_float32']:.2f} (quantized in {quantize_seconds:.0f} s); load "
          f"{load_before:.1f} to {report['loadavg_after']:.1f}")
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

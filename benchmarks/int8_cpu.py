"""int8 on the CPU against the package's own path: TensorFlow (`compiled_call`, float32 and
bfloat16) beside ONNX Runtime on our ONNX export (float32 and its int8 QDQ quantization)
and TFLite on our int8 export, timed alternately in one process. Speed only.

ONNX Runtime's int8 model comes from onnxruntime.quantization (static, per-channel int8
weights, uint8 activations, convs only), calibrated on `--calibration` random uint8
images: enough to place the quantizers and time the result, not to judge accuracy
(`precision_accuracy.py` does that for the TFLite file). Every side runs batch 1 at the
exports' fixed size. Prints one line per side and writes JSON.

    deeplab-xception export --weights x65_os16.keras --format onnx --input-size 513 513 --output x65_os16.onnx
    deeplab-xception export --weights x65_os16.keras --format tflite --quantize int8 --calibration-images calib --input-size 513 513 --output x65_os16_int8.tflite
    python benchmarks/int8_cpu.py --weights x65_os16.keras --onnx x65_os16.onnx --tflite x65_os16_int8.tflite --output benchmarks/results/int8_cpu.json
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def onnxruntime_sides(path, calibration, directory):
    """({name: run(uint8 image)} for the float32 file and its int8 quantization, the
    file's input shape, the seconds quantizing took)."""
    import onnxruntime
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = os.cpu_count()

    def session(model):
        return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    float32 = session(path)
    feed = float32.get_inputs()[0]
    rng = np.random.default_rng(1)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.images = iter([{feed.name: rng.integers(0, 256, feed.shape, dtype=np.uint8)}
                                for _ in range(calibration)])

        def get_next(self):
            return next(self.images, None)

    quantized = os.path.join(directory, "int8.onnx")
    start = time.perf_counter()
    quantize_static(path, quantized, Images(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"], per_channel=True)
    seconds = time.perf_counter() - start
    sides = {name: lambda image, run=run: run.run(None, {feed.name: image})
             for name, run in (("onnxruntime-float32", float32),
                               ("onnxruntime-int8", session(quantized)))}
    return sides, list(feed.shape), seconds


def tflite_side(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(path, num_threads=os.cpu_count())
    interpreter.allocate_tensors()
    feed = interpreter.get_input_details()[0]["index"]

    def run(image):
        interpreter.set_tensor(feed, image)
        interpreter.invoke()

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the .keras model the files were exported from")
    parser.add_argument("--onnx", required=True, help="its float32 ONNX export, fixed size")
    parser.add_argument("--tflite", help="its int8 TFLite export, same size")
    parser.add_argument("--calibration", type=int, default=4, help="random images to calibrate on")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of each, alternating")
    parser.add_argument("--output", default="benchmarks/results/int8_cpu.json")
    args = parser.parse_args()
    from deeplab_xception import load_model
    from deeplab_xception.data.preprocessing import preprocess_array
    from deeplab_xception.runtime.compiled import compiled_call
    from deeplab_xception.runtime.precision import cpu_flags
    from inference_cpu import ISA_FLAGS, cpu_model

    model = load_model(args.weights, kind="deeplab")
    with tempfile.TemporaryDirectory() as directory:
        sides, shape, quantize_seconds = onnxruntime_sides(args.onnx, args.calibration,
                                                           directory)
    if args.tflite:
        sides["tflite-int8"] = tflite_side(args.tflite)
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    network_input = preprocess_array(image[None].astype("float32"))
    for precision in ("float32", "bfloat16"):
        run = compiled_call(model, precision, freeze_after_pixels=0)
        sides[f"tensorflow-{precision}"] = lambda _, run=run: np.asarray(run(network_input))
    for run in sides.values():
        run(image)
    seconds = {name: [] for name in sides}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for name, run in sides.items():
            start = time.perf_counter()
            run(image)
            seconds[name].append(time.perf_counter() - start)
    medians = {name: float(np.median(s)) for name, s in seconds.items()}
    report = {"weights": os.path.basename(args.weights), "input_shape": shape,
              "processor": cpu_model(),
              "isa_flags": sorted(f for f in cpu_flags() if any(k in f for k in ISA_FLAGS)),
              "calibration_images": args.calibration, "quantize_seconds": quantize_seconds,
              "seconds": seconds, "median": medians,
              "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0]}
    for name, median in medians.items():
        print(f"{name:<20} {median:.3f} s (min {min(seconds[name]):.3f})")
    with open(args.output, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

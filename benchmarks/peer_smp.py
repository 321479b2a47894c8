"""Times segmentation_models_pytorch DeepLabV3Plus (timm tu-xception65 encoder) on the CPU.

Run by inference_cpu.py in the peer's own environment; prints one JSON line.
Modes: eager (channels-last float32), autocast (channels-last, bfloat16
autocast), compile (torch.compile with inductor freezing, bfloat16 autocast),
compile-f32 (the same in float32, the best torch.compile on CPUs without
native bfloat16),
openvino-f32 / openvino-bf16 (the same network converted to OpenVINO, with
that inference precision hint; the precision OpenVINO actually chose is
reported), matmul (the GFLOP/s of a 2048 x 2048 matmul in float32 and bfloat16
on these cores: the physical reference).
"""

import argparse
import json
import time

import torch

MODES = ("eager", "autocast", "compile", "compile-f32", "openvino-f32", "openvino-bf16", "matmul")


def network(args):
    import segmentation_models_pytorch as smp

    return smp.DeepLabV3Plus(encoder_name="tu-xception65", encoder_weights=None,
                             encoder_output_stride=args.output_stride,
                             decoder_atrous_rates=tuple(args.rates), classes=21).eval()


def timed(run, repeats):
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def torch_runner(model, images, mode):
    model = model.to(memory_format=torch.channels_last)
    images = images.contiguous(memory_format=torch.channels_last)
    if mode.startswith("compile"):
        from torch._inductor import config as inductor_config

        inductor_config.freezing = True
        model = torch.compile(model)
    bf16 = mode in ("autocast", "compile")

    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(images)
    return run, {}


def openvino_runner(model, images, mode):
    import openvino

    converted = openvino.convert_model(model, example_input=images)
    hint = "bf16" if mode == "openvino-bf16" else "f32"
    compiled = openvino.Core().compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": hint})
    request = compiled.create_infer_request()
    array = images.numpy()
    ran_in = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return (lambda: request.infer({0: array})), {"openvino": openvino.__version__,
                                                  "inference_precision": ran_in}


def matmul_rates(repeats, dtypes):
    """GFLOP/s of a 2048^3 matmul per dtype: median over `repeats` runs after a warm-up."""
    n = 2048
    rates = {}
    for dtype in (getattr(torch, name) for name in dtypes):
        a, b = torch.rand(n, n, dtype=dtype), torch.rand(n, n, dtype=dtype)
        times = timed(lambda: torch.mm(a, b), repeats)
        rates[str(dtype).split(".")[1]] = 2 * n ** 3 / sorted(times)[len(times) // 2] / 1e9
    return rates


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, default="eager")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=513)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--rates", type=int, nargs=3, default=(6, 12, 18))
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--matmul-dtypes", nargs="+", default=["float32", "bfloat16"],
                        help="for --mode matmul (bfloat16 is emulated, and slow, without AVX512_BF16)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "matmul":
        print(json.dumps({"gflops": matmul_rates(args.repeats, args.matmul_dtypes),
                          "torch": torch.__version__}))
        return
    size = -(-args.size // 16) * 16  # smp needs sizes divisible by 16: 513 runs as 528
    images = torch.rand(args.batch, 3, size, size)
    model = network(args)
    start = time.perf_counter()
    make = openvino_runner if args.mode.startswith("openvino") else torch_runner
    run, extra = make(model, images, args.mode)
    run()
    prepare = time.perf_counter() - start
    times = timed(run, args.repeats)
    print(json.dumps({"seconds": times, "input_size": size, "torch": torch.__version__,
                      "prepare_seconds": prepare, **extra}))


if __name__ == "__main__":
    main()

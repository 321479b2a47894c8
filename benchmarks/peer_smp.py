"""Times segmentation_models_pytorch DeepLabV3Plus (timm tu-xception65 encoder) on the CPU.

Run by inference_cpu.py in the peer's own environment; prints one JSON line.
"""

import argparse
import json
import time

import segmentation_models_pytorch as smp
import torch


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--output-stride", type=int, required=True)
    parser.add_argument("--rates", type=int, nargs=3, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = smp.DeepLabV3Plus(encoder_name="tu-xception65", encoder_weights=None,
                              encoder_output_stride=args.output_stride,
                              decoder_atrous_rates=tuple(args.rates), classes=21).eval()
    size = -(-args.size // 16) * 16  # smp needs sizes divisible by 16: 513 runs as 528
    images = torch.rand(args.batch, 3, size, size)
    times = []
    with torch.inference_mode():
        model(images)
        for _ in range(args.repeats):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    print(json.dumps({"seconds": times, "input_size": size, "torch": torch.__version__}))


if __name__ == "__main__":
    main()

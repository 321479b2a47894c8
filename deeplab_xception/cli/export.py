"""`deeplab-xception export`: a DeepLab model with `segment`'s procedure inside, as a
SavedModel, ONNX or TFLite file."""

import sys

from deeplab_xception.cli.options import (EXPORT_FORMATS, add_eval_options, add_overlap_option)
from deeplab_xception.errors import UserError

FLAGS = {"output": "--output", "overwrite": "--overwrite", "format": "--format",
         "scales": "--scales", "tile": "--tile", "overlap": "--overlap", "outputs": "--outputs",
         "probabilities_dtype": "--probabilities-dtype", "image_size": "--input-size", "precision": "--precision", "quantize": "--quantize",
         "calibration_images": "--calibration-images"}


def calibration_images(pattern):
    """The image paths under --calibration-images (a directory or glob pattern), or ()."""
    from deeplab_xception.runtime.image_files import find_images

    if pattern is None:
        return ()
    paths, problems = find_images([pattern])
    if problems:
        raise UserError(f"--calibration-images: {problems[0]}")
    return paths


def stage(text):
    print(f"export: {text}", file=sys.stderr, flush=True)


def run(args):
    from deeplab_xception.runtime.export import (ExportOptions, check_request, check_target,
                                                 export, require_modules)
    from deeplab_xception.runtime.image_files import load_segmentation_model

    def options(align):
        return ExportOptions(args.format, args.scales, args.flip, args.tile, args.overlap,
                             args.outputs.split(","), args.probabilities_dtype, args.input_size,
                             align=align)

    # Everything checked before the minutes of loading and tracing.
    calibration = calibration_images(args.calibration_images)
    computed_in = check_request(options(args.output_stride or 16), args.precision,
                                args.quantize, calibration)
    check_target(args.output, args.format, args.overwrite)
    require_modules(args.format)
    model = load_segmentation_model(args.weights, args.output_stride)
    procedure = options(model.output_stride)
    path = export(model, args.output, args.format, procedure, precision=args.precision,
                  quantize=args.quantize, calibration_images=calibration,
                  overwrite=args.overwrite, progress=stage)
    print(f"{path}: {args.format}, {procedure.describe()}; {model.num_classes} classes, "
          f"computed in {computed_in}")


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="a segmentation model with its inference procedure, as SavedModel, "
                       "ONNX or TFLite",
        description="Writes a self-contained segmenter: one call does for one image of any size "
                    "what `segment` does with the same --scales, --flip and --tile: "
                    "preprocessing, tiles, scales, flips, softmax mean and argmax are inside. "
                    "SavedModel: 'serving_default' takes encoded images ('image_bytes', as TF "
                    "Serving's REST API sends them), 'segment_images' uint8 N x H x W x 3 "
                    "('images'); ONNX and TFLite: one uint8 H x W x 3 ('image'). Outputs: "
                    "'labels' (uint8 H x W) and, if asked, 'probabilities' (H x W x classes).")
    parser.add_argument("--weights", required=True,
                        help=".keras model, official checkpoint (prefix, directory, .tar.gz, URL) or zoo name")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--output", required=True,
                        help="the file (.onnx, .tflite) or directory (saved_model) to write; "
                             "must not exist unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous export of the same format at --output "
                             "(never a folder holding anything else)")
    add_eval_options(parser)
    add_overlap_option(parser)
    parser.add_argument("--outputs", default="labels", choices=("labels", "labels,probabilities"),
                        help="what a call returns (default labels: uint8, 1/4 the size of "
                             "float32 probabilities of one class)")
    parser.add_argument("--probabilities-dtype", choices=("float32", "float16"), default="float32",
                        help="with --outputs labels,probabilities: float16 halves their size")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="fix the input to images of H x W (default: any size); needed for "
                             "--quantize")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="what the network computes in (default float32, whatever the "
                             "exporting machine: the file runs elsewhere); bfloat16: "
                             "saved_model only, fast on CPUs with AMX or AVX512_BF16")
    parser.add_argument("--quantize", choices=("int8",),
                        help="tflite: int8 weights and activations, calibrated on "
                             "--calibration-images at --input-size")
    parser.add_argument("--calibration-images", metavar="DIR",
                        help="a directory or glob pattern of a few typical images for --quantize")
    parser.set_defaults(run=run)

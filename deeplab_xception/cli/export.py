"""`deeplab-xception export`: a DeepLab model as a SavedModel, ONNX or TFLite segmenter."""

from deeplab_xception.cli.options import EXPORT_FORMATS, OUTPUT_STRIDES, add_precision_option
from deeplab_xception.errors import UserError


def calibration_images(spec):
    """The image paths under --calibration-images (a directory or glob pattern), or ()."""
    from deeplab_xception.runtime.predict import find_images

    if spec is None:
        return ()
    paths, problems = find_images([spec])
    if problems:
        raise UserError(f"--calibration-images: {problems[0]}")
    return paths


def run(args):
    from deeplab_xception.runtime.export import check_target, export, export_precision, require_modules
    from deeplab_xception.runtime.predict import load_segmentation_model

    check_target(args.output, args.format, args.overwrite)  # before the minutes of loading
    require_modules(args.format)
    computed_in = export_precision(args.format, args.precision, args.quantize)
    calibration = calibration_images(args.calibration_images)
    model = load_segmentation_model(args.weights, args.output_stride)
    path = export(model, args.output, args.format, args.input_size, precision=args.precision,
                  quantize=args.quantize, calibration_images=calibration,
                  overwrite=args.overwrite)
    size = "x".join(map(str, args.input_size)) if args.input_size else "any size"
    print(f"{path}: {args.format}, uint8 images ({size}) -> labels and probabilities "
          f"of {model.num_classes} classes, computed in {computed_in}")


def register(subparsers):
    parser = subparsers.add_parser(
        "export", help="a segmentation model as SavedModel, ONNX or TFLite",
        description="Writes a self-contained segmenter: uint8 RGB images N x H x W x 3 in "
                    "(named 'images'), 'labels' (int32 N x H x W) and 'probabilities' "
                    "(float32 N x H x W x classes) out. Preprocessing and upsampling are inside.")
    parser.add_argument("--weights", required=True,
                        help=".keras model, official checkpoint (prefix, directory, .tar.gz, URL) or zoo name")
    parser.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    parser.add_argument("--output", required=True,
                        help="the file (.onnx, .tflite) or directory (saved_model) to write; "
                             "must not exist unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a previous export of the same format at --output "
                             "(never a folder holding anything else)")
    parser.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                        help="fix the input to one image of H x W (required for tflite; "
                             "default: any batch and size)")
    parser.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES,
                        help="backbone output stride (default: the model's)")
    add_precision_option(parser, "auto")
    parser.add_argument("--quantize", choices=("int8",),
                        help="tflite: int8 weights and activations, calibrated on "
                             "--calibration-images (uint8 image in, float32 probabilities out)")
    parser.add_argument("--calibration-images", metavar="DIR",
                        help="a directory or glob pattern of a few typical images for --quantize")
    parser.set_defaults(run=run)

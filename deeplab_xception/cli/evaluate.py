"""`deeplab-xception evaluate`: mIoU and per-class IoU of a model on a dataset split."""

from deeplab_xception.cli.options import DATASET_FORMATS, add_eval_options, add_precision_option

FLAGS = {"output_dir": "--output-dir", "scales": "--scales", "precision": "--precision",
         "output_stride": "--output-stride"}


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="mIoU, per-class IoU and confusion matrix on a segmentation dataset")
    parser.add_argument("--weights", required=True,
                        help="a DeepLab model.keras, an official DeepLab checkpoint or a zoo name")
    parser.add_argument("--data", required=True, help="the dataset's root folder")
    parser.add_argument("--format", default="generic", choices=DATASET_FORMATS,
                        help="the dataset's layout (default generic: images/, masks/, "
                             "classes.txt and a <split>.txt list of names)")
    parser.add_argument("--split", default="val",
                        help="the split to evaluate, as the format names it (default val)")
    parser.add_argument("--categories", default="",
                        help="COCO only: comma-separated category names (classes 1..K)")
    add_eval_options(parser)
    add_precision_option(parser, "float32")
    parser.add_argument("--eval-crop-size", nargs="+", metavar=("H|none", "W"),
                        help="two sizes H W, or none. Pads each image to H x W (mean pixel, "
                             "label 255), runs, crops back, as "
                             "the official eval does; 'none': each image at its own size. Default: "
                             "the zoo entry's crop, else the format's (voc 513 513, cityscapes "
                             "1025 2049), else none. Larger images run at their own size")
    parser.add_argument("--output-dir", required=True,
                        help="where report.json, per_class_iou.txt and confusion_matrix.png go")
    parser.set_defaults(run=run)


def eval_crop_size(values, weights, format):
    """(height, width) or None from --eval-crop-size, the zoo entry or the dataset format."""
    from deeplab_xception.data.classes import EVAL_CROP_SIZES
    from deeplab_xception.errors import UserError
    from deeplab_xception.weights.zoo import ZOO

    if values is None:
        zoo = ZOO.get(weights)
        return (zoo and zoo.crop_size) or EVAL_CROP_SIZES.get(format)
    if [v.lower() for v in values] == ["none"]:
        return None
    if len(values) != 2 or not all(v.isdigit() and int(v) > 0 for v in values):
        raise UserError(f"--eval-crop-size: expected two positive integers H W or 'none', "
                        f"got {' '.join(values)}")
    return tuple(int(v) for v in values)


def run(args):
    from deeplab_xception.io import check_output_dir
    from deeplab_xception.runtime.image_files import load_segmentation_model
    from deeplab_xception.segment.datasets import load_dataset
    from deeplab_xception.segment.evaluate import evaluate, format_table
    from deeplab_xception.segment.pipeline import label_errors_reported

    check_output_dir(args.output_dir)  # before the evaluation, not after it
    crop = eval_crop_size(args.eval_crop_size, args.weights, args.format)
    dataset = load_dataset(args.format, args.data, args.split,
                           categories=tuple(c for c in args.categories.split(",") if c))
    model = load_segmentation_model(args.weights)  # never a new, untrained head
    with label_errors_reported(dataset):
        report, _ = evaluate(model, dataset, scales=args.scales, flip=args.flip,
                             output_stride=args.output_stride, output_dir=args.output_dir,
                             tile=args.tile, precision=args.precision, eval_crop_size=crop)
    print(format_table(report), end="")
    print(f"computed in {report['precision']}")

"""`deeplab-xception evaluate`: mIoU and per-class IoU of a model on a dataset split."""

from deeplab_xception.cli.options import DATASET_FORMATS, add_eval_options


def register(subparsers):
    parser = subparsers.add_parser(
        "evaluate", help="mIoU, per-class IoU and confusion matrix on a segmentation dataset")
    parser.add_argument("--weights", required=True,
                        help="a DeepLab model.keras, an official DeepLab checkpoint or a zoo name")
    parser.add_argument("--data", required=True, help="the dataset's root folder")
    parser.add_argument("--format", default="generic", choices=DATASET_FORMATS)
    parser.add_argument("--split", default="val")
    parser.add_argument("--categories", default="",
                        help="COCO only: comma-separated category names (classes 1..K)")
    add_eval_options(parser)
    parser.add_argument("--output-dir", required=True,
                        help="where report.json, per_class_iou.txt and confusion_matrix.png go")
    parser.set_defaults(run=run)


def run(args):
    from deeplab_xception.weights import load_model
    from segment.datasets import load_dataset
    from segment.evaluate import evaluate, format_table

    dataset = load_dataset(args.format, args.data, args.split,
                           categories=tuple(c for c in args.categories.split(",") if c))
    model = load_model(args.weights, kind="deeplab")
    report, _ = evaluate(model, dataset, scales=args.scales, flip=args.flip,
                         output_stride=args.output_stride, output_dir=args.output_dir,
                         tile=args.tile)
    print(format_table(report), end="")

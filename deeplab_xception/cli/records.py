"""`deeplab-xception records`: a dataset split as TFRecord shards, every label checked once."""

from deeplab_xception.cli.options import DATASET_FORMATS, positive_int

FLAGS = {"output_dir": "--output-dir", "num_shards": "--num-shards"}


def run(args):
    from deeplab_xception.io import check_output_dir
    from deeplab_xception.segment.datasets import load_dataset
    from deeplab_xception.segment.records import write_tfrecords

    check_output_dir(args.output_dir)  # before reading the dataset, not after it
    dataset = load_dataset(args.format, args.data, args.split,
                           categories=tuple(c for c in args.categories.split(",") if c))
    for path in write_tfrecords(dataset, args.output_dir, args.split, args.num_shards):
        print(path)


def register(subparsers):
    parser = subparsers.add_parser(
        "records", help="a dataset split as TFRecord shards, for training from remote storage",
        description="Reads a dataset split, checks every image and label, and writes "
                    "OUTPUT_DIR/SPLIT-NNNNN-of-NNNNN.tfrecord shards for data.tfrecords.")
    parser.add_argument("--format", required=True, choices=DATASET_FORMATS,
                        help="the dataset's layout")
    parser.add_argument("--data", required=True, help="the dataset's root folder")
    parser.add_argument("--split", required=True, help="the split to write, as the format names it")
    parser.add_argument("--categories", default="",
                        help="COCO only: comma-separated category names (classes 1..K)")
    parser.add_argument("--output-dir", required=True, help="where the shards go")
    parser.add_argument("--num-shards", type=positive_int, default=4, metavar="N",
                        help="shards to deal the examples into (at most one per example; default 4)")
    parser.set_defaults(run=run)

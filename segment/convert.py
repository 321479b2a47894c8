"""Writes a dataset split as TFRecord shards: `python -m deeplab_xception.segment.convert --format voc ...`."""

import argparse
import sys

from deeplab_xception.errors import UserError
from deeplab_xception.segment.datasets import FORMATS, load_dataset
from deeplab_xception.segment.records import write_tfrecords


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m deeplab_xception.segment.convert", description=__doc__)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS))
    parser.add_argument("--data", required=True, help="the dataset's root folder")
    parser.add_argument("--split", required=True)
    parser.add_argument("--categories", default="", help="COCO only: comma-separated names")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-shards", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        dataset = load_dataset(args.format, args.data, args.split,
                               categories=tuple(c for c in args.categories.split(",") if c))
        for path in write_tfrecords(dataset, args.output_dir, args.split, args.num_shards):
            print(path)
    except UserError as e:
        print(f"deeplab_xception.segment.convert: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

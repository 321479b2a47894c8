"""`deeplab-xception segment`: label maps, overlays and class shares for images of any size."""

import os
import sys

from deeplab_xception.cli.options import (NAMED_DATASETS, add_eval_options, add_max_pixels_option,
                                          add_overlap_option, add_precision_option, flag_message)
from deeplab_xception.errors import UserError

FLAGS = {"output_dir": "--output-dir", "dataset": "--dataset", "max_pixels": "--max-pixels",
         "scales": "--scales", "precision": "--precision", "output_stride": "--output-stride",
         "tile": "--tile", "overlap": "--overlap"}


def report(message):
    from tqdm import tqdm

    tqdm.write(f"deeplab-xception segment: error: {message}", file=sys.stderr)


def run(args):
    from tqdm import tqdm

    from deeplab_xception.runtime.segmenter import Segmenter
    from deeplab_xception.io import check_output_dir
    from deeplab_xception.runtime.image_files import (class_table, find_images, load_segmentation_model,
                                          plan_outputs, read_batches, segment_batch)

    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
    if not 0 <= args.alpha <= 1:
        raise UserError(f"--alpha: must be between 0 and 1, got {args.alpha:g}")
    if args.dataset and args.classes:
        raise UserError("--dataset and --classes: give one of them")
    check_output_dir(args.output_dir)
    images, failed = find_images(args.images)
    for problem in failed:
        report(problem)
    if not images:
        return 2
    wanted = {"overlay": args.overlay, "json": args.json, "probabilities": args.save_probabilities}
    outputs = ["labels"] + [output for output, on in wanted.items() if on]
    plans = plan_outputs(images, args.output_dir, outputs)
    model = load_segmentation_model(args.weights, args.output_stride)
    if model.num_classes > 256:
        raise UserError(f"{args.weights}: {model.num_classes} classes do not fit uint8 label PNGs")
    names, palette = class_table(args.dataset, args.classes, model.num_classes, args.weights)
    segmenter = Segmenter(model, scales=args.scales, flip=args.flip, tile=args.tile,
                          overlap=args.overlap, max_pixels=args.max_pixels, precision=args.precision)
    done = 0
    with tqdm(total=len(images), unit="image", disable=len(images) < 2 or None) as progress:
        def unreadable(error):
            message = flag_message(error, FLAGS)
            failed.append(message)
            report(message)
            progress.update()

        passes = len(segmenter.scales) * (1 + segmenter.flip)
        for batch in read_batches(images, args.batch_size, unreadable, args.scales,
                                  args.max_pixels):
            calls = segmenter.calls(*batch[0][1].shape[:2])
            # A tiled image can take hours at OS 8 with scales and flips: count its tiles.
            with tqdm(total=calls, unit="tile", leave=False, desc=os.path.basename(batch[0][0]),
                      disable=calls <= passes or None) as tiles:
                segmenter.on_call = tiles.update
                segment_batch(segmenter, batch, plans, names, palette, args.alpha, args.legend)
            done += len(batch)
            progress.update(len(batch))
    print(f"{done} image{'s' * (done != 1)} segmented into {args.output_dir} "
          f"(computed in {segmenter.precision})" + (f"; {len(failed)} failed" if failed else ""))
    return 2 if not done else 1 if failed else 0


def register(subparsers):
    parser = subparsers.add_parser(
        "segment", help="label maps, overlays and class shares for images",
        description="Writes OUTPUT_DIR/<name>.png per image: the class index of every pixel as an "
                    "indexed PNG in the dataset's colors. Unreadable inputs are reported and "
                    "skipped (exit status 1); exit status 2 when no image was segmented.")
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (any format OpenCV reads, any size), directories or "
                             "glob patterns such as 'photos/**/*.jpg'")
    parser.add_argument("--weights", required=True,
                        help=".keras model, official checkpoint (prefix, directory, .tar.gz, URL) or zoo name")
    parser.add_argument("--output-dir", required=True, help="where the outputs go")
    parser.add_argument("--dataset", choices=NAMED_DATASETS,
                        help="class names and colors (default: the dataset with the model's "
                             "number of classes, else numbered classes)")
    parser.add_argument("--classes", metavar="FILE",
                        help="class names and colors from a class list ('name r g b' a line)")
    parser.add_argument("--overlay", action="store_true",
                        help="also write <name>.overlay.png: class colors over the photo, "
                             "with a legend in its top-left corner")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay opacity (default 0.5)")
    parser.add_argument("--no-legend", dest="legend", action="store_false",
                        help="overlays without the legend of the classes present")
    parser.add_argument("--json", action="store_true",
                        help="also write <name>.json: the share of pixels of each class present")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write <name>.npy: class probabilities, float32 H x W x classes "
                             "(memory-mapped, so large images need not fit in memory)")
    add_eval_options(parser)
    add_overlap_option(parser)
    add_max_pixels_option(parser, ", or that a --scales value would make larger")
    add_precision_option(parser, "auto")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="images of one size run together, up to this many (default 1)")
    parser.set_defaults(run=run)

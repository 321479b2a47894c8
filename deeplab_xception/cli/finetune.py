"""`deeplab-xception finetune`: train DeepLabv3+ on a segmentation dataset."""

import os


def register(subparsers):
    parser = subparsers.add_parser(
        "finetune", help="fine-tune DeepLabv3+ on a segmentation dataset (configs/segment_*.yaml)")
    parser.add_argument("--config", required=True, help="a segment_*.yaml config")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. trainer.train_steps=1000 data.root=/data/voc")
    parser.set_defaults(run=run)


def run(args):
    from deeplab_xception.config import load_config
    from deeplab_xception.training.trainer import train
    from segment.config import SegmentConfig
    from segment.task import SegmentationTask

    config = load_config(SegmentConfig, args.config, args.overrides)
    step = train(SegmentationTask(config), config.trainer)
    print(f"trained to step {step}: {os.path.join(config.trainer.model_dir, 'model.keras')}")

"""`deeplab-xception finetune`: train DeepLabv3+ on a segmentation dataset."""

import os


def register(subparsers):
    parser = subparsers.add_parser(
        "finetune", help="fine-tune DeepLabv3+ on a segmentation dataset (segment_*.yaml)")
    parser.add_argument("--config", required=True, help="YAML config, a file or a shipped name, e.g. segment_voc.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. trainer.train_steps=1000 data.root=/data/voc")
    parser.set_defaults(run=run)


def run(args):
    from deeplab_xception.config import load_config
    from deeplab_xception.training.trainer import prepare, train
    from segment.config import SegmentConfig
    from segment.pipeline import label_errors_reported
    from segment.task import SegmentationTask

    config = load_config(SegmentConfig, args.config, args.overrides)
    prepare(config.trainer)
    task = SegmentationTask(config)
    with label_errors_reported(task.train_set):
        step = train(task, config.trainer)
    print(f"trained to step {step}: {os.path.join(config.trainer.model_dir, 'model.keras')}")

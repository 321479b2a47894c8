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
    import contextlib

    import keras

    from deeplab_xception.config import load_config
    from deeplab_xception.io import atomic_path
    from deeplab_xception.runtime.image_files import class_list_beside
    from deeplab_xception.training import FINAL_MODEL, prepare, train
    from deeplab_xception.data.classes import write_class_list
    from deeplab_xception.segment.config import SegmentConfig
    from deeplab_xception.segment.task import SegmentationTask

    config = load_config(SegmentConfig, args.config, args.overrides)
    prepare(config.trainer)
    task = SegmentationTask(config)
    chief = True
    if keras.backend.backend() == "jax":
        errors = contextlib.nullcontext()  # labels are checked as numpy reads them
    else:
        from deeplab_xception.training.cluster import is_chief
        from deeplab_xception.segment.pipeline import label_errors_reported

        errors, chief = label_errors_reported(task.train_set), is_chief()
    with errors:
        step = train(task, config.trainer)
    model = os.path.join(config.trainer.model_dir, FINAL_MODEL)
    if chief:  # the class names and colors, beside the model that `segment` reads
        with atomic_path(class_list_beside(model)) as tmp:
            write_class_list(tmp, task.classes, task.train_set.palette)
    print(f"trained to step {step}: {model}")

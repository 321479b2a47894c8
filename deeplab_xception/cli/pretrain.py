"""`deeplab-xception pretrain`: ImageNet pretraining of an Xception classifier.

One process trains by default; with TF_CONFIG each process plays its role of
a cluster; `--local-cluster workers=N,ps=M` starts such a cluster here.
"""

import os
import sys

from deeplab_xception.errors import UserError

FLAGS = {"cluster": "--local-cluster"}


def register(subparsers):
    parser = subparsers.add_parser(
        "pretrain", help="pretrain a (modified) Xception classifier on ImageNet",
        description="Train an Xception classifier on ImageNet (TFRecords or class folders). "
                    "Each process's role comes from TF_CONFIG.")
    parser.add_argument("--config", required=True, help="YAML config, a file or a shipped name, e.g. pretrain_imagenet.yaml")
    parser.add_argument("--local-cluster", metavar="workers=N,ps=M",
                        help="run a cluster of processes on this machine (parameter_server: "
                             "workers=N,ps=M; multi_worker: workers=N); add evaluator=1 for the "
                             "sidecar evaluator")
    parser.add_argument("--restarts", type=int, default=3, metavar="N",
                        help="with --local-cluster: restart the whole cluster from its last "
                             "checkpoint at most N times when a parameter server is lost "
                             "(default: 3)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --local-cluster: stop the cluster, exit status 124, when a run "
                             "takes longer (default: no limit)")
    parser.add_argument("--role", choices=("train", "evaluator"), default="train",
                        help="evaluator: evaluate each new checkpoint in model_dir (default: train)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. trainer.train_steps=100 data.image_size=224")
    parser.set_defaults(run=run)


def _child_command(args):
    return [sys.executable, "-c", "from deeplab_xception.cli import entry_point; entry_point()",
            *(["--verbose"] if args.verbose else []), "pretrain", "--config", args.config, *args.overrides]


def run(args):
    from deeplab_xception.config import load_config
    from deeplab_xception.pretrain.config import PretrainConfig

    config = load_config(PretrainConfig, args.config, args.overrides)
    config.trainer.validate()
    if config.data.synthetic:
        _write_synthetic(config)
    if (config.trainer.strategy == "parameter_server" and not args.local_cluster
            and not os.environ.get("TF_CONFIG") and args.role != "evaluator"):
        raise UserError("strategy parameter_server: TF_CONFIG must list ps and worker tasks "
                        "(or use --local-cluster workers=N,ps=M)")
    if args.local_cluster:
        from deeplab_xception.training import launcher

        if os.environ.get("TF_CONFIG"):
            raise UserError("--local-cluster: TF_CONFIG is already set; use one or the other")
        if args.restarts < 0:
            raise UserError(f"--restarts: must be 0 or more, got {args.restarts}")
        return launcher.run(_child_command(args), args.local_cluster, config.trainer.strategy,
                            restarts=args.restarts, timeout=args.timeout)
    if args.role == "evaluator":
        os.environ["TF_CONFIG"] = '{"task": {"type": "evaluator", "index": 0}}'
    from deeplab_xception.training import prepare, train
    from deeplab_xception.pretrain.task import ClassificationTask

    prepare(config.trainer)
    train(ClassificationTask(config), config.trainer)
    return 0


def _write_synthetic(config):
    """The learnable synthetic set at `data.train`'s folder, unless already there."""
    import glob

    from deeplab_xception.pretrain import synthetic

    directory = os.path.dirname(config.data.train)
    if glob.glob(config.data.train):
        return
    synthetic.write_tfrecords(directory, image_size=config.data.image_size,
                              train_images=config.trainer.examples_per_epoch)

"""`deeplab-xception` command line: one module per subcommand, each with `register`."""

import argparse
import importlib
import os
import sys

from deeplab_xception.errors import ClusterLost, UserError

# Subcommand modules under deeplab_xception.cli, in the order `--help` lists them.
COMMANDS = ("demo", "segment", "classify", "export", "convert", "budget", "pretrain", "finetune", "evaluate",
            "configs")


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="deeplab-xception",
        description="DeepLabv3+ with modified Xception: pretrain, fine-tune, segment.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"deeplab_xception.cli.{name}").register(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except UserError as e:
        print(f"deeplab-xception {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ClusterLost as e:
        print(f"deeplab-xception {args.command}: {e}", file=sys.stderr)
        return ClusterLost.EXIT_STATUS
    except KeyboardInterrupt:
        print(f"deeplab-xception {args.command}: interrupted", file=sys.stderr)
        return 130


def entry_point():
    # TF's C++ logs (server start-up, a CUDA probe on machines without a GPU)
    # are noise on a terminal; real failures still surface as Python errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    sys.exit(main())

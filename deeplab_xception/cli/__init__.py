"""`deeplab-xception` command line: one module per subcommand, each with `register`."""

import argparse
import importlib
import os
import sys

from deeplab_xception.errors import UserError

# Subcommand modules under deeplab_xception.cli, in the order `--help` lists them.
COMMANDS = ("segment", "export", "classify", "convert", "budget", "finetune", "evaluate", "pretrain")


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
    except KeyboardInterrupt:
        print(f"deeplab-xception {args.command}: interrupted", file=sys.stderr)
        return 130


def entry_point():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

"""`deeplab-xception` command line: one module per subcommand, each with `register`.

The subcommand modules import TensorFlow, Keras and the models only inside
their `run`, so `--help` answers at once.
"""

import argparse
import importlib
import os
import signal
import sys

from deeplab_xception.backend import BACKENDS, use_backend
from deeplab_xception.cli.quiet import filter_native_output, quiet_environment
from deeplab_xception.errors import ArgumentError, ClusterLost, UserError

# The library's arguments that the main parser's flags set; each subcommand module may add its
# own in FLAGS, so that an ArgumentError reads as the command line says it.
FLAGS = {"backend": "--backend"}
# Subcommand modules under deeplab_xception.cli, in the order `--help` lists them.
COMMANDS = ("demo", "segment", "classify", "export", "convert", "records", "budget", "pretrain",
            "finetune", "evaluate", "configs")


def main(argv=None, filter_output=False):
    """Runs one command; `filter_output` (the installed command) also keeps native
    libraries' log lines off the terminal unless --verbose."""
    parser = argparse.ArgumentParser(
        prog="deeplab-xception",
        description="DeepLabv3+ with modified Xception: pretrain, fine-tune, segment.")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's and other libraries' own log lines")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow); jax runs "
                             "segment, classify, evaluate and budget on JAX's default device "
                             "(a GPU where it has one)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"deeplab_xception.cli.{name}").register(subparsers)
    for subparser in subparsers.choices.values():  # `COMMAND --verbose` as well
        subparser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                               help="show TensorFlow's and other libraries' own log lines")
    args = parser.parse_args(argv)
    if not args.verbose:
        quiet_environment()
        if filter_output:
            filter_native_output()
    try:
        if args.backend:
            use_backend(args.backend)
        status = args.run(args) or 0
        sys.stdout.flush()  # a reader gone (`| head -1`) shows here, not at exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return 128 + signal.SIGPIPE  # as a command that SIGPIPE ended
    except ArgumentError as e:
        command = importlib.import_module(f"deeplab_xception.cli.{args.command}")
        error = e.for_flags({**FLAGS, **getattr(command, "FLAGS", {})})
        print(f"deeplab-xception {args.command}: error: {error}", file=sys.stderr)
        return 2
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
    sys.exit(main(filter_output=True))

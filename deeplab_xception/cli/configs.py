"""`deeplab-xception configs`: the configs shipped with the package, or one of them to copy."""

import re

from deeplab_xception.config import find_config, shipped_configs


def _summary(text):
    """The first sentence of a config's opening comment: what it is for."""
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    sentence = re.match(r".+?\.(?=\s|$)", " ".join(comment))
    return sentence.group(0) if sentence else " ".join(comment)


def run(args):
    if args.name:
        print(find_config(args.name).read_text(), end="")
        return
    names = shipped_configs()
    width = max(map(len, names))
    for name in names:
        print(f"{name:{width}}  {_summary(find_config(name).read_text())}")


def register(subparsers):
    parser = subparsers.add_parser(
        "configs", help="list the shipped configs, or print one to copy and edit",
        description="Every --config option takes a YAML file or the name of a shipped config; "
                    "'deeplab-xception configs segment_voc.yaml > my.yaml' starts your own.")
    parser.add_argument("name", nargs="?", help="a shipped config to print, e.g. segment_voc.yaml")
    parser.set_defaults(run=run)

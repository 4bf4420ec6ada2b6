"""List and fetch registered models: `vxm-models list|show|fetch|path`.

    vxm-models list                      every name, its input, where it is, its scores
    vxm-models show NAME                 the model card (README.md of its folder)
    vxm-models fetch NAME [--from=PATH]  download (or copy a local file) into the cache,
                                         checked against the card's sha256
    vxm-models path NAME                 the weights' path (for scripts)
"""

import argparse
import sys

from vxm_tf import models


def _progress(done, total):
    if sys.stderr.isatty():
        share = f"{100 * done / total:5.1f}% " if total else ""
        sys.stderr.write(f"\r{share}{done / 2**20:8.1f} MiB")
        if total and done >= total:
            sys.stderr.write("\n")


def parser():
    p = argparse.ArgumentParser(
        prog="vxm-models", description="Registration models by name (the names every "
        "--model and --init_model flag takes).", formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="every model: input, where it is, scores")
    show = sub.add_parser("show", help="a model's card")
    show.add_argument("name")
    fetch = sub.add_parser("fetch", help="download or copy a model into the cache "
                           f"({models.cache_dir()}; set VXM_TF_HOME to move it)")
    fetch.add_argument("name")
    fetch.add_argument("--from", dest="source", default=None, metavar="PATH_OR_URL",
                       help="a local copy or another address (default: the card's)")
    path = sub.add_parser("path", help="print the weights' path")
    path.add_argument("name")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        if args.command == "list":
            print("\n\n".join(models.describe(c) for c in models.cards().values()))
        elif args.command == "show":
            print(models.card_markdown(models.card(args.name)), end="")
        elif args.command == "fetch":
            target = models.fetch(args.name, args.source, _progress)
            print(f"{args.name}: {target} (sha256 checked)")
        elif args.command == "path":
            models.card(args.name)  # an unknown name: the list of names
            print(models.resolve(args.name))
    except models.ModelError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return 0


def console():
    """The `vxm-models` command (also `python -m vxm_tf.models`)."""
    sys.exit(main())


"""python -m kconv info   : what was built, the instruction set and threads in use, and the FMA roof."""
import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print build facts, threads and the measured FMA roof")
    info.add_argument("--no-roof", action="store_true", help="skip the few-second roof measurement")
    args = parser.parse_args(argv)
    if args.command == "info":
        from . import show_config
        show_config(roof=not args.no_roof)
    return 0


if __name__ == "__main__":
    sys.exit(main())

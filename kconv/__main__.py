"""kconv's command line (also the `kconv` console script).

    python -m kconv info      versions, build flags, OpenMP, instruction set, threads and the measured FMA roof
    python -m kconv bench     kconv against TensorFlow's convolution on this machine (--help for options)
    python -m kconv demo      the demo (kconv.demo)
"""
import argparse
import os
import platform
import sys

from ._config import cpu_name


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="kconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print versions, build facts, threads and the measured FMA roof")
    info.add_argument("--no-roof", action="store_true", help="skip the few-second roof measurement")
    info.add_argument("--no-tf", action="store_true", help="do not import TensorFlow to report its version")
    sub.add_parser("bench", help="benchmark kconv against TensorFlow (python -m kconv bench --help)",
                   add_help=False)
    sub.add_parser("demo", help="run the demo (python -m kconv demo --help)", add_help=False)
    # bench and demo own their options: everything after the subcommand goes to them untouched
    if argv and argv[0] in ("bench", "demo"):
        command, rest = argv[0], argv[1:]
    else:
        args = parser.parse_args(argv)
        command, rest = args.command, None
    if command == "bench":
        from .bench import main as bench_main
        return bench_main(rest)
    if command == "demo":
        try:
            from . import demo
        except ImportError as e:
            if getattr(e, "name", None) not in ("kconv.demo", None):
                raise
            print("kconv demo: this kconv has no demo module (kconv/demo.py) yet", file=sys.stderr)
            return 2
        return demo.main(rest)
    return info_command(args)


def info_command(args):
    from . import _backend, config, measure_roof
    import numpy as np
    cfg = config()
    print(f"{'kconv':16s} {cfg['version']}")
    print(f"{'python':16s} {platform.python_version()} ({platform.python_implementation()}, {sys.executable})")
    print(f"{'numpy':16s} {np.__version__}")
    print(f"{'tensorflow':16s} {_tf_version() if not args.no_tf else '(not checked)'}")
    print(f"{'keras':16s} {_dist_version('keras')}")
    if not args.no_tf:
        print(f"{'tf op':16s} {_op_path()}")
    print(f"{'platform':16s} {platform.platform()}")
    print(f"{'cpu':16s} {cpu_name()} ({os.cpu_count()} CPUs)")
    print(f"{'isa':16s} {cfg['isa']} (built: {', '.join(cfg['isas_built']) if isinstance(cfg['isas_built'], (list, tuple)) else cfg['isas_built']}; "
          f"CPU avx2={cfg['cpu_avx2']} avx512={cfg['cpu_avx512']})")
    print(f"{'openmp':16s} {cfg['openmp']} (OMP_NUM_THREADS={cfg['OMP_NUM_THREADS']}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')})")
    print(f"{'threads':16s} {cfg['threads']}")
    print(f"{'tile f32/f64':16s} {cfg['tile_f32']} / {cfg['tile_f64']} (micro-kernel rows x cols)")
    print(f"{'core module':16s} {getattr(_backend.core, '__file__', '?')}")
    for key, value in _build_flags().items():
        print(f"{key:16s} {value}")
    if not args.no_roof:
        n = cfg["threads"]
        one = measure_roof(1)
        print(f"{'fma roof':16s} 1 thread {one:.1f} GFLOP/s, {n} threads "
              f"{measure_roof(n) if n > 1 else one:.1f} GFLOP/s (fp32, {cfg['isa']} vectors)")
    return 0


def _tf_version():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except Exception as e:   # not installed, or broken
        return f"not importable ({type(e).__name__})"
    return tf.__version__


def _op_path():
    """Which path kconv's TensorFlow functions take, and where the op library is."""
    try:
        from . import load_op_library
        info = load_op_library()
    except Exception as e:   # TensorFlow not installed, or broken
        return f"unavailable ({type(e).__name__}: {e})"
    if info["path"] == "native":
        return f"native op library {info['library']}"
    return f"tf.numpy_function fallback ({info['reason']})"


def _dist_version(name):
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "not installed"


def _build_flags():
    """The compiler and flags Python builds extensions with (setuptools uses them for kconv's core)."""
    import sysconfig
    flags = {"compiler": sysconfig.get_config_var("CC") or "?"}
    cflags = " ".join(f for f in (sysconfig.get_config_var("CFLAGS") or "").split()
                      if f.startswith(("-O", "-march", "-f", "-m")))
    flags["python cflags"] = cflags or "?"
    return flags


if __name__ == "__main__":
    sys.exit(main())

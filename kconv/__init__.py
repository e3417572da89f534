"""kconv: fast CPU convolutions for Keras, in Cython + OpenMP.

    import kconv
    layer = kconv.Conv2D(64, 3, padding="same")       # a drop-in for keras.layers.Conv2D
    y = kconv.conv2d(x, w, 1, "SAME")                 # tf.nn.conv2d on kconv's kernels
    from kconv import ops                             # numpy API, no TensorFlow needed

The TensorFlow parts (conv1d, conv2d, Conv1D, Conv2D, to_keras) load on first use, so `import kconv` alone
does not import TensorFlow.
"""
import os
import sys as _sys

# kconv shares the cores with TensorFlow's own thread pool: idle OpenMP threads should sleep, not spin
# (spinning steals the core from the next TensorFlow op). Must be set before libgomp loads; an explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import ops  # noqa: E402
from ._config import config, measure_roof, show_config  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = ["Conv1D", "Conv2D", "config", "conv1d", "conv2d", "get_num_threads", "measure_roof", "ops",
           "set_num_threads", "show_config", "to_keras"]
__version__ = "0.1.0"

_TF_EXPORTS = {"conv1d": "tf_ops", "conv2d": "tf_ops", "Conv1D": "layers", "Conv2D": "layers",
               "to_keras": "serving"}


def __getattr__(name):
    """kconv.conv1d/conv2d (TF ops), kconv.Conv1D/Conv2D (Keras layers), kconv.to_keras: loaded on first use."""
    module = _TF_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kconv' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


if "keras" in _sys.modules:   # Keras already loaded: register kconv>Conv1D/Conv2D now, for load_model
    from . import layers as _layers  # noqa: E402,F401

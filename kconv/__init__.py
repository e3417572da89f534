"""kconv: fast CPU convolutions for Keras, in Cython + OpenMP.

    import kconv
    layer = kconv.Conv2D(64, 3, padding="same")       # a drop-in for keras.layers.Conv2D
    layer = kconv.SeparableConv2D(64, 3)              # ... and Conv1D, the Transpose, Depthwise, Separable twins
    layer = kconv.BatchNormalization()                # keras.layers.BatchNormalization as one fused op
    layer = kconv.ReLU()                              # keras.layers.ReLU, fused into a kconv conv before it
    y = kconv.conv2d(x, w, 1, "SAME")                 # tf.nn.conv2d on kconv's kernels
    from kconv import ops                             # numpy API, no TensorFlow needed

The TensorFlow parts (conv1d, conv2d, conv1d_transpose, conv2d_transpose, the Keras layers, convert, to_keras)
load on first use, so `import kconv` alone does not import TensorFlow. Where TensorFlow is already imported,
`import kconv` also registers kconv's TensorFlow ops (building the op library once per TensorFlow version), so
SavedModels that contain them load; otherwise `kconv.load_op_library()` does it.
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

_LAYERS = ("Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
           "SeparableConv1D", "SeparableConv2D", "BatchNormalization", "ReLU")
__all__ = list(_LAYERS) + ["config", "convert", "conv1d", "conv1d_transpose", "conv2d", "conv2d_transpose",
                           "get_num_threads", "load_op_library", "measure_roof", "ops", "set_num_threads",
                           "show_config", "to_keras"]
__version__ = "0.1.0"

_TF_EXPORTS = {"conv1d": "tf_ops", "conv2d": "tf_ops", "conv1d_transpose": "tf_ops", "conv2d_transpose": "tf_ops",
               "to_keras": "serving", "convert": "serving", **{name: "layers" for name in _LAYERS}}


def __getattr__(name):
    """kconv.conv1d/conv2d/..._transpose (TF ops), kconv.Conv2D etc. (Keras layers), kconv.convert /
    to_keras: loaded on first use."""
    module = _TF_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kconv' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)




def load_op_library():
    """Registers kconv's TensorFlow ops in this process (building the library once per TensorFlow version)
    and says which path kconv's TensorFlow functions use: a dict with path ("native" or "numpy_function"),
    library (its file) and reason (why the fallback, if it is used)."""
    from . import _oplib
    _oplib.load()
    return _oplib.info()


if "keras" in _sys.modules:   # Keras already loaded: register kconv's layers (kconv>Conv2D...) now, for load_model
    from . import layers as _layers  # noqa: E402,F401
if "tensorflow" in _sys.modules:   # register the ops now, for tf.saved_model.load of a kconv model
    load_op_library()

"""kconv: fast CPU convolutions for Keras, in Cython + OpenMP.

    from kconv import ops                 # numpy API, no TensorFlow needed
    y = ops.conv2d(x, w, strides=1, padding="SAME")
"""
from . import ops
from ._config import config, measure_roof, show_config
from ._threads import get_num_threads, set_num_threads

__all__ = ["config", "get_num_threads", "measure_roof", "ops", "set_num_threads", "show_config"]
__version__ = "0.1.0"

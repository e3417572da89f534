"""kconv: fast CPU convolutions for Keras, in Cython + OpenMP.

    from kconv import ops                 # numpy API, no TensorFlow needed
    y = ops.conv2d(x, w, strides=1, padding="SAME")
"""
import os

# kconv shares the cores with TensorFlow's own thread pool: idle OpenMP threads should sleep, not spin
# (spinning steals the core from the next TensorFlow op). Must be set before libgomp loads; an explicit
# OMP_WAIT_POLICY in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import ops  # noqa: E402
from ._config import config, measure_roof, show_config  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402

__all__ = ["config", "get_num_threads", "measure_roof", "ops", "set_num_threads", "show_config"]
__version__ = "0.1.0"

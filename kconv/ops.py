"""kconv's numpy API: convolutions and their gradients with the signatures of tf.nn, no TensorFlow needed.

    y  = conv2d(x, w, strides, padding, data_format, dilations)
    dx = conv2d_backprop_input(x.shape, w, dy, strides, padding, data_format, dilations)
    dw = conv2d_backprop_filter(x, w.shape, dy, strides, padding, data_format, dilations)

and the 1-D twins. Filters are laid out as in TensorFlow, (k..., C/groups, K); groups = C / filters.shape[-2].
float32 and float64. Inputs are never modified; any strides are accepted (a contiguous copy is made when
needed). Every function takes `threads=None` (see kconv.set_num_threads) and `algorithm`: "auto" (Winograd
where it is faster and accurate, else direct), "direct", "winograd" (F(m, r) with m chosen: 3x3 and 5x5 kernels,
1-D k = 3 .. 7), "winograd2", "winograd4", "winograd6" (the output tile m, where m + r - 1 is 4, 6 or 8).
"""
import functools
import math
import sys
import threading
from dataclasses import dataclass

import numpy as np

from . import _args, _geometry, _threads
from ._backend import core

__all__ = ["ACTIVATIONS", "ALGORITHMS", "clear_cache", "memory_info", "set_filter_cache", "conv1d", "conv1d_backprop_filter", "conv1d_backprop_input", "conv2d",
           "conv2d_backprop_filter", "conv2d_backprop_input", "matmul"]


@dataclass(frozen=True)
class _Conv:
    """One convolution in kconv's native form: 2-D, NHWC (1-D runs with H = 1)."""
    nd: int
    layout: str
    batch: int
    in_hw: tuple
    channels: int
    k_hw: tuple
    filters_out: int
    groups: int
    strides: tuple
    dilations: tuple
    pads: tuple
    out_hw: tuple

    @property
    def flops(self):
        """Multiply-adds x 2 of the convolution (the same for each of its three passes)."""
        return 2.0 * self.batch * self.out_hw[0] * self.out_hw[1] * math.prod(self.k_hw) * self.cg * self.filters_out

    @property
    def cg(self):
        return self.channels // self.groups

    @property
    def kg(self):
        return self.filters_out // self.groups

    def user_shape(self, hw, channels):
        """A native (N, H, W, C) shape in the caller's layout and rank."""
        spatial = hw[1:] if self.nd == 1 else hw
        if self.layout.startswith("NC"):
            return (self.batch, channels) + tuple(spatial)
        return (self.batch,) + tuple(spatial) + (channels,)

    def to_native(self, array):
        """Caller's layout -> contiguous NHWC (a view when nothing needs to move)."""
        if self.layout.startswith("NC"):
            array = np.moveaxis(array, 1, -1)
        if self.nd == 1:
            array = array[:, None]
        return np.ascontiguousarray(array)

    def from_native(self, array):
        if self.nd == 1:
            array = array[:, 0]
        if self.layout.startswith("NC"):
            array = np.ascontiguousarray(np.moveaxis(array, -1, 1))
        return array



def _describe(nd, input_shape, filters_shape, strides, padding, data_format, dilations,
              input_name="input", filters_name="filters"):
    """Checks a convolution's geometry and returns it in native form (cached: the checks cost more than a
    small convolution, and a model calls the same geometry every step)."""
    try:
        return _describe_cached(nd, tuple(input_shape), tuple(filters_shape), _hashable(strides), _hashable(padding),
                                data_format, _hashable(dilations), input_name, filters_name)
    except TypeError:   # something unhashable (an array of strides...): check without the cache
        return _describe_uncached(nd, input_shape, filters_shape, strides, padding, data_format, dilations,
                                  input_name, filters_name)


def _hashable(value):
    """strides / padding / dilations as a cache key: lists -> tuples, numpy ints -> ints. Anything else
    (bools, floats, arrays) raises TypeError and is checked, uncached, by the code that rejects it."""
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, (bool, np.bool_)):
        raise TypeError("bools are checked uncached")
    if isinstance(value, np.integer):
        return int(value)
    if value is None or isinstance(value, (int, str)):
        return value
    raise TypeError("not cacheable")


@functools.lru_cache(maxsize=256)
def _describe_cached(*args):
    return _describe_uncached(*args)


def _describe_uncached(nd, input_shape, filters_shape, strides, padding, data_format, dilations,
                       input_name="input", filters_name="filters"):
    layout = _args.data_format(data_format, nd)
    what = {1: "batch, width, channels", 2: "batch, height, width, channels"}[nd]
    if len(input_shape) != nd + 2:
        raise ValueError(f"{input_name} must be rank {nd + 2} ({layout}: {what}), got shape {tuple(input_shape)}")
    if len(filters_shape) != nd + 2:
        raise ValueError(f"{filters_name} must be rank {nd + 2} (kernel size..., in channels / groups, filters), "
                         f"got shape {tuple(filters_shape)}")
    stride_name = "stride" if nd == 1 else "strides"
    strides = _args.spatial_ints(strides, stride_name, nd, layout)
    dilations = _args.spatial_ints(dilations, "dilations", nd, layout)
    pad = _args.padding(padding, nd, layout)
    batch = input_shape[0]
    channels = input_shape[1] if layout.startswith("NC") else input_shape[-1]
    spatial = tuple(input_shape[2:]) if layout.startswith("NC") else tuple(input_shape[1:-1])
    k_sizes, cg, k_out = tuple(filters_shape[:nd]), filters_shape[nd], filters_shape[nd + 1]
    if any(k < 1 for k in k_sizes):
        raise ValueError(f"{filters_name} kernel size must be >= 1, got shape {tuple(filters_shape)}")
    if cg < 1 or channels < 1 or channels % cg:
        raise ValueError(f"{input_name} channels ({channels}, shape {tuple(input_shape)}) must be a positive "
                         f"multiple of {filters_name}' in-channels ({cg}, shape {tuple(filters_shape)})")
    groups = channels // cg
    if k_out % groups:
        raise ValueError(f"{filters_name} count ({k_out}, shape {tuple(filters_shape)}) must be divisible by "
                         f"groups = {groups} (= {input_name} channels {channels} / {cg})")
    pads = _geometry.resolve_padding(pad, spatial, k_sizes, strides, dilations)
    try:
        out = _geometry.output_sizes(spatial, k_sizes, strides, dilations, pads)
    except ValueError as e:
        raise ValueError(f"{input_name} {tuple(input_shape)} and {filters_name} {tuple(filters_shape)} "
                         f"({layout}, padding {padding!r}): {e}") from None
    if nd == 1:   # run as 2-D with H = 1
        spatial, k_sizes, out = (1,) + spatial, (1,) + k_sizes, (1,) + out
        strides, dilations, pads = (1,) + strides, (1,) + dilations, ((0, 0),) + pads
    return _Conv(nd, layout, batch, spatial, channels, k_sizes, k_out, groups, strides, dilations, pads, out)


def _forward(nd, input, filters, strides, padding, data_format, dilations, algorithm, threads, bias=None,
             activation="linear"):
    x = _args.float_array(input, "input")
    w = _args.float_array(filters, "filters")
    dtype = _args.same_dtype(input=x, filters=w)
    conv = _describe(nd, x.shape, w.shape, strides, padding, data_format, dilations)
    act = _args.activation(activation)
    if bias is not None:
        bias = _args.float_array(bias, "bias")
        _args.same_dtype(input=x, bias=bias)
        if bias.shape != (conv.filters_out,):
            raise ValueError(f"bias must have shape ({conv.filters_out},) (one value per filter), got {bias.shape}")
        bias = np.ascontiguousarray(bias)
    plan = _plan(conv, dtype, algorithm, threads, act)
    y = _empty_aligned((conv.batch,) + conv.out_hw + (conv.filters_out,), dtype)
    z = _empty_aligned(y.shape, dtype) if act in core.PREACTIVATION_CODES and y.size else None
    if y.size:
        plan.forward(conv.to_native(x), np.ascontiguousarray(w), bias, y, z)
    return conv.from_native(y)


def _backprop_input(nd, input_sizes, filters, out_backprop, strides, padding, data_format, dilations, algorithm,
                    threads):
    w = _args.float_array(filters, "filters")
    dy = _args.float_array(out_backprop, "out_backprop")
    dtype = _args.same_dtype(filters=w, out_backprop=dy)
    shape = _args.sizes(input_sizes, "input_sizes", nd + 2)
    conv = _describe(nd, shape, w.shape, strides, padding, data_format, dilations, input_name="input_sizes")
    _check_out_backprop(conv, dy)
    plan = _plan(conv, dtype, algorithm, threads)
    dx = _empty_aligned((conv.batch,) + conv.in_hw + (conv.channels,), dtype)
    if dx.size:
        plan.backprop_input(np.ascontiguousarray(w), conv.to_native(dy), dx)
    return conv.from_native(dx)


def _backprop_filter(nd, input, filter_sizes, out_backprop, strides, padding, data_format, dilations, algorithm,
                     threads):
    x = _args.float_array(input, "input")
    dy = _args.float_array(out_backprop, "out_backprop")
    dtype = _args.same_dtype(input=x, out_backprop=dy)
    shape = _args.sizes(filter_sizes, "filter_sizes", nd + 2)
    conv = _describe(nd, x.shape, shape, strides, padding, data_format, dilations, filters_name="filter_sizes")
    _check_out_backprop(conv, dy)
    plan = _plan(conv, dtype, algorithm, threads)
    dw = _empty_aligned(shape, dtype)   # (k..., C/groups, K): the plan writes TensorFlow's layout directly
    if dw.size:
        plan.backprop_filter(conv.to_native(x), conv.to_native(dy), dw)
    return dw


ALGORITHMS = _args.ALGORITHMS
ACTIVATIONS = _args.ACTIVATIONS
_PLANS_KEPT = 64
_plans = {}                 # (geometry, dtype, algorithm, activation, threads) -> core.ConvPlan, oldest first
_plans_lock = threading.Lock()


def _plan(conv, dtype, algorithm, threads, activation=0):
    """The plan for this convolution: made once, then reused by every call with the same shapes and arguments
    (geometry, algorithm and tile per pass, taps, splits; transformed filters kept for inference)."""
    code = _args.algorithm_code(algorithm)
    n_threads = 0 if threads is None else _threads.resolve(threads)
    key = (conv, dtype.itemsize, code, activation, n_threads)
    plan = _plans.get(key)
    if plan is None:
        plan = core.ConvPlan(conv.batch, conv.in_hw[0], conv.in_hw[1], conv.channels, conv.k_hw[0], conv.k_hw[1],
                             conv.cg, conv.filters_out, conv.strides, conv.dilations, conv.pads, code,
                             dtype.itemsize, activation, n_threads)
        with _plans_lock:
            _plans[key] = plan
            while len(_plans) > _PLANS_KEPT:
                _plans.pop(next(iter(_plans)))
    return plan


def _empty_aligned(shape, dtype, align=64):
    """np.empty whose data starts on a 64-byte boundary: whole vectors for the kernels, and a buffer
    TensorFlow can adopt without copying."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    if nbytes + align > sys.maxsize:   # numpy would raise ValueError("Maximum allowed dimension exceeded")
        raise MemoryError(f"kconv: cannot allocate an array of shape {tuple(shape)} and dtype "
                          f"{np.dtype(dtype).name} ({nbytes} bytes)")
    raw = np.empty(nbytes + align, np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def _check_out_backprop(conv, dy):
    expected = conv.user_shape(conv.out_hw, conv.filters_out)
    if dy.shape != expected:
        raise ValueError(f"out_backprop must have shape {expected} (the convolution's output), got {dy.shape}")


def conv2d(input, filters, strides=1, padding="VALID", data_format="NHWC", dilations=1, *,
           algorithm="auto", threads=None, bias=None, activation="linear"):
    """2-D convolution (cross-correlation, as tf.nn.conv2d) of input (N, H, W, C) with filters (kh, kw, C/g, K).

    bias (K values) and activation (a name from ACTIVATIONS, Keras's defaults) are fused into the output store:
    the result is activation(conv2d(input, filters) + bias)."""
    return _forward(2, input, filters, strides, padding, data_format, dilations, algorithm, threads, bias,
                    activation)


def conv2d_backprop_input(input_sizes, filters, out_backprop, strides=1, padding="VALID", data_format="NHWC",
                          dilations=1, *, algorithm="auto", threads=None):
    """Gradient of conv2d with respect to its input, of shape input_sizes."""
    return _backprop_input(2, input_sizes, filters, out_backprop, strides, padding, data_format, dilations,
                           algorithm, threads)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides=1, padding="VALID", data_format="NHWC",
                           dilations=1, *, algorithm="auto", threads=None):
    """Gradient of conv2d with respect to its filters, of shape filter_sizes."""
    return _backprop_filter(2, input, filter_sizes, out_backprop, strides, padding, data_format, dilations,
                            algorithm, threads)


def conv1d(input, filters, stride=1, padding="VALID", data_format="NWC", dilations=1, *,
           algorithm="auto", threads=None, bias=None, activation="linear"):
    """1-D convolution of input (N, W, C) with filters (k, C/g, K); padding may also be 'CAUSAL'.
    bias and activation as in conv2d."""
    return _forward(1, input, filters, stride, padding, data_format, dilations, algorithm, threads, bias,
                    activation)


def conv1d_backprop_input(input_sizes, filters, out_backprop, stride=1, padding="VALID", data_format="NWC",
                          dilations=1, *, algorithm="auto", threads=None):
    """Gradient of conv1d with respect to its input, of shape input_sizes."""
    return _backprop_input(1, input_sizes, filters, out_backprop, stride, padding, data_format, dilations,
                           algorithm, threads)


def conv1d_backprop_filter(input, filter_sizes, out_backprop, stride=1, padding="VALID", data_format="NWC",
                           dilations=1, *, algorithm="auto", threads=None):
    """Gradient of conv1d with respect to its filters, of shape filter_sizes."""
    return _backprop_filter(1, input, filter_sizes, out_backprop, stride, padding, data_format, dilations,
                            algorithm, threads)


def clear_cache():
    """Forgets every plan, with the transformed Winograd filters they keep for weights that repeat
    (inference), and frees the scratch buffers kept for the next call. Benchmarks of training call it,
    because there the weights change every step."""
    with _plans_lock:
        _plans.clear()
    core.release_scratch()


def set_filter_cache(enabled):
    """Whether plans keep the transformed Winograd filters of weights that come twice in a row (on by
    default), in the numpy API and the TensorFlow op alike: inference then transforms its filters once, and a
    batch-1 layer with many channels runs Winograd instead of direct. Off, every call transforms its filters,
    as a training step's does, and no plan takes a new copy of the weights (what plans already hold stays
    until clear_cache, or until the op's kernels go). Returns the previous setting. The bench's pass tables
    turn it off: each node of their graphs sees the same weights on every call."""
    if not isinstance(enabled, (bool, np.bool_)):
        raise TypeError(f"set_filter_cache: enabled must be True or False, got {enabled!r}")
    return bool(core.set_filter_cache(bool(enabled)))


def memory_info():
    """What kconv keeps between calls: the numpy API's plans (at most 64) and the transformed filters they
    hold for inference, and the big scratch buffers (Winograd tiles, packed filters, the filter gradient's
    partial sums) kept for the next call of any API, at most 8 of them and 256 MiB (scratch_bytes).
    Smaller scratch (pointer tables, under 256 KiB) is freed before a call returns."""
    with _plans_lock:
        plans = list(_plans.values())
    cached = [plan.cache_bytes() for plan in plans]
    return dict(plans=len(plans), plans_limit=_PLANS_KEPT, filter_cache_entries=sum(1 for b in cached if b),
                filter_cache_bytes=sum(cached), scratch_bytes=core.scratch_bytes())


def matmul(a, b, *, threads=None):
    """a @ b on kconv's micro-kernel (a 1x1 convolution of M pixels), for tests and the micro-kernel benchmark."""
    a = _args.float_array(a, "a")
    b = _args.float_array(b, "b")
    _args.same_dtype(a=a, b=b)
    _args.rank(a, 2, "a", "M x K")
    _args.rank(b, 2, "b", "K x N")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dimensions differ: a has shape {a.shape}, b has shape {b.shape}")
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[1]), a.dtype)
    return conv2d(a[None, None], b[None, None], threads=threads)[0, 0]

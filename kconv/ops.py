"""kconv's numpy API: convolutions and their gradients with the signatures of tf.nn, no TensorFlow needed.

    y  = conv2d(x, w, strides, padding, data_format, dilations)
    dx = conv2d_backprop_input(x.shape, w, dy, strides, padding, data_format, dilations)
    dw = conv2d_backprop_filter(x, w.shape, dy, strides, padding, data_format, dilations)

and the 1-D twins. Filters are laid out as in TensorFlow, (k..., C/groups, K); groups = C / filters.shape[-2].
float32 and float64. Inputs are never modified; any strides are accepted (a contiguous copy is made when
needed). Every function takes `threads=None` (see kconv.set_num_threads) and `algorithm`: "auto" (Winograd
where it is faster and accurate, else direct), "direct", "winograd" (F(m,3) with m chosen), "winograd2",
"winograd4", "winograd6".
"""
import functools
import math
import sys
from dataclasses import dataclass

import numpy as np

from . import _args, _geometry, _threads, _winograd
from ._backend import core

__all__ = ["clear_cache", "memory_info", "conv1d", "conv1d_backprop_filter", "conv1d_backprop_input", "conv2d",
           "conv2d_backprop_filter", "conv2d_backprop_input", "matmul"]

# Pixels per chunk of the filter gradient's reduction, and how many tasks its split aims at. Both depend on
# the shape only, never on the thread count, so results are the same for any number of threads.
_FILTER_GRAD_TARGET_TASKS = 64
_FILTER_GRAD_PARTIAL_BYTES = 256 << 20


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

    def filters_native(self, filters):
        """(taps, C/groups, K), contiguous."""
        return np.ascontiguousarray(filters).reshape(-1, self.cg, self.filters_out)


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
    if cg < 1 or channels % cg:
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


def _forward(nd, input, filters, strides, padding, data_format, dilations, algorithm, threads):
    x = _args.float_array(input, "input")
    w = _args.float_array(filters, "filters")
    dtype = _args.same_dtype(input=x, filters=w)
    conv = _describe(nd, x.shape, w.shape, strides, padding, data_format, dilations)
    y = _empty_aligned((conv.batch,) + conv.out_hw + (conv.filters_out,), dtype)
    tile = _choose_algorithm(conv, algorithm, (conv.pads[0][0], conv.pads[1][0]))
    if y.size == 0:
        return conv.from_native(y)
    with _threads.claim(conv.flops, threads) as n_threads:
        finite = tile and _winograd.forward(core, conv.to_native(x), _filters_4d(conv, w), y, conv,
                                            (conv.pads[0][0], conv.pads[1][0]), tile, _winograd_block(), n_threads)
        if not finite:   # direct, or Winograd met a NaN/Inf (it would smear it over a tile)
            tap_h, tap_w, tap_index = _geometry.forward_taps(conv.k_hw, conv.dilations, conv.pads)
            core.conv_igemm(conv.to_native(x), conv.filters_native(w), y, tap_h, tap_w, tap_index,
                            conv.out_hw[0], conv.out_hw[1], conv.strides[0], conv.strides[1], 0, 0, 1, 1,
                            conv.groups, False, n_threads)
    return conv.from_native(y)


def _backprop_input(nd, input_sizes, filters, out_backprop, strides, padding, data_format, dilations, algorithm,
                    threads):
    w = _args.float_array(filters, "filters")
    dy = _args.float_array(out_backprop, "out_backprop")
    dtype = _args.same_dtype(filters=w, out_backprop=dy)
    shape = _args.sizes(input_sizes, "input_sizes", nd + 2)
    conv = _describe(nd, shape, w.shape, strides, padding, data_format, dilations, input_name="input_sizes")
    _check_out_backprop(conv, dy)
    dx = _empty_aligned((conv.batch,) + conv.in_hw + (conv.channels,), dtype)
    pads = _winograd.input_gradient_pads(conv)
    tile = _choose_algorithm(conv, algorithm, pads)
    if dx.size == 0:
        return conv.from_native(dx)
    with _threads.claim(conv.flops, threads) as n_threads:
        # Winograd: dx = dy * rot180(filters) with in/out channels swapped, a forward convolution
        finite = tile and _winograd.forward(core, conv.to_native(dy),
                                            _winograd.rotated_transposed(_filters_4d(conv, w)), dx, conv, pads,
                                            tile, _winograd_block(), n_threads)
        if not finite:
            dy_native, w_native = conv.to_native(dy), conv.filters_native(w)
            for rh, rw, qh, qw, tap_h, tap_w, tap_index in _geometry.input_gradient_phases(
                    conv.in_hw, conv.k_hw, conv.strides, conv.dilations, conv.pads):
                core.conv_igemm(dy_native, w_native, dx, tap_h, tap_w, tap_index, qh, qw, 1, 1,
                                rh, rw, conv.strides[0], conv.strides[1], conv.groups, True, n_threads)
    return conv.from_native(dx)


def _backprop_filter(nd, input, filter_sizes, out_backprop, strides, padding, data_format, dilations, algorithm,
                     threads):
    x = _args.float_array(input, "input")
    dy = _args.float_array(out_backprop, "out_backprop")
    dtype = _args.same_dtype(input=x, out_backprop=dy)
    shape = _args.sizes(filter_sizes, "filter_sizes", nd + 2)
    conv = _describe(nd, x.shape, shape, strides, padding, data_format, dilations, filters_name="filter_sizes")
    _check_out_backprop(conv, dy)
    tile = _choose_algorithm(conv, algorithm, (0, 0))
    taps = math.prod(conv.k_hw)
    pixels = conv.batch * conv.out_hw[0] * conv.out_hw[1]
    if pixels == 0 or conv.cg * conv.kg == 0:
        return np.zeros(shape, dtype)
    if tile and algorithm == "auto":
        tile = _filter_gradient_tile(conv, tile)
    with _threads.claim(conv.flops, threads) as n_threads:
        if tile:
            dw = _winograd.filter_gradient(core, conv.to_native(x), conv.to_native(dy), conv,
                                           (conv.pads[0][0], conv.pads[1][0]), tile, n_threads)
            if np.isfinite(dw).all():   # else recompute directly: Winograd spreads a NaN/Inf over its tile's taps
                return dw.reshape(shape)
        tap_h, tap_w, _ = _geometry.forward_taps(conv.k_hw, conv.dilations, conv.pads)
        chunk, splits = _filter_grad_split(conv, taps, pixels, dtype)
        partial = np.empty((splits, conv.groups, conv.kg, taps * conv.cg), dtype)
        core.filter_grad_partial(conv.to_native(x), conv.to_native(dy), partial, tap_h, tap_w,
                                 conv.strides[0], conv.strides[1], conv.groups, chunk, n_threads)
    total = partial[0] if splits == 1 else partial.sum(axis=0)     # fixed order: split 0, 1, 2, ...
    # (groups, K/groups, taps, C/groups) -> (taps, C/groups, groups, K/groups) = TensorFlow's filter layout
    dw = total.reshape(conv.groups, conv.kg, taps, conv.cg).transpose(2, 3, 0, 1)
    return np.ascontiguousarray(dw).reshape(shape)


def _filter_grad_split(conv, taps, pixels, dtype):
    """(pixels per chunk, number of pixel splits) for the filter gradient: from the shape alone."""
    _, nr = core.tile_shape(dtype)
    chunk = int(np.clip(65536 // max(conv.kg, 1), 64, 512))
    column_panels = -(-taps * conv.cg // nr)
    column_tasks = conv.groups * -(-column_panels // 8)      # 8 = COL_PANELS_PER_TASK in filter_grad.pxi
    splits = max(1, min(-(-_FILTER_GRAD_TARGET_TASKS // column_tasks), -(-pixels // chunk)))
    plane_bytes = conv.groups * conv.kg * taps * conv.cg * np.dtype(dtype).itemsize
    return chunk, max(1, min(splits, _FILTER_GRAD_PARTIAL_BYTES // max(plane_bytes, 1)))


ALGORITHMS = ("auto", "direct", "winograd") + tuple(f"winograd{m}" for m in _winograd.TILES)


def _choose_algorithm(conv, algorithm, winograd_pads):
    """The Winograd output tile m to use, or 0 for direct convolution.

    "auto" takes Winograd where kconv's benchmark measured it faster and its float32 error stays within
    2e-5 of max|y| (README, accuracy table): 3x3 / k=3, stride 1, no dilation or groups, at least
    AUTO_MIN_CHANNELS channels in and out. "winogradM" forces F(M, 3); "winograd" picks M."""
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    algorithm = algorithm.lower()
    if algorithm == "direct":
        return 0
    reason = _winograd.unsupported_reason(conv)
    if reason is None and winograd_pads is None:
        reason = f"the padding {conv.pads} is wider than the kernel"
    if algorithm == "auto":
        small = min(conv.cg, conv.kg) < AUTO_MIN_CHANNELS
        return 0 if reason or small else _winograd_tile(conv)
    if reason:
        raise ValueError(f"algorithm={algorithm!r} cannot run this convolution: {reason}; use 'auto' or 'direct'")
    return int(algorithm[len("winograd"):]) if algorithm != "winograd" else _winograd_tile(conv)


AUTO_MIN_CHANNELS = 16


def _winograd_tile(conv):
    """F(4x4, 3x3) (F(4, 3) in 1-D): 4x fewer multiplications than direct in 2-D, float32 error within 2e-5
    at C = 512. F(2x2, 3x3) where 4-wide tiles would pad the map by over 25 % and 2-wide tiles by less
    (a 14x14 map: 31 % against none); measured on benchmarks/bench_layers.py (README)."""
    sides = conv.out_hw[2 - conv.nd:]
    waste = lambda m: math.prod(-(-n // m) * m for n in sides) / math.prod(sides)
    return 2 if waste(4) > 1.25 and waste(2) < waste(4) else 4


def _filter_gradient_tile(conv, forward_tile):
    """auto's tile for the filter gradient, or 0 for direct. Its reduction runs over every tile of the batch,
    and F(4x4, 3x3) lets float32 error grow past 1e-5 of max|dW| there (1.0-1.8e-5 measured, README), so 2-D
    takes F(2x2, 3x3) (1.1-1.4e-6); 1-D keeps F(4, 3) (3e-6). Direct where the transformed gradient outweighs
    the tiles (few tiles, many channels)."""
    tile = 2 if conv.nd == 2 else forward_tile
    return tile if _winograd.filter_gradient_pays(conv, tile) else 0


def _winograd_block():
    return _winograd.BLOCK_PANELS * core.tile_shape(np.float32)[0]


def _filters_4d(conv, w):
    """The filters as a contiguous (kh, kw, C/groups, K) array (1-D: kh = 1)."""
    return np.ascontiguousarray(w).reshape(conv.k_hw + (conv.cg, conv.filters_out))


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
           algorithm="auto", threads=None):
    """2-D convolution (cross-correlation, as tf.nn.conv2d) of input (N, H, W, C) with filters (kh, kw, C/g, K)."""
    return _forward(2, input, filters, strides, padding, data_format, dilations, algorithm, threads)


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
           algorithm="auto", threads=None):
    """1-D convolution of input (N, W, C) with filters (k, C/g, K); padding may also be 'CAUSAL'."""
    return _forward(1, input, filters, stride, padding, data_format, dilations, algorithm, threads)


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
    """Forgets the transformed Winograd filters kept for weights that repeat (inference). Benchmarks of
    training call it, because there the weights change every step and nothing is reused."""
    _winograd._filter_cache.clear()


def memory_info():
    """Bytes kconv holds between calls. Everything else a call needs (pointer tables, packed filters, the
    filter gradient's partial sums, capped at 256 MiB) is freed when it returns.

    filter_cache_*: transformed Winograd filters kept for repeating weights (at most 16 entries, 512 MiB);
    thread_buffer_bytes: the calling thread's reusable Winograd buffers (the largest layer it ran)."""
    cache = _winograd._filter_cache
    with cache.lock:
        entries = list(cache.entries.values())
    return dict(filter_cache_entries=len(entries),
                filter_cache_bytes=sum(w.nbytes + p.nbytes for w, p in entries),
                filter_cache_limit_bytes=cache.MAX_BYTES,
                thread_buffer_bytes=sum(a.nbytes for a in _winograd._buffers.arrays.values()))


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

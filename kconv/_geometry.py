"""Where each tap of a convolution reads: padding, output sizes, and the tap lists the kernels take.

All in NHWC with H and W handled alike, one spatial dimension at a time; 1-D runs as H = 1.
"""
import functools
import itertools

import numpy as np


def same_padding(size, k, s, d):
    """TensorFlow's SAME: output ceil(size / s); the odd pixel of padding goes after (bottom/right)."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, in_sizes, k_sizes, strides, dilations):
    """Explicit (before, after) pairs per spatial dimension."""
    if padding == "VALID":
        return tuple((0, 0) for _ in in_sizes)
    if padding == "SAME":
        return tuple(same_padding(n, k, s, d) for n, k, s, d in zip(in_sizes, k_sizes, strides, dilations))
    if padding == "CAUSAL":
        return tuple(((k - 1) * d, 0) for k, d in zip(k_sizes, dilations))
    return padding


def output_sizes(in_sizes, k_sizes, strides, dilations, pads):
    """Output size per dimension; ValueError when the dilated kernel does not fit the padded input.

    A zero-length input gives a zero-length output (an empty sequence is not an error)."""
    out = []
    for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(in_sizes, k_sizes, strides, dilations, pads)):
        span = (k - 1) * d + 1
        if n + lo + hi < span:
            if n == 0:
                out.append(0)
                continue
            raise ValueError(
                f"the filter (size {k}, dilation {d}, spanning {span}) is larger than the padded input along "
                f"spatial axis {axis} (size {n} + padding {lo}+{hi} = {n + lo + hi})")
        out.append((n + lo + hi - span) // s + 1)
    return tuple(out)


@functools.lru_cache(maxsize=256)
def forward_taps(k_sizes, dilations, pads):
    """For every tap (kh, kw): the source offset from output pixel q * stride, and the tap's index.

    Built with numpy, not Python tuples: a huge kernel (filter_sizes of 10^6 x 10^6) then fails at once
    with MemoryError instead of filling the machine's memory with a list of tuples."""
    (kh, kw), (dh, dw), ((ph, _), (pw, _)) = k_sizes, dilations, pads
    rows = np.arange(kh, dtype=np.intp) * dh - ph
    cols = np.arange(kw, dtype=np.intp) * dw - pw
    return _tap_columns(np.repeat(rows, kw), np.tile(cols, kh), np.arange(kh * kw, dtype=np.intp))


def input_gradient_phases(in_sizes, k_sizes, strides, dilations, pads):
    """The input gradient split by stride phase (rh, rw): input pixels rh + qh*sh see the same taps.

    Yields (rh, rw, Qh, Qw, tap_h, tap_w, tap_index): for input row rh + qh*sh and tap kh, the output row
    is qh + tap_h, where (rh + ph - kh*dh) is divisible by sh (other taps never reach that row).
    """
    (H, W), (kh, kw), (sh, sw), (dh, dw), ((ph, _), (pw, _)) = in_sizes, k_sizes, strides, dilations, pads
    for rh, rw in itertools.product(range(min(sh, H)), range(min(sw, W))):
        i = np.arange(kh, dtype=np.intp)
        i = i[(rh + ph - i * dh) % sh == 0]
        j = np.arange(kw, dtype=np.intp)
        j = j[(rw + pw - j * dw) % sw == 0]
        oh, ow = (rh + ph - i * dh) // sh, (rw + pw - j * dw) // sw
        taps = _tap_columns(np.repeat(oh, j.size), np.tile(ow, i.size), (i[:, None] * kw + j[None, :]).reshape(-1))
        yield (rh, rw, -(-(H - rh) // sh), -(-(W - rw) // sw)) + taps


def _tap_columns(*columns):
    columns = tuple(np.ascontiguousarray(c, dtype=np.intp) for c in columns)
    for column in columns:   # shared through the cache: nobody may change them
        column.flags.writeable = False
    return columns

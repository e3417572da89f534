"""Float64 reference convolutions, written for obviousness rather than speed.

Everything here works in NHWC with explicit padding pairs ((top, bottom), (left, right)),
strides (sh, sw), dilations (dh, dw) and groups = C // filters.shape[2], exactly like tf.nn.
1-D convolution is 2-D convolution with H = 1 (see the ``*_1d`` wrappers).

The forward pass loops over kernel taps; for every tap it takes the strided window of the
(zero-)padded input that this tap sees and contracts it with that tap's filter slice, one
einsum per tap, all in float64.  The two gradients are the adjoint of that loop: they
scatter (input gradient) or correlate (filter gradient) tap by tap.
"""

import math

import numpy as np

# ---------------------------------------------------------------------------------------
# Padding, exactly as TensorFlow computes it.
# ---------------------------------------------------------------------------------------


def same_pad(in_size, k, stride, dilation):
    """TensorFlow's SAME padding for one axis -> (before, after); the extra goes after."""
    out = math.ceil(in_size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - in_size, 0)
    return total // 2, total - total // 2


def pad_pairs_2d(padding, in_hw, k_hw, strides, dilations):
    """"VALID" / "SAME" / explicit pairs -> ((top, bottom), (left, right)).

    Explicit padding may be [(t, b), (l, r)] or tf's NHWC 4-pair form [[0,0],[t,b],[l,r],[0,0]].
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return (0, 0), (0, 0)
        if mode == "SAME":
            return tuple(same_pad(n, k, s, d) for n, k, s, d in zip(in_hw, k_hw, strides, dilations))
        raise ValueError(f"unknown padding {padding!r}")
    pairs = [tuple(int(v) for v in p) for p in padding]
    if len(pairs) == 4:
        pairs = pairs[1:3]
    (t, b), (l, r) = pairs
    return (t, b), (l, r)


def pad_pair_1d(padding, in_w, k, stride, dilation):
    """"VALID" / "SAME" / "CAUSAL" / explicit [(left, right)] -> (left, right)."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return 0, 0
        if mode == "SAME":
            return same_pad(in_w, k, stride, dilation)
        if mode == "CAUSAL":
            return dilation * (k - 1), 0
        raise ValueError(f"unknown padding {padding!r}")
    pairs = [tuple(int(v) for v in p) for p in padding]
    if len(pairs) == 3:
        pairs = pairs[1:2]
    ((l, r),) = pairs
    return l, r


def out_size(in_size, k, stride, dilation, pad):
    """Output length along one axis for a padded input (pad = (before, after))."""
    span = (k - 1) * dilation + 1
    padded = in_size + pad[0] + pad[1]
    if padded < span:
        raise ValueError(f"kernel span {span} larger than padded input {padded}")
    return (padded - span) // stride + 1


# ---------------------------------------------------------------------------------------
# Core: per-tap windows and the group split of a filter.
# ---------------------------------------------------------------------------------------


def _tap_window(i, j, out_hw, strides, dilations):
    """Slices (rows, cols) of the padded input that kernel tap (i, j) reads for every output."""
    (ho, wo), (sh, sw), (dh, dw) = out_hw, strides, dilations
    return (slice(i * dh, i * dh + (ho - 1) * sh + 1, sh), slice(j * dw, j * dw + (wo - 1) * sw + 1, sw))


def _grouped_tap(filters, i, j, groups):
    """filters[i, j] of shape (C/g, K) -> (g, C/g, K/g): group gi maps its channels to its outputs."""
    cg, k = filters.shape[2], filters.shape[3]
    return filters[i, j].reshape(cg, groups, k // groups).transpose(1, 0, 2)


def _groups(c, filter_shape):
    """groups = C // filters' input channels, as tf.nn infers it."""
    cg, k = filter_shape[-2], filter_shape[-1]
    if cg == 0 or c % cg or k % (c // cg):
        raise ValueError(f"bad grouping: C={c}, filters {tuple(filter_shape)}")
    return c // cg


def _dims(in_hw, k_hw, strides, dilations, pads):
    return tuple(out_size(n, k, s, d, p) for n, k, s, d, p in zip(in_hw, k_hw, strides, dilations, pads))


# ---------------------------------------------------------------------------------------
# 2-D, NHWC.
# ---------------------------------------------------------------------------------------


def conv2d(x, filters, strides=(1, 1), pads=((0, 0), (0, 0)), dilations=(1, 1)):
    """y[n, p, q, k] = sum_{i, j, c in group(k)} xpad[n, p*sh + i*dh, q*sw + j*dw, c] * w[i, j, c', k]."""
    x = np.asarray(x, np.float64)
    filters = np.asarray(filters, np.float64)
    n, h, w, c = x.shape
    kh, kw, _, k = filters.shape
    g = _groups(c, filters.shape)
    ho, wo = _dims((h, w), (kh, kw), strides, dilations, pads)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).reshape(n, h + sum(pads[0]), w + sum(pads[1]), g, c // g)
    y = np.zeros((n, ho, wo, g, k // g))
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_window(i, j, (ho, wo), strides, dilations)
            y += np.einsum("nhwgc,gck->nhwgk", xp[:, rows, cols], _grouped_tap(filters, i, j, g))
    return y.reshape(n, ho, wo, k)


def conv2d_backprop_input(input_sizes, filters, dy, strides=(1, 1), pads=((0, 0), (0, 0)), dilations=(1, 1)):
    """Adjoint of conv2d w.r.t. x: every output's gradient is scattered back through each tap."""
    filters = np.asarray(filters, np.float64)
    dy = np.asarray(dy, np.float64)
    n, h, w, c = input_sizes
    kh, kw, _, k = filters.shape
    g = _groups(c, filters.shape)
    ho, wo = _dims((h, w), (kh, kw), strides, dilations, pads)
    assert dy.shape == (n, ho, wo, k), (dy.shape, (n, ho, wo, k))
    dyg = dy.reshape(n, ho, wo, g, k // g)
    dxp = np.zeros((n, h + sum(pads[0]), w + sum(pads[1]), g, c // g))
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_window(i, j, (ho, wo), strides, dilations)
            dxp[:, rows, cols] += np.einsum("nhwgk,gck->nhwgc", dyg, _grouped_tap(filters, i, j, g))
    dxp = dxp.reshape(n, h + sum(pads[0]), w + sum(pads[1]), c)
    return dxp[:, pads[0][0] : pads[0][0] + h, pads[1][0] : pads[1][0] + w]


def conv2d_backprop_filter(x, filter_sizes, dy, strides=(1, 1), pads=((0, 0), (0, 0)), dilations=(1, 1)):
    """Adjoint of conv2d w.r.t. the filters: correlate each tap's input window with dy."""
    x = np.asarray(x, np.float64)
    dy = np.asarray(dy, np.float64)
    n, h, w, c = x.shape
    kh, kw, cg, k = filter_sizes
    g = _groups(c, filter_sizes)
    ho, wo = _dims((h, w), (kh, kw), strides, dilations, pads)
    assert dy.shape == (n, ho, wo, k), (dy.shape, (n, ho, wo, k))
    dyg = dy.reshape(n, ho, wo, g, k // g)
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0))).reshape(n, h + sum(pads[0]), w + sum(pads[1]), g, cg)
    dw = np.zeros((kh, kw, cg, k))
    for i in range(kh):
        for j in range(kw):
            rows, cols = _tap_window(i, j, (ho, wo), strides, dilations)
            gck = np.einsum("nhwgc,nhwgk->gck", xp[:, rows, cols], dyg)
            dw[i, j] = gck.transpose(1, 0, 2).reshape(cg, k)
    return dw


# ---------------------------------------------------------------------------------------
# 1-D, NWC: the 2-D reference with H = 1.
# ---------------------------------------------------------------------------------------


def conv1d(x, filters, stride=1, pad=(0, 0), dilation=1):
    x = np.asarray(x)[:, None]
    filters = np.asarray(filters)[None]
    return conv2d(x, filters, (1, stride), ((0, 0), tuple(pad)), (1, dilation))[:, 0]


def conv1d_backprop_input(input_sizes, filters, dy, stride=1, pad=(0, 0), dilation=1):
    n, w, c = input_sizes
    f2, dy2 = np.asarray(filters)[None], np.asarray(dy)[:, None]
    return conv2d_backprop_input((n, 1, w, c), f2, dy2, (1, stride), ((0, 0), tuple(pad)), (1, dilation))[:, 0]


def conv1d_backprop_filter(x, filter_sizes, dy, stride=1, pad=(0, 0), dilation=1):
    x2, dy2 = np.asarray(x)[:, None], np.asarray(dy)[:, None]
    return conv2d_backprop_filter(x2, (1, *filter_sizes), dy2, (1, stride), ((0, 0), tuple(pad)), (1, dilation))[0]


# ---------------------------------------------------------------------------------------
# Layout helpers.
# ---------------------------------------------------------------------------------------


def to_channels_last(a):
    """NCHW -> NHWC (or NCW -> NWC)."""
    return np.moveaxis(a, 1, -1)


def to_channels_first(a):
    """NHWC -> NCHW (or NWC -> NCW)."""
    return np.moveaxis(a, -1, 1)

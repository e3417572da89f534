"""Winograd minimal filtering F(m, 3): the transform matrices, exact, and the convolutions built on them.

The matrices come from the Toom-Cook construction on interpolation points (plus the point at infinity),
computed in exact fractions and only then rounded to float64:

    y = A^T [ (G g) (.) (B^T d) ]      y_i = sum_k d[i + k] g[k]   (cross-correlation, as tf.nn)

F(2,3) uses points 0, 1, -1; F(4,3) adds 2, -2; F(6,3) adds 1/2, -1/2 (NNPACK's choice). Larger tiles do
fewer multiplications (2.25x, 4x, 5.06x fewer in 2-D) and lose accuracy: see the README's table.
"""
import math
import threading
from fractions import Fraction
from functools import lru_cache

import numpy as np

POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2), 6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))}


def _poly_times_root(poly, root):
    """Coefficients (lowest first) of poly(x) * (x - root)."""
    out = [Fraction(0)] * (len(poly) + 1)
    for i, c in enumerate(poly):
        out[i] -= c * root
        out[i + 1] += c
    return out


@lru_cache(maxsize=None)
def matrices(m, r=3):
    """(A^T, G, B^T) of F(m, r) as float64 arrays: shapes (m, alpha), (alpha, r), (alpha, alpha)."""
    if (m, r) == (1, 1):   # the identity transform of an axis the kernel does not span (1-D as 2-D)
        one = np.ones((1, 1))
        return one, one, one
    points = [Fraction(p) for p in POINTS[m]]
    alpha = m + r - 1
    at = [[p ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = [[p ** k / _prod(p - q for q in points if q != p) for k in range(r)] for p in points]
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt = []
    for p in points:
        poly = [Fraction(1)]
        for q in points:
            if q != p:
                poly = _poly_times_root(poly, q)
        bt.append(poly + [Fraction(0)] * (alpha - len(poly)))
    poly = [Fraction(1)]
    for q in points:
        poly = _poly_times_root(poly, q)
    bt.append(poly)
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])
    return as_array(at), as_array(g), as_array(bt)


def _prod(values):
    out = Fraction(1)
    for v in values:
        out *= v
    return out


# Tiles per thread block: the block's transformed inputs and products (alpha^2 x block x (C + K)) stay in
# L2/L3 while the alpha^2 products run over them. Measured on the core benchmark: 4 panels of rows.
BLOCK_PANELS = 4
TILES = (2, 4, 6)


def unsupported_reason(conv):
    """None when Winograd F(m, 3) can run this convolution, else why not (for the error message)."""
    if conv.k_hw[1] != 3 or conv.k_hw[0] not in ((1,) if conv.nd == 1 else (3,)):
        return f"the kernel is {'x'.join(map(str, conv.k_hw[2 - conv.nd:]))}, Winograd needs 3" + ("" if conv.nd == 1 else "x3")
    if conv.strides != (1, 1):
        return f"strides are {conv.strides[2 - conv.nd:]}, Winograd needs 1"
    if conv.dilations != (1, 1):
        return f"dilations are {conv.dilations[2 - conv.nd:]}, Winograd needs 1"
    if conv.groups != 1:
        return f"groups = {conv.groups}, Winograd needs 1"
    return None


def _axis_matrices(conv, m):
    """(m, A^T, G, B^T) for the H axis and the W axis; a 1-D convolution has the identity along H."""
    mh = m if conv.k_hw[0] == 3 else 1
    return (mh,) + matrices(mh, conv.k_hw[0]), (m,) + matrices(m, conv.k_hw[1])


def forward(core, x, filters, y, conv, pads, m, block, n_threads):
    """y = conv(x, filters) by F(m x m, 3 x 3) (F(m, 3) in 1-D); x, filters, y in native layout.

    `pads` are the (top, left) paddings; y's size sets the bottom/right ones. Returns False when y holds a
    NaN or infinity: Winograd spreads one over its whole tile, so the caller recomputes by direct convolution.
    """
    (mh, ath, gh, bth), (mw, atw, gw, btw) = _axis_matrices(conv, m)
    panels = _filter_cache.lookup(filters, m)
    if panels is None:
        panels = core.winograd_filter_panels(filters, gh, gw, n_threads, _buffers.get("panels", filters.dtype))
        if _filter_cache.offer(filters, m, panels):
            _buffers.arrays.pop("panels", None)   # the cache owns this array now
        else:
            _buffers.keep("panels", panels)
    c, k = filters.shape[2], filters.shape[3]
    tiles = y.shape[0] * -(-y.shape[1] // mh) * -(-y.shape[2] // mw)
    staged = None
    if tiles * (c + k) < c * k:   # the transformed filters outweigh a product's inputs and outputs
        staged = _buffers.take("staged", (mh + 2 if mh > 1 else 1) * (mw + 2) * tiles * (c + k), filters.dtype)
    return core.winograd_forward(x, panels, y, pads[0], pads[1], mh, mw, bth, ath, btw, atw, block, n_threads,
                                 staged)


class _ThreadBuffers(threading.local):
    """Large scratch kept per thread between calls: a fresh multi-megabyte array costs its page faults on
    every call (measured: ~10 % of a 512-channel layer). One buffer per purpose, grown as needed."""

    def __init__(self):
        self.arrays = {}

    def get(self, name, dtype):
        array = self.arrays.get(name)
        return array if array is not None and array.dtype == dtype else None

    def keep(self, name, array):
        base = array.base if array.base is not None else array
        self.arrays[name] = base

    def take(self, name, size, dtype):
        array = self.get(name, dtype)
        if array is None or array.shape[0] < size:
            array = self.arrays[name] = np.empty(size, dtype)
        return array[:size]


_buffers = _ThreadBuffers()


class _FilterCache:
    """Transformed filters kept while the weights do not change (inference), so they are transformed once.

    A filter seen for the first time leaves only a fingerprint (its shape and 16 sampled values); when the
    same fingerprint comes back, the weights are copied and their transform kept. A hit is confirmed by an
    exact comparison with that copy, so changed weights are never served stale. Training, where the weights
    change every step, pays only for the fingerprint. Entries are bounded in count and bytes (oldest go).
    """
    MAX_ENTRIES = 16
    MAX_BYTES = 512 << 20

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {}      # fingerprint -> None (seen once)
        self.entries = {}   # fingerprint -> (weights copy, panels), oldest first

    @staticmethod
    def _fingerprint(filters, m):
        flat = filters.reshape(-1)
        sample = flat[:: max(1, flat.size // 16)][:16]
        return (m, filters.shape, filters.dtype.str, sample.tobytes())

    def lookup(self, filters, m):
        key = self._fingerprint(filters, m)
        with self.lock:
            entry = self.entries.get(key)
        if entry is not None and np.array_equal(entry[0], filters):
            return entry[1]
        return None

    def offer(self, filters, m, panels):
        """Keeps panels if these weights were seen before; True when it did (the caller must not reuse them)."""
        key = self._fingerprint(filters, m)
        with self.lock:
            if key not in self.seen:
                self.seen[key] = None
                while len(self.seen) > 4 * self.MAX_ENTRIES:
                    self.seen.pop(next(iter(self.seen)))
                return False
            self.entries.pop(key, None)
            self.entries[key] = (filters.copy(), panels)
            while self.entries and (len(self.entries) > self.MAX_ENTRIES or sum(
                    w.nbytes + p.nbytes for w, p in self.entries.values()) > self.MAX_BYTES):
                self.entries.pop(next(iter(self.entries)))
            return key in self.entries

    def clear(self):
        with self.lock:
            self.seen.clear()
            self.entries.clear()


_filter_cache = _FilterCache()


def filter_gradient(core, x, dy, conv, pads, m, n_threads):
    """dW of a stride-1 3x3 (1-D: k=3) convolution by Winograd, as (kh, kw, C, K) float64-accumulated in
    the last step: M = sum over tiles of (A dY A^T) (.) (B^T X B) on the micro-kernel, then G^T M G."""
    (mh, ath, gh, bth), (mw, atw, gw, btw) = _axis_matrices(conv, m)
    ah, aw = bth.shape[0], btw.shape[0]
    c, k = x.shape[3], dy.shape[3]
    # tiles per chunk: its transformed operands (alpha^2 x chunk x (C + K)) within ~16 MB; shape-only
    chunk = int(np.clip((4 << 20) // (ah * aw * (c + k)), 16, 1024))
    mgrad = np.empty((ah * aw, k, c), x.dtype)
    core.winograd_filter_gradient(x, dy, mgrad, pads[0], pads[1], mh, mw, bth, btw,
                                  np.ascontiguousarray(ath.T), np.ascontiguousarray(atw.T), chunk, n_threads)
    m4 = mgrad.reshape(ah, aw, k, c)
    gh, gw = gh.astype(x.dtype), gw.astype(x.dtype)   # keep M in its own precision: no float64 copy
    dw = np.tensordot(gw, np.tensordot(gh, m4, axes=([0], [0])), axes=([0], [1]))   # (j, i, K, C)
    return dw.transpose(1, 0, 3, 2)


def filter_gradient_pays(conv, m):
    """Whether the Winograd filter gradient beats direct: not when the transformed gradient (alpha^2 x C x K)
    outweighs the tiles' operands (few tiles, many channels: measured 1.6x slower on 16x7x7x512)."""
    tiles = conv.batch * math.prod(-(-n // m) for n in conv.out_hw[2 - conv.nd:])
    return tiles * (conv.cg + conv.kg) >= conv.cg * conv.kg


def input_gradient_pads(conv):
    """(top, left) padding of dy for dx = dy * rot180(filters): k - 1 - pad. None if negative."""
    top = conv.k_hw[0] - 1 - conv.pads[0][0]
    left = conv.k_hw[1] - 1 - conv.pads[1][0]
    bottom = conv.k_hw[0] - 1 - conv.pads[0][1]
    right = conv.k_hw[1] - 1 - conv.pads[1][1]
    return None if min(top, left, bottom, right) < 0 else (top, left)


def rotated_transposed(filters):
    """(kh, kw, C, K) -> (kh, kw, K, C) turned by 180 degrees: the filters of the input gradient."""
    return np.ascontiguousarray(filters[::-1, ::-1].transpose(0, 1, 3, 2))

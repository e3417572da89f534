"""Convolution test cases: one object per configuration that can build its inputs, call kconv and
compute the float64 reference, in either data format.

A case is described in the terms of the public API (shapes in the case's data format, padding as the
user writes it); the reference always works in channels-last with explicit padding pairs.
"""

import dataclasses
import random

import numpy as np

import reference as ref

CHANNELS = [1, 3, 5, 6, 7, 8, 15, 16, 17, 31, 33, 64]  # below / at / above the micro-kernel tiles
OPS = ["forward", "backprop_input", "backprop_filter"]


def _layout(a, channels_first):
    """Channels-last reference array -> the case's data format (C-contiguous)."""
    return np.ascontiguousarray(ref.to_channels_first(a)) if channels_first else a


def _unlayout(a, channels_first):
    """The case's data format -> channels-last, for the reference."""
    return ref.to_channels_last(a) if channels_first else a


class _Ops:
    """What both case classes share: dispatch by op name, and the size of an op's terms."""

    def call(self, op, x, f, dy):
        """kconv's result for op in OPS."""
        if op == "forward":
            return self.forward(x, f)
        if op == "backprop_input":
            return self.backprop_input(f, dy)
        return self.backprop_filter(x, dy)

    def reference(self, op, x, f, dy):
        """The float64 reference for op in OPS."""
        if op == "forward":
            return self.ref_forward(x, f)
        if op == "backprop_input":
            return self.ref_backprop_input(f, dy)
        return self.ref_backprop_filter(x, dy)

    def term_scale(self, op, x, f, dy):
        """max over outputs of sqrt(sum of its squared terms): the size a sum of those terms has
        before cancellation (the same op applied to the squared operands)."""
        sq = [np.square(np.asarray(a, np.float64)) for a in (x, f, dy)]
        out = self.reference(op, *sq)
        return float(np.sqrt(np.max(out))) if out.size else 0.0


@dataclasses.dataclass(frozen=True)
class Conv2dCase(_Ops):
    n: int
    h: int
    w: int
    c: int
    k: int
    kh: int
    kw: int
    strides: tuple = (1, 1)
    dilations: tuple = (1, 1)
    groups: int = 1
    padding: object = "VALID"  # "VALID" / "SAME" / ((t, b), (l, r))
    data_format: str = "NHWC"
    dtype: type = np.float32
    algorithm: str = "auto"

    # --- shapes -------------------------------------------------------------------------
    @property
    def channels_first(self):
        return self.data_format == "NCHW"

    @property
    def pads(self):
        return ref.pad_pairs_2d(self.padding, (self.h, self.w), (self.kh, self.kw), self.strides, self.dilations)

    @property
    def out_hw(self):
        return tuple(
            ref.out_size(n, k, s, d, p)
            for n, k, s, d, p in zip((self.h, self.w), (self.kh, self.kw), self.strides, self.dilations, self.pads)
        )

    def _fmt_shape(self, h, w, c):
        return (self.n, c, h, w) if self.channels_first else (self.n, h, w, c)

    @property
    def input_shape(self):
        return self._fmt_shape(self.h, self.w, self.c)

    @property
    def output_shape(self):
        return self._fmt_shape(*self.out_hw, self.k)

    @property
    def filter_shape(self):
        return (self.kh, self.kw, self.c // self.groups, self.k)

    @property
    def id(self):
        pad = self.padding if isinstance(self.padding, str) else "x" + "".join(f"{a}{b}" for a, b in self.padding)
        return (
            f"{self.data_format}-{np.dtype(self.dtype).name}-n{self.n}-{self.h}x{self.w}x{self.c}-"
            f"k{self.kh}x{self.kw}x{self.k}-s{self.strides[0]}{self.strides[1]}-"
            f"d{self.dilations[0]}{self.dilations[1]}-g{self.groups}-{pad}"
        )

    def is_valid(self):
        try:
            self.out_hw
        except ValueError:
            return False
        return self.c % self.groups == 0 and self.k % self.groups == 0

    # --- data ---------------------------------------------------------------------------
    def inputs(self, rng):
        """(x, filters, dy) of the case's dtype and format, random normal."""
        x = rng.standard_normal(self.input_shape).astype(self.dtype)
        f = rng.standard_normal(self.filter_shape).astype(self.dtype)
        dy = rng.standard_normal(self.output_shape).astype(self.dtype)
        return x, f, dy

    # --- kconv --------------------------------------------------------------------------
    def kwargs(self):
        return dict(
            strides=self.strides,
            padding=self.padding,
            data_format=self.data_format,
            dilations=self.dilations,
            algorithm=self.algorithm,
        )

    def forward(self, x, f):
        from kconv import ops

        return ops.conv2d(x, f, **self.kwargs())

    def backprop_input(self, f, dy):
        from kconv import ops

        return ops.conv2d_backprop_input(self.input_shape, f, dy, **self.kwargs())

    def backprop_filter(self, x, dy):
        from kconv import ops

        return ops.conv2d_backprop_filter(x, self.filter_shape, dy, **self.kwargs())

    # --- reference ----------------------------------------------------------------------
    def ref_forward(self, x, f):
        cf = self.channels_first
        y = ref.conv2d(_unlayout(x, cf), f, self.strides, self.pads, self.dilations)
        return _layout(y, cf)

    def ref_backprop_input(self, f, dy):
        cf = self.channels_first
        nhwc = (self.n, self.h, self.w, self.c)
        dx = ref.conv2d_backprop_input(nhwc, f, _unlayout(dy, cf), self.strides, self.pads, self.dilations)
        return _layout(dx, cf)

    def ref_backprop_filter(self, x, dy):
        cf = self.channels_first
        return ref.conv2d_backprop_filter(
            _unlayout(x, cf), self.filter_shape, _unlayout(dy, cf), self.strides, self.pads, self.dilations
        )


@dataclasses.dataclass(frozen=True)
class Conv1dCase(_Ops):
    n: int
    w: int
    c: int
    k: int
    kw: int
    stride: int = 1
    dilation: int = 1
    groups: int = 1
    padding: object = "VALID"  # "VALID" / "SAME" / "CAUSAL" / ((l, r),)
    data_format: str = "NWC"
    dtype: type = np.float32
    algorithm: str = "auto"

    @property
    def channels_first(self):
        return self.data_format == "NCW"

    @property
    def pad(self):
        return ref.pad_pair_1d(self.padding, self.w, self.kw, self.stride, self.dilation)

    @property
    def out_w(self):
        return ref.out_size(self.w, self.kw, self.stride, self.dilation, self.pad)

    def _fmt_shape(self, w, c):
        return (self.n, c, w) if self.channels_first else (self.n, w, c)

    @property
    def input_shape(self):
        return self._fmt_shape(self.w, self.c)

    @property
    def output_shape(self):
        return self._fmt_shape(self.out_w, self.k)

    @property
    def filter_shape(self):
        return (self.kw, self.c // self.groups, self.k)

    @property
    def id(self):
        pad = self.padding if isinstance(self.padding, str) else "x{}{}".format(*self.padding[0])
        return (
            f"{self.data_format}-{np.dtype(self.dtype).name}-n{self.n}-{self.w}x{self.c}-k{self.kw}x{self.k}-"
            f"s{self.stride}-d{self.dilation}-g{self.groups}-{pad}"
        )

    def is_valid(self):
        try:
            self.out_w
        except ValueError:
            return False
        return self.c % self.groups == 0 and self.k % self.groups == 0

    def inputs(self, rng):
        x = rng.standard_normal(self.input_shape).astype(self.dtype)
        f = rng.standard_normal(self.filter_shape).astype(self.dtype)
        dy = rng.standard_normal(self.output_shape).astype(self.dtype)
        return x, f, dy

    def kwargs(self):
        return dict(stride=self.stride, padding=self.padding, data_format=self.data_format, dilations=self.dilation,
                    algorithm=self.algorithm)

    def forward(self, x, f):
        from kconv import ops

        return ops.conv1d(x, f, **self.kwargs())

    def backprop_input(self, f, dy):
        from kconv import ops

        return ops.conv1d_backprop_input(self.input_shape, f, dy, **self.kwargs())

    def backprop_filter(self, x, dy):
        from kconv import ops

        return ops.conv1d_backprop_filter(x, self.filter_shape, dy, **self.kwargs())

    def ref_forward(self, x, f):
        cf = self.channels_first
        return _layout(ref.conv1d(_unlayout(x, cf), f, self.stride, self.pad, self.dilation), cf)

    def ref_backprop_input(self, f, dy):
        cf = self.channels_first
        dx = ref.conv1d_backprop_input(
            (self.n, self.w, self.c), f, _unlayout(dy, cf), self.stride, self.pad, self.dilation
        )
        return _layout(dx, cf)

    def ref_backprop_filter(self, x, dy):
        cf = self.channels_first
        return ref.conv1d_backprop_filter(
            _unlayout(x, cf), self.filter_shape, _unlayout(dy, cf), self.stride, self.pad, self.dilation
        )


def check_against_reference(case, op, rng):
    """Run one op of a case on random inputs and apply the accuracy contract.

    The contract's scale is max|ref|; for outputs of a few elements that can cancel to far below
    the size of their terms (one filter-gradient element summing 58 products came out 0.0024 with
    terms of size ~1), where no float32 summation meets 1e-5 * max|ref|.  So the scale never drops
    below `term_scale`, which for any output of more than a handful of elements is well under
    max|ref| and changes nothing.
    """
    from conftest import assert_close

    x, f, dy = case.inputs(rng)
    got = case.call(op, x, f, dy)
    want = case.reference(op, x, f, dy)
    floor = case.term_scale(op, x, f, dy)
    assert_close(got, want, case.dtype, what=f"{op} {case.id}", floor=floor)


# ---------------------------------------------------------------------------------------
# Seeded random grids
# ---------------------------------------------------------------------------------------

KERNELS_2D = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7), (1, 3), (3, 1), (2, 5), (7, 2), (1, 7), (3, 2)]
PAIRS_123 = [(1, 1), (2, 2), (3, 3), (1, 2), (2, 1), (1, 3), (3, 2)]


def _channels_for(r, groups):
    return r.choice([c for c in CHANNELS if c % groups == 0])


def _explicit_pair(r):
    return (r.randint(0, 3), r.randint(0, 3))


def random_conv2d_cases(count, seed):
    """`count` valid 2-D cases drawn from every argument's values; small spatial sizes."""
    r = random.Random(seed)
    cases = []
    while len(cases) < count:
        groups = r.choice([1, 1, 2, 4])
        kh, kw = r.choice(KERNELS_2D)
        strides = r.choice(PAIRS_123)
        dilations = r.choice([(1, 1), (1, 1)] + PAIRS_123)
        padding = r.choice(["VALID", "SAME", "explicit"])
        if padding == "explicit":
            padding = (_explicit_pair(r), _explicit_pair(r))
        span_h, span_w = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
        h = r.randint(1, 6) + (span_h - 1) * (padding != "SAME")
        w = r.randint(1, 6) + (span_w - 1) * (padding != "SAME")
        case = Conv2dCase(
            n=r.choice([0, 1, 1, 3, 3]),
            h=h,
            w=w,
            c=_channels_for(r, groups),
            k=_channels_for(r, groups),
            kh=kh,
            kw=kw,
            strides=strides,
            dilations=dilations,
            groups=groups,
            padding=padding,
            data_format=r.choice(["NHWC", "NCHW"]),
            dtype=r.choice([np.float32, np.float64]),
        )
        if case.is_valid():
            cases.append(case)
    return cases


def random_conv1d_cases(count, seed):
    """`count` valid 1-D cases drawn from every argument's values."""
    r = random.Random(seed)
    cases = []
    while len(cases) < count:
        groups = r.choice([1, 1, 2, 4])
        kw = r.randint(1, 7)
        stride = r.randint(1, 3)
        dilation = r.choice([1, 1, 2, 3])
        padding = r.choice(["VALID", "SAME", "CAUSAL", "explicit"])
        if padding == "explicit":
            padding = (_explicit_pair(r),)
        span = (kw - 1) * dilation + 1
        w = r.randint(1, 20) + (span - 1) * (padding not in ("SAME", "CAUSAL"))
        case = Conv1dCase(
            n=r.choice([0, 1, 1, 3, 3]),
            w=w,
            c=_channels_for(r, groups),
            k=_channels_for(r, groups),
            kw=kw,
            stride=stride,
            dilation=dilation,
            groups=groups,
            padding=padding,
            data_format=r.choice(["NWC", "NCW"]),
            dtype=r.choice([np.float32, np.float64]),
        )
        if case.is_valid():
            cases.append(case)
    return cases

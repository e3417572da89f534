"""Fuzzing kconv's argument parsing and plan building with hypothesis.

Random shapes (0-sized dimensions included), strides, paddings ('VALID', 'SAME', explicit pairs in both
forms, 'CAUSAL' in 1-D), dilations, groups (filter in-channels that divide the channels or not), dtypes,
data formats, algorithm names, bias, fused activation and threads, valid and invalid, through

  * the numpy API: kconv.ops.conv1d/conv2d and their backprop_input / backprop_filter functions, and
  * the TensorFlow ops kconv.conv1d/conv2d, eagerly and in a tf.function whose input_signature hides some or
    all dimensions (or the rank), with gradients from a GradientTape.

An independent oracle (written from tf.nn's definitions and kconv's documented contract, not from kconv's
code) says what each call must do. A valid call must give the float64 reference's result (tests/reference.py)
within tolerance, with the right shape and dtype; an invalid call must raise ValueError or TypeError (numpy
API) or ValueError, TypeError, tf.errors.InvalidArgumentError or ResourceExhaustedError (TensorFlow). A call
whose output is larger than any memory may also raise MemoryError (numpy API). Nothing may crash or hang:
every call runs under a faulthandler watchdog (KCONV_FUZZ_HANG_S seconds, default 60) that dumps every
thread's stack and ends the process.

Deterministic (derandomize=True, no example database). KCONV_FUZZ_SCALE multiplies the number of examples
(e.g. 10 for a long local run). The bugs this fuzzer found (strides, dilations and paddings near 2**62 and
beyond, zero input channels, Winograd with a huge padding through TensorFlow) are fixed and kept as regression
tests at the end of the file.
"""
import contextlib
import faulthandler
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

import reference as ref
from kconv import ops

SCALE = float(os.environ.get("KCONV_FUZZ_SCALE", "1"))
HANG_S = float(os.environ.get("KCONV_FUZZ_HANG_S", "60"))
INT32_MAX = 2**31 - 1
BIG = (INT32_MAX, 2**40)          # large: the numpy API and TensorFlow refuse strides/dilations past int32
TOO_LARGE_BYTES = 2**38           # outputs this large must be refused (the strategies make them >= 2**40)


def fuzz(n):
    return settings(max_examples=max(1, int(n * SCALE)), derandomize=True, database=None, deadline=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


_watchdog_file = sys.__stderr__


@pytest.fixture(scope="module", autouse=True)
def _real_stderr(request):
    """Where the watchdog writes: pytest's copy of the real stderr (its faulthandler plugin keeps one), since
    pytest's capture of fd 2 is lost when the watchdog ends the process; else stderr."""
    global _watchdog_file
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key
        _watchdog_file = request.config.stash[fault_handler_stderr_fd_key]
    except (ImportError, KeyError, AttributeError):
        _watchdog_file = sys.__stderr__


@contextlib.contextmanager
def watchdog():
    """A hang or a deadlock ends the process with every thread's traceback (never a silent CI timeout)."""
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=_watchdog_file)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# ------------------------------------------------------------------------------------------ the oracle

class Invalid(Exception):
    """The oracle's verdict: the call must fail (the message says why)."""


class TooLarge(Exception):
    """The oracle's verdict: the call's output cannot fit in any memory: it must be refused."""


class Unrepresentable(TooLarge):
    """The oracle's verdict: the output is empty, but the product of its nonzero sizes overflows int64. numpy
    cannot make an array of that shape (ValueError); TensorFlow can (an empty tensor) or refuses."""

    def __init__(self, shape):
        super().__init__(f"output {shape}: empty, but its nonzero sizes overflow int64")
        self.shape = shape


ACT_SLOPE = 2.0   # bound on |act'|: how far an activation moves an error (selu's is 1.76)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _erf(z):
    return np.vectorize(math.erf, otypes=[np.float64])(z)


def activate(name, z):
    """Keras's activations (kconv's fused set) in float64."""
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    return {
        None: lambda: z, "linear": lambda: z, "relu": lambda: np.maximum(z, 0.0),
        "relu6": lambda: np.clip(z, 0.0, 6.0), "leaky_relu": lambda: np.where(z > 0, z, 0.2 * z),
        "elu": lambda: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
        "selu": lambda: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0))),
        "sigmoid": lambda: sig(z), "tanh": lambda: np.tanh(z), "silu": lambda: z * sig(z),
        "gelu": lambda: 0.5 * z * (1.0 + _erf(z / math.sqrt(2.0))),
    }[name]()


def activation_slope(name, z):
    """d act / dz in float64."""
    sig = 1.0 / (1.0 + np.exp(-z))
    return {
        None: lambda: np.ones_like(z), "linear": lambda: np.ones_like(z), "relu": lambda: (z > 0) * 1.0,
        "relu6": lambda: ((z > 0) & (z < 6)) * 1.0, "leaky_relu": lambda: np.where(z > 0, 1.0, 0.2),
        "elu": lambda: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0.0))),
        "selu": lambda: SELU_SCALE * np.where(z > 0, 1.0, SELU_ALPHA * np.exp(np.minimum(z, 0.0))),
        "sigmoid": lambda: sig * (1 - sig), "tanh": lambda: 1 - np.tanh(z) ** 2,
        "silu": lambda: sig * (1 + z * (1 - sig)),
        "gelu": lambda: 0.5 * (1.0 + _erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi),
    }[name]()


KINKS = {"relu": (0.0,), "relu6": (0.0, 6.0), "leaky_relu": (0.0,), "selu": (0.0,)}   # where act' jumps


class Call:
    """One drawn call: raw arguments as the user passes them, and what the oracle knows about them."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        keys = ("nd", "data_format", "x_shape", "f_shape", "strides", "padding", "dilations", "algorithm",
                "activation", "bias_shape", "x_dtype", "w_dtype", "b_dtype", "threads", "fault")
        return "Call(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in keys) + ")"

    # --- layouts
    def to_user(self, a):
        """native (N, spatial..., C) -> the call's layout."""
        return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if self.first else a

    def to_native(self, a):
        return np.moveaxis(a, 1, -1) if self.first else a


def _native_shape(shape, first):
    return (shape[0],) + tuple(shape[2:]) + (shape[1],) if first else tuple(shape)


def expect(call, api):
    """The oracle: (out_shape in the call's layout, pads per spatial axis, groups) for a valid call; raises
    Invalid or TooLarge otherwise. api is "numpy" or "tf"."""
    if call.problems[api]:
        raise Invalid("; ".join(call.problems[api]))
    nd, rank = call.nd, call.nd + 2
    if len(call.x_shape) != rank or len(call.f_shape) != rank:
        raise Invalid("rank")
    x = _native_shape(call.x_shape, call.first)
    n, spatial, c = x[0], x[1:-1], x[-1]
    ks, cg, k_out = call.f_shape[:nd], call.f_shape[nd], call.f_shape[nd + 1]
    if min(ks) < 1:
        raise Invalid("kernel size 0")
    if cg < 1 or c < 1 or c % cg:
        raise Invalid("in-channels do not divide the channels")
    groups = c // cg
    if k_out % groups:
        raise Invalid("filters not divisible by groups")
    kernel_fits = ((ks[-1] == 3 and (nd == 1 or ks[0] in (1, 3)))
                   or (ks[-1] in (4, 5, 6, 7) and (nd == 1 or ks[0] == 1)) or (nd == 2 and tuple(ks) == (5, 5)))
    mode = call.padding_n
    if mode == "VALID":
        pads = ((0, 0),) * nd
    elif mode == "SAME":
        pads = tuple(ref.same_pad(*a) for a in zip(spatial, ks, call.strides_n, call.dilations_n))
    elif mode == "CAUSAL":
        pads = (((ks[0] - 1) * call.dilations_n[0], 0),)
    else:
        pads = mode
    out = []
    for size, k, s, d, (lo, hi) in zip(spatial, ks, call.strides_n, call.dilations_n, pads):
        span = (k - 1) * d + 1
        if size + lo + hi >= span:
            out.append((size + lo + hi - span) // s + 1)
        elif size == 0:
            out.append(0)       # kconv's contract: an empty sequence or image gives an empty output
        else:
            raise Invalid("the dilated kernel is larger than the padded input")
    native_out = (n,) + tuple(out) + (k_out,)
    itemsize = np.dtype(call.x_dtype).itemsize
    if math.prod(native_out) * itemsize > TOO_LARGE_BYTES:
        raise TooLarge(f"output {native_out}")
    # the algorithm is checked after the geometry and the output's size (kconv's plan: choose_algorithms)
    tile = call.algorithm[len("winograd"):] if call.winograd else ""
    dilated_2d = nd == 2 and ks[0] != 1 and call.dilations_n != (1, 1)    # 1-D kernels may be dilated
    if call.winograd and (call.strides_n != (1,) * nd or dilated_2d or groups != 1
                          or not kernel_fits or (tile and int(tile) + ks[-1] - 1 not in (4, 6, 8))):
        raise Invalid("Winograd cannot run this convolution")
    user_out = (n, k_out) + tuple(out) if call.first else native_out
    if math.prod(d for d in native_out if d) * itemsize >= 2**63:
        raise Unrepresentable(user_out)
    return user_out, pads, groups


# ------------------------------------------------------------------------------------------ strategies
# A drawn call is either valid in each of its arguments (the geometry may still be impossible: the oracle
# decides) or has exactly one fault, so that every check is reached on its own, not hidden behind another.

FAULTS = ("data_format", "f_in", "k_out", "kernel_0", "x_rank", "f_rank", "strides", "dilations", "padding",
          "causal_2d", "algorithm", "winograd", "dtype", "dtype_mix", "bias_shape", "bias_dtype", "activation",
          "threads")


def _spatial_arg(draw, nd, first, name, problems, fault):
    """strides / dilations as a user writes them -> (raw, normalised)."""
    vals = tuple(draw(st.sampled_from([1, 1, 1, 1, 2, 3]) if draw(st.integers(0, 14)) else st.sampled_from(BIG))
                 for _ in range(nd))
    if fault == name:
        raw = draw(st.sampled_from([0, -1, True, 1.5, "2", [1] * (nd + 1), [2] + [1] * nd + [1], (0,) * nd,
                                    [1, 1.0] if nd == 2 else [1.0]]))
        problems["numpy"].append(f"{name} {raw!r}")
        problems["tf"].append(f"{name} {raw!r}")
        return raw, (1,) * nd
    form = draw(st.sampled_from(["int", "tuple", "list", "one", "long", "none", "np"]))
    if form in ("int", "one", "none", "np"):
        vals = (1,) * nd if form == "none" else (vals[0],) * nd
    raw = {"int": vals[0], "tuple": vals, "list": list(vals), "one": [vals[0]], "none": None,
           "np": np.int64(vals[0]),
           "long": ([1, 1] + list(vals)) if first else ([1] + list(vals) + [1])}[form]
    return raw, vals


def _padding_arg(draw, nd, first, problems, fault, huge=True):
    """padding -> (raw, normalised: "VALID" / "SAME" / "CAUSAL" / pairs)."""
    if fault == "padding":
        raw = draw(st.sampled_from(["FULL", "", 5, None, [(-1, 0)] * nd, [(0, 0)] * (nd + 1), [(1, 1, 1)] * nd,
                                    [(0.5, 0)] * nd, [(1, 0)] + [(0, 0)] * (nd + 1), [(True, 0)] * nd]))
        problems["numpy"].append(f"padding {raw!r}")
        problems["tf"].append(f"padding {raw!r}")
        return raw, "VALID"
    if fault == "causal_2d" and nd == 2:
        problems["numpy"].append("CAUSAL in 2-D")
        problems["tf"].append("CAUSAL in 2-D")
        return draw(st.sampled_from(["CAUSAL", "causal"])), "VALID"
    if draw(st.booleans()):
        raw = draw(st.sampled_from(["VALID", "SAME", "valid", "same"] + (["CAUSAL", "causal"] if nd == 1 else [])))
        return raw, raw.upper()
    value = st.sampled_from([0, 0, 0, 1, 2, 3]) if not huge or draw(st.integers(0, 14)) else st.just(2**40)
    pairs = tuple((draw(value), draw(value)) for _ in range(nd))
    if draw(st.booleans()):    # TensorFlow's form: a pair per dimension, zeros on batch and channels
        raw = ([(0, 0), (0, 0)] + list(pairs)) if first else ([(0, 0)] + list(pairs) + [(0, 0)])
    else:
        raw = [list(p) for p in pairs] if draw(st.booleans()) else pairs
    return raw, pairs


FLOATS = (np.float32, np.float64)


@st.composite
def calls(draw, nd, api, with_bias=True, faults=True):
    """A forward call (its x / filter shapes are also the backprops' sizes); faults=False: no argument is
    invalid in itself (the geometry may still be)."""
    fault = draw(st.sampled_from((None,) * (2 * len(FAULTS)) + FAULTS)) if faults else None
    problems = {"numpy": [], "tf": []}

    def invalid(why):
        problems["numpy"].append(why)
        problems["tf"].append(why)

    formats = ["NWC", "NCW", "nwc", None] if nd == 1 else ["NHWC", "NCHW", "nchw", None]
    if nd == 1 and api == "tf":
        formats += ["NHWC", "NCHW"]     # tf.nn.conv1d's aliases
    if fault == "data_format":
        data_format = draw(st.sampled_from(["NCDHW", "HWC", 3, ""] + (["NHWC"] if api == "numpy" and nd == 1
                                                                        else ["NHWC_"])))
        invalid(f"data_format {data_format!r}")
        first = False
    else:
        data_format = draw(st.sampled_from(formats))
        first = data_format is not None and data_format.upper() in ("NCW", "NCHW")

    algorithm = draw(st.sampled_from(["auto"] * 4 + ["direct", "direct", "winograd", "winograd2", "winograd4",
                                                      "winograd6"]))
    if fault == "algorithm":
        algorithm = draw(st.sampled_from(["AUTO", "fft", None, "", "winograd3"]))
        invalid(f"algorithm {algorithm!r}")
    winograd = algorithm.startswith("winograd") if isinstance(algorithm, str) else False
    if fault == "winograd":
        algorithm, winograd = draw(st.sampled_from(["winograd", "winograd2", "winograd4", "winograd6"])), True
    runs_winograd = winograd and fault != "winograd"   # then the shape must suit it

    n = draw(st.sampled_from([0, 1, 1, 1, 2, 2]))
    ks = [draw(st.sampled_from([1, 2, 3, 3, 3, 4])) for _ in range(nd)]
    if runs_winograd:
        ks = [draw(st.sampled_from([1, 3])), 3] if nd == 2 else [3]
    groups = 1 if runs_winograd else draw(st.sampled_from([1, 1, 1, 2, 3]))
    cg, kg = draw(st.integers(1, 3)), draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3, 3]))
    c, k_out, f_in = groups * cg, groups * kg, cg
    if fault == "f_in":
        f_in = c + 1
    elif fault == "k_out":
        groups = max(groups, 2)
        c, k_out, f_in = groups * cg, groups * kg + 1, cg
    elif fault == "kernel_0":
        ks[draw(st.integers(0, nd - 1))] = 0

    strides, strides_n = _spatial_arg(draw, nd, first, "strides", problems, fault)
    dilations, dilations_n = _spatial_arg(draw, nd, first, "dilations", problems, fault)
    if runs_winograd and fault != "strides":
        strides, strides_n = draw(st.sampled_from([1, None, [1] * nd])), (1,) * nd
    if runs_winograd and fault != "dilations" and nd == 2:     # 1-D Winograd runs dilated kernels
        dilations, dilations_n = draw(st.sampled_from([1, None, [1] * nd])), (1,) * nd
    padding, padding_n = _padding_arg(draw, nd, first, problems, fault)
    if max(strides_n + dilations_n) > INT32_MAX:
        problems["numpy"].append(f"strides {strides!r} / dilations {dilations!r}: past int32")
        problems["tf"].append(f"strides {strides!r} / dilations {dilations!r}: TensorFlow's attrs are int32")

    # spatial sizes: 0 sometimes; mostly at least the dilated kernel (an input too small for it sometimes)
    spatial = []
    for k, d in zip(ks, dilations_n):
        size = draw(st.integers(1, 4 if nd == 2 else 6)) if draw(st.integers(0, 9)) else 0
        span = (max(k, 1) - 1) * d + 1
        if size and span <= 16 and draw(st.integers(0, 5)):
            size += span - 1
        spatial.append(size)
    x_native = (n,) + tuple(spatial) + (c,)
    x_shape = (x_native[0], x_native[-1]) + x_native[1:-1] if first else x_native
    f_shape = tuple(ks) + (f_in, k_out)
    if fault == "x_rank":
        x_shape = x_shape + (1,) if draw(st.booleans()) else x_shape[1:]
    elif fault == "f_rank":
        f_shape = f_shape[1:] if draw(st.booleans()) else (1,) + f_shape

    dtypes = [np.float32] * 3 + [np.float64] * 2 + ([np.float16] if api == "tf" else [])
    x_dtype = w_dtype = draw(st.sampled_from(dtypes))
    if fault == "dtype":
        x_dtype = w_dtype = draw(st.sampled_from([np.int32, np.int64, np.complex64, np.bool_] +
                                                 ([np.float16] if api == "numpy" else [])))
        invalid(f"dtype {np.dtype(x_dtype).name}")
    elif fault == "dtype_mix":
        w_dtype = draw(st.sampled_from([d for d in (np.float16, np.float32, np.float64, np.int32) if d != x_dtype]))
        invalid(f"dtypes {np.dtype(x_dtype).name}, {np.dtype(w_dtype).name}")

    bias_shape, b_dtype, activation = None, x_dtype, None
    if with_bias:
        bias_shape = draw(st.sampled_from([None, (k_out,)]))
        if fault == "bias_shape":
            bias_shape = draw(st.sampled_from([(k_out + 1,), (1, k_out), ()]))
            invalid(f"bias shape {bias_shape}")
        elif fault == "bias_dtype":
            bias_shape = (k_out,)
            b_dtype = draw(st.sampled_from([d for d in (np.float16, np.float32, np.float64, np.int32)
                                            if d != x_dtype]))
            invalid(f"bias dtype {np.dtype(b_dtype).name}")
        activation = draw(st.sampled_from([None, "linear"] + list(ops.ACTIVATIONS)))
        if fault == "activation":
            activation = draw(st.sampled_from(["swish", "RELU", "", 1]))
            invalid(f"activation {activation!r}")
    threads = draw(st.sampled_from([None] * 4 + [1, 2]))
    if fault == "threads":
        threads = draw(st.sampled_from([0, -1, True, 1.5, "2"]))
        invalid(f"threads {threads!r}")

    return Call(nd=nd, data_format=data_format, first=first, x_shape=tuple(x_shape), f_shape=tuple(f_shape),
                strides=strides, strides_n=strides_n, dilations=dilations, dilations_n=dilations_n,
                padding=padding, padding_n=padding_n, algorithm=algorithm, winograd=winograd,
                activation=activation, bias_shape=bias_shape, x_dtype=x_dtype, w_dtype=w_dtype, b_dtype=b_dtype,
                threads=threads, problems=problems, fault=fault, seed=draw(st.integers(0, 2**32 - 1)))


def _values(rng, shape, dtype):
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    return rng.integers(-3, 4, shape).astype(dtype)


def arrays(call):
    """x, w, bias (or None) of the call's shapes and dtypes."""
    rng = np.random.default_rng(call.seed)
    x = _values(rng, call.x_shape, call.x_dtype)
    w = _values(rng, call.f_shape, call.w_dtype)
    b = None if call.bias_shape is None else _values(rng, call.bias_shape, call.b_dtype)
    return x, w, b


# ------------------------------------------------------------------------------------------ references

def _ref_forward_native(call, x, w, pads):
    """conv in float64, native layout (N, spatial..., K), from tests/reference.py; for huge paddings (which
    only the SAME / CAUSAL paddings of huge dilations make with an output that fits) an equivalent gather
    over the taps that reach the input."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    if max(max(p) for p in pads) <= 64:
        if call.nd == 1:
            return ref.conv1d(x, w, call.strides_n[0], pads[0], call.dilations_n[0])
        return ref.conv2d(x, w, call.strides_n, pads, call.dilations_n)
    if call.nd == 1:
        x, w = x[:, None], w[None]
        strides, dilations, pads = (1,) + call.strides_n, (1,) + call.dilations_n, ((0, 0),) + pads
    else:
        strides, dilations = call.strides_n, call.dilations_n
    n, h, wd, c = x.shape
    kh, kw, cg, k = w.shape
    g = c // cg
    ho = (h + sum(pads[0]) - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    wo = (wd + sum(pads[1]) - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    y = np.zeros((n, ho, wo, g, k // g))
    xg = x.reshape(n, h, wd, g, cg)
    for i in range(kh):
        rows = np.arange(ho) * strides[0] + i * dilations[0] - pads[0][0]
        ri = np.nonzero((rows >= 0) & (rows < h))[0]
        for j in range(kw):
            cols = np.arange(wo) * strides[1] + j * dilations[1] - pads[1][0]
            ci = np.nonzero((cols >= 0) & (cols < wd))[0]
            if ri.size and ci.size:
                tap = w[i, j].reshape(cg, g, k // g).transpose(1, 0, 2)
                y[:, ri[:, None], ci[None, :]] += np.einsum("nhwgc,gck->nhwgk",
                                                            xg[:, rows[ri][:, None], cols[ci][None, :]], tap)
    y = y.reshape(n, ho, wo, k)
    return y[:, 0] if call.nd == 1 else y


def rtol(call, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return 3e-3
    if dtype == np.float32:
        return 1e-4 if call.algorithm != "direct" else 1e-5
    return 1e-10 if call.algorithm != "direct" else 1e-12


def assert_matches(got, want, scale, tol, what):
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if want.size == 0:
        return
    err = np.abs(got.astype(np.float64) - want)
    err = np.where(np.isnan(err), np.inf, err)     # a NaN where the reference is finite is an error too
    limit = tol * max(scale, 1e-30)
    worst = np.unravel_index(np.argmax(err), err.shape)
    assert np.all(err <= limit), (f"{what}: max error {err[worst]:.3e} > {limit:.3e} at {worst}: "
                                  f"got {got[worst]!r}, expected {want[worst]!r}")


def forward_reference(call, x, w, b, pads, out_shape):
    """(y in the call's layout, float64; z = conv + bias; the size of the terms)."""
    if 0 in out_shape:
        return np.zeros(out_shape), np.zeros(out_shape), 0.0
    xn, wn = call.to_native(np.asarray(x, np.float64)), np.asarray(w, np.float64)
    z = _ref_forward_native(call, xn, wn, pads)
    scale = _ref_forward_native(call, np.abs(xn), np.abs(wn), pads)
    if b is not None:
        z = z + np.asarray(b, np.float64)
        scale = scale + np.abs(np.asarray(b, np.float64))
    y = activate(call.activation, z)
    return call.to_user(y), call.to_user(z), float(scale.max()) if scale.size else 0.0


# ------------------------------------------------------------------------------------------ numpy API

NUMPY_ERRORS = (ValueError, TypeError)


def _numpy_forward(call, x, w, b):
    fn = ops.conv1d if call.nd == 1 else ops.conv2d
    kwargs = dict(algorithm=call.algorithm, threads=call.threads, bias=b, activation=call.activation)
    with watchdog():
        return fn(x, w, call.strides, call.padding, call.data_format, call.dilations, **kwargs)


def _check_outcome(call, api, run, errors, on_valid):
    """Runs the call; checks it against the oracle's verdict."""
    try:
        expected = expect(call, api)
    except Invalid as why:
        note(f"invalid: {why} (fault: {call.fault})")
        event("invalid")
        with pytest.raises(errors):
            run()
        return
    except Unrepresentable as why:
        note(str(why))
        event("too large")
        if api == "numpy":
            with pytest.raises(errors + (MemoryError,)):
                run()
            return
        try:
            y = run()
        except errors:
            return
        assert tuple(y.shape) == why.shape and y.dtype.as_numpy_dtype == call.x_dtype, (y.shape, y.dtype)
        return
    except TooLarge as why:
        note(f"too large: {why}")
        event("too large")
        with pytest.raises(errors + ((MemoryError,) if api == "numpy" else ())):
            run()
        return
    event("valid, empty output" if 0 in expected[0] else "valid")
    on_valid(run(), *expected)


@pytest.mark.parametrize("nd", [1, 2])
@fuzz(200)
@given(data=st.data())
def test_numpy_forward(nd, data):
    call = data.draw(calls(nd, "numpy"))
    x, w, b = arrays(call)

    def check(y, out_shape, pads, groups):
        assert isinstance(y, np.ndarray) and y.dtype == call.x_dtype, (type(y), getattr(y, "dtype", None))
        assert y.shape == out_shape
        want, _, scale = forward_reference(call, x, w, b, pads, out_shape)
        assert_matches(y, want, scale, rtol(call, call.x_dtype) * ACT_SLOPE, "forward")

    _check_outcome(call, "numpy", lambda: _numpy_forward(call, x, w, b), NUMPY_ERRORS, check)


def _perturbed(draw, shape):
    """A shape that differs from `shape` (one size changed, or the rank)."""
    if draw(st.booleans()) or not shape:
        return tuple(shape) + (1,)
    i = draw(st.integers(0, len(shape) - 1))
    return tuple(s + 1 if j == i else s for j, s in enumerate(shape))


@st.composite
def backprop_calls(draw, nd):
    """A forward call's geometry (without bias and activation), plus out_backprop and the *_sizes argument,
    with at most one fault among them all."""
    call = draw(calls(nd, "numpy", with_bias=False))
    bp_fault = None if call.fault else draw(st.sampled_from([None] * 8 + ["dy_shape", "dy_dtype", "short",
                                                                         "negative", "text"]))
    try:
        out_shape = expect(call, "numpy")[0]
    except (Invalid, TooLarge):
        out_shape = (1,) * (nd + 2)
    call.dy_shape = _perturbed(draw, out_shape) if bp_fault == "dy_shape" else out_shape
    call.dy_dtype = call.x_dtype
    if bp_fault == "dy_dtype":
        call.dy_dtype = draw(st.sampled_from([d for d in (np.float32, np.float64, np.int32) if d != call.x_dtype]))
    call.sizes_fault = bp_fault if bp_fault in ("short", "negative", "text") else None
    return call


def _sizes(call, shape):
    shape = list(shape)
    return {None: shape, "short": shape[:-1], "negative": shape[:-1] + [-1], "text": ["a"] * len(shape)}[
        call.sizes_fault]


def _backprop_expect(call, which):
    out_shape, pads, groups = expect(call, "numpy")   # raises Invalid / TooLarge
    if call.sizes_fault:
        raise Invalid(f"{which}_sizes {call.sizes_fault}")
    if tuple(call.dy_shape) != out_shape:
        raise Invalid("out_backprop shape")
    other = call.w_dtype if which == "input" else call.x_dtype
    if call.dy_dtype != other:
        raise Invalid("out_backprop dtype")
    return out_shape, pads, groups


def _backprop_check(call, which, run):
    rng = np.random.default_rng(call.seed + 1)
    dy = _values(rng, call.dy_shape, call.dy_dtype)
    try:
        out_shape, pads, groups = _backprop_expect(call, which)
    except (Invalid, TooLarge) as why:
        note(f"invalid: {why}")
        with pytest.raises(NUMPY_ERRORS + ((MemoryError,) if isinstance(why, TooLarge) else ())):
            run(dy)
        return
    got = run(dy)
    target = call.x_shape if which == "input" else call.f_shape
    dtype = call.w_dtype if which == "input" else call.x_dtype
    assert isinstance(got, np.ndarray) and got.dtype == dtype and got.shape == tuple(target)
    x, w, _ = arrays(call)
    want, scale = backprop_reference(call, which, x, w, dy, pads)
    if want is None:   # huge paddings: the reference would pad physically; shape, dtype and finiteness only
        assert np.all(np.isfinite(got))
        return
    assert_matches(got, want, scale, rtol(call, dtype), f"backprop {which}")


def backprop_reference(call, which, x, w, dy, pads):
    """The float64 input or filter gradient in the call's layout (filters: TF's layout), and the size of
    its terms; (None, None) when the paddings are too large for tests/reference.py."""
    if max(max(p) for p in pads) > 64:
        return None, None
    nd = call.nd
    xs = _native_shape(call.x_shape, call.first)
    dyn = call.to_native(np.asarray(dy, np.float64))
    if any(s == 0 for s in dyn.shape[1:-1]):   # an empty output (from an empty input): a zero gradient
        shape = call.x_shape if which == "input" else call.f_shape
        return np.zeros(shape), 0.0

    def run(a, b, d):
        if which == "input":
            if nd == 1:
                return call.to_user(ref.conv1d_backprop_input(xs, b, d, call.strides_n[0], pads[0],
                                                              call.dilations_n[0]))
            return call.to_user(ref.conv2d_backprop_input(xs, b, d, call.strides_n, pads, call.dilations_n))
        if nd == 1:
            return ref.conv1d_backprop_filter(a, call.f_shape, d, call.strides_n[0], pads[0], call.dilations_n[0])
        return ref.conv2d_backprop_filter(a, call.f_shape, d, call.strides_n, pads, call.dilations_n)

    xn, wn = call.to_native(np.asarray(x, np.float64)), np.asarray(w, np.float64)
    want = run(xn, wn, dyn)
    scale = run(np.abs(xn), np.abs(wn), np.abs(dyn))
    return want, float(scale.max()) if scale.size else 0.0


@pytest.mark.parametrize("nd", [1, 2])
@fuzz(150)
@given(data=st.data())
def test_numpy_backprop_input(nd, data):
    call = data.draw(backprop_calls(nd))
    _, w, _ = arrays(call)
    fn = ops.conv1d_backprop_input if nd == 1 else ops.conv2d_backprop_input

    def run(dy):
        with watchdog():
            return fn(_sizes(call, call.x_shape), w, dy, call.strides, call.padding, call.data_format,
                      call.dilations, algorithm=call.algorithm, threads=call.threads)

    _backprop_check(call, "input", run)


@pytest.mark.parametrize("nd", [1, 2])
@fuzz(150)
@given(data=st.data())
def test_numpy_backprop_filter(nd, data):
    call = data.draw(backprop_calls(nd))
    x, _, _ = arrays(call)
    fn = ops.conv1d_backprop_filter if nd == 1 else ops.conv2d_backprop_filter

    def run(dy):
        with watchdog():
            return fn(x, _sizes(call, call.f_shape), dy, call.strides, call.padding, call.data_format,
                      call.dilations, algorithm=call.algorithm, threads=call.threads)

    _backprop_check(call, "filter", run)


# ------------------------------------------------------------------------------------------ TensorFlow ops

@pytest.fixture(scope="module")
def tf(tf):
    """TensorFlow (imported before hypothesis starts: the import changes the recursion limit), with kconv's
    native op library (the numpy_function fallback raises other error types)."""
    from kconv import tf_ops
    if not tf_ops.native_op_in_use():
        pytest.skip("kconv's op library could not be built here")
    return tf


def _tf_errors(tf):
    return (ValueError, TypeError, tf.errors.InvalidArgumentError, tf.errors.ResourceExhaustedError)


def _tf_call(call, tf, x, w, b):
    import kconv
    fn = kconv.conv1d if call.nd == 1 else kconv.conv2d
    return fn(x, w, call.strides, call.padding, data_format=call.data_format, dilations=call.dilations,
              algorithm=call.algorithm, threads=call.threads, bias=b, activation=call.activation)


def _check_tf_result(call, y, out_shape, pads, groups, x, w, b):
    y = np.asarray(y)
    assert y.dtype == call.x_dtype, y.dtype
    assert y.shape == out_shape, (y.shape, out_shape)
    want, _, scale = forward_reference(call, x, w, b, pads, out_shape)
    assert_matches(y, want, scale, rtol(call, call.x_dtype) * ACT_SLOPE, "TF forward")


@pytest.mark.parametrize("nd", [1, 2])
@fuzz(150)
@given(data=st.data())
def test_tf_eager(tf, nd, data):
    call = data.draw(calls(nd, "tf"))
    x, w, b = arrays(call)

    def run():
        with watchdog():
            return _tf_call(call, tf, tf.constant(x), tf.constant(w), None if b is None else tf.constant(b))

    _check_outcome(call, "tf", run, _tf_errors(tf), lambda y, *e: _check_tf_result(call, y.numpy(), *e, x, w, b))


@pytest.mark.parametrize("nd", [1, 2])
@fuzz(100)
@given(data=st.data())
def test_tf_function_with_unknown_dims(tf, nd, data):
    """Shapes known only at run time: errors may come when tracing or when running; the traced static
    shape must agree with the result."""
    call = data.draw(calls(nd, "tf"))
    x, w, b = arrays(call)
    hide = data.draw(st.sampled_from(["all", "some", "rank", "none"]))

    def spec(a):
        if hide == "rank":
            return tf.TensorSpec(None, a.dtype)
        if hide == "all":
            return tf.TensorSpec([None] * a.ndim, a.dtype)
        if hide == "some":
            return tf.TensorSpec([None if data.draw(st.booleans()) else s for s in a.shape], a.dtype)
        return tf.TensorSpec(a.shape, a.dtype)

    inputs = [x, w] + ([] if b is None else [b])
    signature = [spec(a) for a in inputs]

    def body(*args):
        return _tf_call(call, tf, args[0], args[1], args[2] if len(args) > 2 else None)

    def run():
        with watchdog():
            fn = tf.function(body, input_signature=signature, autograph=False)
            concrete = fn.get_concrete_function()
            y = concrete(*[tf.constant(a) for a in inputs])
            static = concrete.structured_outputs.shape
            assert static.is_compatible_with(y.shape), (static, y.shape)
            return y

    _check_outcome(call, "tf", run, _tf_errors(tf), lambda y, *e: _check_tf_result(call, y.numpy(), *e, x, w, b))


@pytest.mark.parametrize("nd", [1, 2])
@fuzz(100)
@given(data=st.data())
def test_tf_gradients(tf, nd, data):
    """Valid calls only: the input, filter and bias gradients through the fused activation."""
    call = data.draw(calls(nd, "tf", faults=False))
    try:
        out_shape, pads, groups = expect(call, "tf")
    except (Invalid, TooLarge):
        event("invalid: skipped")
        return
    if call.x_dtype == np.float16 or max(max(p) for p in pads) > 64:
        event("float16 or huge padding: skipped")
        return
    event("empty output" if 0 in out_shape else "checked")
    x, w, b = arrays(call)
    y_ref, z_ref, scale = forward_reference(call, x, w, b, pads, out_shape)
    tol = rtol(call, call.x_dtype)
    rng = np.random.default_rng(call.seed + 2)
    dy = rng.standard_normal(out_shape)
    for kink in KINKS.get(call.activation, ()):   # float32 and float64 may disagree on which side of a kink
        dy[np.abs(z_ref - kink) <= 8 * tol * max(scale, 1e-30)] = 0.0
    tx, tw = tf.constant(x), tf.constant(w)
    tb = None if b is None else tf.constant(b)
    with watchdog():
        with tf.GradientTape() as tape:
            tape.watch([tx, tw] + ([] if tb is None else [tb]))
            y = _tf_call(call, tf, tx, tw, tb)
        grads = tape.gradient(y, [tx, tw] + ([] if tb is None else [tb]), output_gradients=tf.constant(dy, y.dtype))
    _check_tf_result(call, y.numpy(), out_shape, pads, groups, x, w, b)
    dz = dy * activation_slope(call.activation, z_ref)
    dx_want, dx_scale = backprop_reference(call, "input", x, w, dz, pads)
    dw_want, dw_scale = backprop_reference(call, "filter", x, w, dz, pads)
    slope = ACT_SLOPE if call.activation not in (None, "linear") else 1.0
    assert_matches(grads[0].numpy(), dx_want, dx_scale * slope, tol, "TF input gradient")
    assert_matches(grads[1].numpy(), dw_want, dw_scale * slope, tol, "TF filter gradient")
    if tb is not None:
        axes = tuple(i for i in range(dz.ndim) if i != (1 if call.first else dz.ndim - 1))
        db_scale = float(np.abs(dz).sum(axis=axes).max()) if dz.size else 0.0
        assert_matches(grads[2].numpy(), dz.sum(axis=axes), db_scale, tol, "TF bias gradient")


# ------------------------------------------------------------------------------------------ fixed bugs
# Found by this fuzzer (with values up to 2**64 in the strategies), fixed, and kept as regression tests. Each
# runs in a fresh interpreter, since some crashed it.

def _in_subprocess(code):
    root = os.path.dirname(os.path.dirname(os.path.abspath(ops.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root] + sys.path))
    if "ASAN_OPTIONS" in env:   # under .ci/sanitize: this process's reports are expected, not findings
        env["ASAN_OPTIONS"] += ":log_path=stderr"
    script = "import numpy as np\nfrom kconv import ops\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


_EMPTY_1D = "x = np.ones((1, 0, 2), np.float32); dy = np.ones((1, 0, 4), np.float32)\n"


def test_huge_dilation_on_an_empty_input_gives_zeros_never_a_crash():
    """(k - 1) * dilation used to overflow in the plan: a segfault, or an uninitialised filter gradient."""
    proc = _in_subprocess(_EMPTY_1D + "for _ in range(20):\n"
                          "    junk = np.full(3 * 2 * 4 * 4 + 64, 0x55, np.uint8); del junk\n"
                          "    dw = ops.conv1d_backprop_filter(x, (3, 2, 4), dy, 1, dilations=2**31 - 1)\n"
                          "    assert dw.shape == (3, 2, 4) and not dw.any(), dw\n"
                          "try:\n"
                          "    ops.conv1d_backprop_filter(x, (3, 2, 4), dy, 1, dilations=2**63 - 1)\n"
                          "    raise SystemExit('accepted')\n"
                          "except ValueError as e:\n"
                          "    assert 'dilations' in str(e)\n")
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-800:])


@pytest.mark.parametrize("kwargs", ["strides=2**64", "dilations=2**63", "padding=[(0, 0), (2**63, 0)]"])
def test_values_beyond_int64_raise_a_clear_error(kwargs):
    proc = _in_subprocess(f"""
        try:
            ops.conv2d(np.ones((1, 4, 4, 1), np.float32), np.ones((1, 1, 1, 1), np.float32), {kwargs})
        except (ValueError, MemoryError):
            pass
    """)
    assert proc.returncode == 0, proc.stderr[-800:]


@pytest.mark.parametrize("api", ["numpy", "tf"])
def test_zero_input_channels_raise_a_clear_error(api, request):
    x, w = np.ones((1, 5, 5, 0), np.float32), np.ones((3, 3, 1, 4), np.float32)
    if api == "tf":
        request.getfixturevalue("tf")
    with pytest.raises(ValueError, match="channels"):
        if api == "numpy":
            ops.conv2d(x, w)
        else:
            import kconv
            kconv.conv2d(x, w, 1, "VALID")


@pytest.mark.parametrize("batch", [0, 1])
def test_winograd_with_a_huge_padding_through_tf_raises_resource_exhausted_or_runs_empty(tf, batch):
    import kconv
    x, w = tf.ones((batch, 5, 5, 1)), tf.ones((3, 3, 1, 1))
    try:
        y = kconv.conv2d(x, w, 1, [(0, 0), (2**40, 0)], algorithm="winograd")
    except tf.errors.ResourceExhaustedError:
        assert batch
    else:
        assert not batch and y.shape == (0, 3, 2**40 + 3, 1)

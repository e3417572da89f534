"""Checks and normalises the arguments of the convolution ops, with errors that name the argument."""
import numbers

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INT32_MAX = 2**31 - 1      # strides and dilations: TensorFlow's attrs are int32
SIZE_MAX = 2**62           # sizes and paddings: past this the kernels' index arithmetic could overflow
# algorithm= names and their codes in kconv_api.h (2, 4, 6: Winograd F(m, 3) forced)
_ALGORITHM_CODES = {"auto": 0, "direct": 1, "winograd": 3, "winograd2": 2, "winograd4": 4, "winograd6": 6}
ALGORITHMS = tuple(_ALGORITHM_CODES)
# Activations fused into the forward pass, in the order of kconv_api.h's enum kc_activation
ACTIVATIONS = ("linear", "relu", "relu6", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "silu", "gelu")
LAYOUTS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW")}


def float_array(value, name):
    """The argument as a float32/float64 ndarray (no copy when it already is one)."""
    array = np.asarray(value)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got dtype {array.dtype} (shape {array.shape})")
    return array


def same_dtype(**arrays):
    """The common dtype of the arrays; TypeError naming each one when they differ."""
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} is {dt}" for name, dt in dtypes.items())
        raise TypeError(f"dtypes must match: {listed}")
    return next(iter(dtypes.values()))


def rank(array, expected, name, what):
    if array.ndim != expected:
        raise ValueError(f"{name} must be rank {expected} ({what}), got shape {array.shape}")


def data_format(value, nd):
    allowed = LAYOUTS[nd]
    fmt = allowed[0] if value is None else value
    if not isinstance(fmt, str) or fmt.upper() not in allowed:
        raise ValueError(f"data_format must be one of {allowed}, got {value!r}")
    return fmt.upper()


def spatial_ints(value, name, nd, fmt, minimum=1):
    """strides/dilations as nd ints: an int, nd ints, one int, or TensorFlow's nd+2 form (1 on N and C)."""
    if value is None:
        return (1,) * nd
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        values = (int(value),) * nd
    else:
        try:
            values = tuple(int(v) for v in value if not isinstance(v, bool) and _is_int(v))
            raw = tuple(value)
        except TypeError:
            raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
        if len(values) != len(raw):
            raise TypeError(f"{name} must contain ints only, got {value!r}")
        if len(values) == 1:
            values = values * nd
        elif len(values) == nd + 2:
            batch_and_channel = (values[0], values[1]) if fmt.startswith("NC") else (values[0], values[-1])
            if batch_and_channel != (1, 1):
                raise ValueError(f"{name} in the {nd + 2}-long form must be 1 on the batch and channel "
                                 f"dimensions, got {value!r}")
            values = values[2:] if fmt.startswith("NC") else values[1:-1]
        elif len(values) != nd:
            raise ValueError(f"{name} must have 1, {nd} or {nd + 2} values for a {nd}-D convolution, "
                             f"got {value!r}")
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if any(v > INT32_MAX for v in values):
        raise ValueError(f"{name} must be <= {INT32_MAX} (TensorFlow's int32), got {value!r}")
    return values


def _is_int(v):
    return isinstance(v, numbers.Integral) or (isinstance(v, np.ndarray) and v.ndim == 0
                                               and np.issubdtype(v.dtype, np.integer))


def padding(value, nd, fmt):
    """'VALID', 'SAME', 'CAUSAL' (1-D) or nd (before, after) pairs of non-negative ints."""
    if isinstance(value, str):
        mode = value.upper()
        allowed = ("VALID", "SAME", "CAUSAL") if nd == 1 else ("VALID", "SAME")
        if mode not in allowed:
            raise ValueError(f"padding must be one of {allowed} or explicit pairs, got {value!r}")
        return mode
    try:
        pairs = [tuple(p) for p in value]
    except TypeError:
        raise ValueError(f"padding must be a string or a list of (before, after) pairs, got {value!r}") from None
    if len(pairs) == nd + 2:   # TensorFlow's form: a pair per dimension, zero on N and C
        outer = (pairs[0], pairs[1]) if fmt.startswith("NC") else (pairs[0], pairs[-1])
        if any(tuple(p) != (0, 0) for p in outer):
            raise ValueError(f"explicit padding on the batch or channel dimension is not supported, got {value!r}")
        pairs = pairs[2:] if fmt.startswith("NC") else pairs[1:-1]
    if len(pairs) != nd or any(len(p) != 2 for p in pairs):
        raise ValueError(f"padding must have {nd} (before, after) pairs for a {nd}-D convolution, got {value!r}")
    out = []
    for pair in pairs:
        if not all(_is_int(v) and not isinstance(v, bool) for v in pair):
            raise ValueError(f"padding values must be ints, got {value!r}")
        if any(int(v) < 0 for v in pair):
            raise ValueError(f"padding values must be >= 0, got {value!r}")
        if any(int(v) > SIZE_MAX for v in pair):
            raise ValueError(f"padding values must be <= 2**62, got {value!r}")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(out)


def sizes(value, name, length):
    """input_sizes / filter_sizes as a tuple of non-negative ints (no bools, no fractions)."""
    try:
        raw = np.asarray(value).reshape(-1)
        if raw.dtype == bool or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
            raise TypeError
        out = tuple(int(v) for v in raw)
        if any(v != r for v, r in zip(out, raw.tolist())):   # 5.7 is not a size
            raise TypeError
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a sequence of {length} ints, got {value!r}") from None
    if len(out) != length or any(v < 0 or v > SIZE_MAX for v in out):
        raise ValueError(f"{name} must be {length} ints in [0, 2**62], got {value!r}")
    return out


def algorithm_code(value):
    """algorithm= as kconv_api.h's code; ValueError unless it is exactly one of ALGORITHMS (lower case, as
    everywhere in kconv: "AUTO" is refused, never taken for another branch)."""
    if not isinstance(value, str) or value not in _ALGORITHM_CODES:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {value!r}")
    return _ALGORITHM_CODES[value]


def activation(value):
    """activation= as its code in kconv_api.h (None means linear)."""
    if value is None:
        return 0
    if not isinstance(value, str) or value not in ACTIVATIONS:
        raise ValueError(f"activation must be None or one of {ACTIVATIONS}, got {value!r}")
    return ACTIVATIONS.index(value)

"""Hypothesis explores the whole argument space at once (derandomized: the same examples every run),
and shrinks any failure to a small reproducer; each example checks all three ops against the reference.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cases import CHANNELS, OPS, Conv1dCase, Conv2dCase, check_against_reference

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.filter_too_much],
)


def check_all_ops(case, seed):
    for op in OPS:
        check_against_reference(case, op, np.random.default_rng(seed))


padding_2d = st.one_of(
    st.sampled_from(["VALID", "SAME"]),
    st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)), st.tuples(st.integers(0, 3), st.integers(0, 3))),
)


@st.composite
def conv2d_cases(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    chans = st.sampled_from([c for c in CHANNELS if c % groups == 0])
    case = Conv2dCase(
        n=draw(st.integers(0, 3)),
        h=draw(st.integers(1, 14)),
        w=draw(st.integers(1, 14)),
        c=draw(chans),
        k=draw(chans),
        kh=draw(st.integers(1, 7)),
        kw=draw(st.integers(1, 7)),
        strides=draw(st.tuples(st.integers(1, 3), st.integers(1, 3))),
        dilations=draw(st.tuples(st.integers(1, 3), st.integers(1, 3))),
        groups=groups,
        padding=draw(padding_2d),
        data_format=draw(st.sampled_from(["NHWC", "NCHW"])),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
    )
    return draw(st.just(case).filter(Conv2dCase.is_valid))


@st.composite
def conv1d_cases(draw):
    groups = draw(st.sampled_from([1, 2, 4]))
    chans = st.sampled_from([c for c in CHANNELS if c % groups == 0])
    padding = draw(
        st.one_of(
            st.sampled_from(["VALID", "SAME", "CAUSAL"]),
            st.tuples(st.tuples(st.integers(0, 4), st.integers(0, 4))),
        )
    )
    case = Conv1dCase(
        n=draw(st.integers(0, 3)),
        w=draw(st.integers(1, 40)),
        c=draw(chans),
        k=draw(chans),
        kw=draw(st.integers(1, 7)),
        stride=draw(st.integers(1, 3)),
        dilation=draw(st.integers(1, 3)),
        groups=groups,
        padding=padding,
        data_format=draw(st.sampled_from(["NWC", "NCW"])),
        dtype=draw(st.sampled_from([np.float32, np.float64])),
    )
    return draw(st.just(case).filter(Conv1dCase.is_valid))


@SETTINGS
@given(case=conv2d_cases(), seed=st.integers(0, 2**32 - 1))
def test_conv2d_any_configuration_matches_reference(case, seed):
    check_all_ops(case, seed)


@SETTINGS
@given(case=conv1d_cases(), seed=st.integers(0, 2**32 - 1))
def test_conv1d_any_configuration_matches_reference(case, seed):
    check_all_ops(case, seed)


# ---------------------------------------------------------------------------------------
# Invalid configurations: one broken argument at a time, anywhere in a valid call
# ---------------------------------------------------------------------------------------

BREAKS = {
    # name: (what breaks, argument the message must name)
    "channels": ("filters' in-channels do not divide the input's", "channels"),
    "filters_out": ("K not divisible by groups", "groups"),
    "strides": ("a stride of 0 or below", "strides"),
    "dilations": ("a dilation of 0 or below", "dilations"),
    "padding": ("a negative explicit padding", "padding"),
    "padding_mode": ("an unknown padding string", "padding"),
    "rank": ("an input of the wrong rank", "input"),
    "dtype": ("an integer input", "input"),
    "mixed": ("float32 input with float64 filters", "dtype"),
    "too_big": ("a kernel larger than the VALID input", "larger than"),
    "format": ("an unknown data_format", "data_format"),
    "algorithm": ("an unknown algorithm", "algorithm"),
}


@st.composite
def broken_conv2d_calls(draw):
    """(break name, kwargs for ops.conv2d): a valid random call with exactly one argument broken."""
    from kconv import ops  # noqa: F401  (imported where the call runs)

    n, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 9)), draw(st.integers(3, 9))
    c, k, kh = draw(st.sampled_from([2, 4, 6])), draw(st.sampled_from([2, 4, 8])), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    f = rng.standard_normal((kh, kh, c, k)).astype(np.float32)
    kwargs = dict(input=x, filters=f, strides=1, padding="VALID", data_format="NHWC", dilations=1)
    name = draw(st.sampled_from(sorted(BREAKS)))
    if name == "channels":
        kwargs["filters"] = rng.standard_normal((kh, kh, c + 1, k)).astype(np.float32)
    elif name == "filters_out":
        kwargs["input"] = rng.standard_normal((n, h, w, 2 * c)).astype(np.float32)   # groups = 2
        kwargs["filters"] = rng.standard_normal((kh, kh, c, 2 * k + 1)).astype(np.float32)
    elif name == "strides":
        kwargs["strides"] = draw(st.sampled_from([0, -1, (1, 0), (0, 2)]))
    elif name == "dilations":
        kwargs["dilations"] = draw(st.sampled_from([0, -2, (1, 0)]))
    elif name == "padding":
        kwargs["padding"] = [(draw(st.integers(-3, -1)), 0), (0, 1)]
    elif name == "padding_mode":
        kwargs["padding"] = draw(st.sampled_from(["valid ", "FULL", "CAUSAL", ""]))
    elif name == "rank":
        kwargs["input"] = x[0] if draw(st.booleans()) else x[None]
    elif name == "dtype":
        kwargs["input"] = x.astype(draw(st.sampled_from([np.int32, np.int64, np.bool_])))
    elif name == "mixed":
        kwargs["filters"] = f.astype(np.float64)
    elif name == "too_big":
        kwargs["filters"] = rng.standard_normal((h + 1, w + 1, c, k)).astype(np.float32)
    elif name == "format":
        kwargs["data_format"] = draw(st.sampled_from(["NWHC", "nchw ", "channels_last"]))
    else:
        kwargs["algorithm"] = draw(st.sampled_from(["fft", "Winograd8", ""]))
    return name, kwargs


@SETTINGS
@given(broken_conv2d_calls())
def test_any_invalid_call_raises_a_clean_error_naming_it(broken):
    """ValueError or TypeError, never another exception or a crash, and the message says what is wrong;
    the caller's arrays are left as they were."""
    import pytest

    from kconv import ops

    name, kwargs = broken
    copies = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    with pytest.raises((ValueError, TypeError)) as info:
        ops.conv2d(**kwargs)
    assert BREAKS[name][1] in str(info.value), (name, str(info.value))
    for k, v in copies.items():
        np.testing.assert_array_equal(kwargs[k], v)

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

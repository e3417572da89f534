"""kconv.ops.conv1d and its two gradients against the float64 reference.

Same plan as test_conv2d: a seeded grid over every argument (kernel 1..7, stride and dilation 1..3,
groups 1/2/4, VALID/SAME/CAUSAL/explicit, NWC/NCW, float32/float64, batch 0/1/3, channel counts
around the micro-kernel tile), then widths around the row tile and block, long reductions, a text-CNN
layer, argument forms, non-contiguous inputs and untouched inputs.
"""

import dataclasses
import itertools

import numpy as np
import pytest

from cases import CHANNELS, OPS, Conv1dCase, check_against_reference, random_conv1d_cases
from conftest import DTYPES, VIEW_KINDS, assert_close, strided_view
from kconv import ops


def parametrize_cases(cases):
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


GRID = random_conv1d_cases(110, seed=1999)


def test_grid_covers_every_argument_value():
    seen = lambda attr: {getattr(c, attr) for c in GRID}  # noqa: E731
    assert seen("kw") == set(range(1, 8))
    assert seen("stride") == {1, 2, 3}
    assert seen("dilation") == {1, 2, 3}
    assert any(c.stride > 1 and c.dilation > 1 for c in GRID)
    assert seen("groups") == {1, 2, 4}
    kinds = {c.padding if isinstance(c.padding, str) else "explicit" for c in GRID}
    assert kinds == {"VALID", "SAME", "CAUSAL", "explicit"}
    assert seen("data_format") == {"NWC", "NCW"}
    assert seen("dtype") == {np.float32, np.float64}
    assert seen("n") == {0, 1, 3}
    assert {c.c for c in GRID} | {c.k for c in GRID} == set(CHANNELS)


@parametrize_cases(GRID)
@pytest.mark.parametrize("op", OPS)
def test_grid_matches_reference(case, op, rng):
    check_against_reference(case, op, rng)


def _width_cases():
    """Output widths around multiples of 6 / 8 and above one row block, batch 1 and 3."""
    cases = []
    chans = itertools.cycle([(16, 16), (7, 33), (33, 17), (64, 8), (3, 6)])
    widths = [1, 5, 6, 7, 8, 9, 12, 13, 16, 17, 47, 48, 49, 95, 96, 97, 143, 144, 145, 150, 289]
    for wo, (kernel, padding), n in itertools.product(widths, [(1, "VALID"), (3, "SAME"), (3, "CAUSAL")], [1, 3]):
        c, k = next(chans)
        for dtype in DTYPES:
            cases.append(Conv1dCase(n, wo, c, k, kernel, padding=padding, dtype=dtype))
    return cases


@parametrize_cases(_width_cases())
@pytest.mark.parametrize("op", OPS)
def test_output_widths_around_tile_multiples(case, op, rng):
    check_against_reference(case, op, rng)


LONG_REDUCTIONS = [
    Conv1dCase(2, 30, 200, 12, 3, padding="SAME"),  # 600
    Conv1dCase(2, 20, 128, 16, 5),  # 640
    Conv1dCase(1, 25, 100, 7, 7, padding="CAUSAL", dilation=2),  # 700
    Conv1dCase(1, 40, 513, 5, 1),
    Conv1dCase(1, 40, 512, 5, 1),
    Conv1dCase(1, 40, 171, 5, 3),  # 513
    Conv1dCase(2, 30, 400, 8, 3, groups=2, padding="SAME"),  # 600 per group
    Conv1dCase(2, 31, 100, 9, 4, stride=3, dilation=2, padding=((2, 1),), data_format="NCW"),
    Conv1dCase(2, 30, 400, 12, 3, padding="SAME"),  # 1200: two chunks
    Conv1dCase(1, 40, 1025, 5, 1),
    Conv1dCase(1, 40, 342, 5, 3),  # 1026
    Conv1dCase(1, 25, 150, 7, 7, padding="CAUSAL", dilation=2),  # 1050
    Conv1dCase(2, 30, 800, 8, 3, groups=2, padding="SAME"),  # 1200 per group
]
LONG_REDUCTIONS += [dataclasses.replace(c, dtype=np.float64) for c in LONG_REDUCTIONS]


@parametrize_cases(LONG_REDUCTIONS)
@pytest.mark.parametrize("op", OPS)
def test_reductions_longer_than_one_chunk(case, op, rng):
    check_against_reference(case, op, rng)


TEXT_CNN = [Conv1dCase(4, 60, 64, 100, k, padding="VALID", dtype=np.float32) for k in (3, 4, 5)] + [
    Conv1dCase(3, 70, 128, 100, 5, padding="VALID", algorithm="direct"),  # 640 long: one merged run, a 4-filter tail
    Conv1dCase(3, 70, 210, 100, 5, padding="VALID", algorithm="direct"),  # 1050 long: two chunks
    Conv1dCase(2, 50, 128, 100, 2, padding="VALID", algorithm="direct"),  # merged taps: one 256-long run
]


@parametrize_cases(TEXT_CNN)
@pytest.mark.parametrize("op", OPS)
def test_text_cnn_layers(case, op, rng):
    """Kim-2014-style layers: 64-d embeddings, 100 filters of width 3, 4, 5; 128-d at k = 5 and 2, direct."""
    check_against_reference(case, op, rng)


# ---------------------------------------------------------------------------------------
# Argument forms and semantics
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
def test_stride_and_dilations_forms_are_equivalent(data_format, rng):
    """int, [s] and tf's 3-long form ([1,s,1] NWC, [1,1,s] NCW) mean the same."""
    base = Conv1dCase(2, 23, 6, 8, 3, padding="SAME", data_format=data_format, dtype=np.float64)
    x, f, _ = base.inputs(rng)
    long_form = (lambda a: [1, a, 1]) if data_format == "NWC" else (lambda a: [1, 1, a])
    for stride, dilations, (s, d) in [
        (2, 1, (2, 1)),
        ([2], [1], (2, 1)),
        (long_form(3), long_form(1), (3, 1)),
        (1, [2], (1, 2)),
        (long_form(1), long_form(3), (1, 3)),
        (long_form(2), long_form(2), (2, 2)),
    ]:
        got = ops.conv1d(x, f, stride=stride, padding="SAME", data_format=data_format, dilations=dilations)
        want = dataclasses.replace(base, stride=s, dilation=d).ref_forward(x, f)
        assert_close(got, want, np.float64, what=f"stride={stride}, dilations={dilations}")


@pytest.mark.parametrize("padding", ["causal", "Causal", "same", "valid"])
def test_padding_strings_are_case_insensitive(padding, rng):
    case = Conv1dCase(2, 17, 4, 5, 3, dilation=2, padding=padding.upper(), dtype=np.float64)
    x, f, _ = case.inputs(rng)
    assert_close(ops.conv1d(x, f, padding=padding, dilations=2), case.ref_forward(x, f), np.float64)


@pytest.mark.parametrize("padding", [[(2, 1)], ((2, 1),), [[2, 1]], np.array([[2, 1]])], ids=str)
def test_explicit_padding_forms(padding, rng):
    case = Conv1dCase(2, 17, 4, 5, 3, stride=2, padding=((2, 1),), dtype=np.float64)
    x, f, dy = case.inputs(rng)
    kw = dict(stride=2, padding=padding)
    assert_close(ops.conv1d(x, f, **kw), case.ref_forward(x, f), np.float64)
    assert_close(ops.conv1d_backprop_input(x.shape, f, dy, **kw), case.ref_backprop_input(f, dy), np.float64)
    assert_close(ops.conv1d_backprop_filter(x, f.shape, dy, **kw), case.ref_backprop_filter(x, dy), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dilation", [1, 3])
def test_causal_is_left_padding_and_ignores_the_future(dtype, dilation, rng):
    """CAUSAL == explicit (dilation*(k-1), 0); output t is unchanged when inputs after t change."""
    x = rng.standard_normal((2, 20, 5)).astype(dtype)
    f = rng.standard_normal((4, 5, 3)).astype(dtype)
    y = ops.conv1d(x, f, padding="CAUSAL", dilations=dilation)
    assert y.shape == (2, 20, 3)
    np.testing.assert_array_equal(y, ops.conv1d(x, f, padding=[(dilation * 3, 0)], dilations=dilation))
    x2 = x.copy()
    x2[:, 11:] = rng.standard_normal((2, 9, 5))
    y2 = ops.conv1d(x2, f, padding="CAUSAL", dilations=dilation)
    np.testing.assert_array_equal(y[:, :11], y2[:, :11])


def test_conv1d_equals_conv2d_with_height_one(rng):
    """conv1d(x) is conv2d(x[:, None]) with a (1, k) kernel, in every op."""
    x = rng.standard_normal((3, 21, 8))
    f = rng.standard_normal((3, 4, 6))  # groups = 2
    dy = rng.standard_normal((3, 11, 6))  # ceil(21 / 2)
    kw1 = dict(stride=2, padding="SAME", dilations=2)
    kw2 = dict(strides=(1, 2), padding="SAME", dilations=(1, 2))
    y1 = ops.conv1d(x, f, **kw1)
    assert_close(y1, ops.conv2d(x[:, None], f[None], **kw2)[:, 0], np.float64)
    assert_close(
        ops.conv1d_backprop_input(x.shape, f, dy, **kw1),
        ops.conv2d_backprop_input((3, 1, 21, 8), f[None], dy[:, None], **kw2)[:, 0],
        np.float64,
    )
    assert_close(
        ops.conv1d_backprop_filter(x, f.shape, dy, **kw1),
        ops.conv2d_backprop_filter(x[:, None], (1, 3, 4, 6), dy[:, None], **kw2)[0],
        np.float64,
    )


# ---------------------------------------------------------------------------------------
# Empty batch, inputs untouched, non-contiguous inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_gives_empty_output_of_the_right_shape(data_format, dtype, rng):
    case = Conv1dCase(0, 19, 6, 16, 3, stride=2, padding="SAME", data_format=data_format, dtype=dtype)
    x, f, dy = case.inputs(rng)
    y = case.forward(x, f)
    assert y.shape == case.output_shape == ((0, 16, 10) if data_format == "NCW" else (0, 10, 16))
    assert y.dtype == dtype
    dx = case.backprop_input(f, dy)
    assert dx.shape == x.shape and dx.dtype == dtype
    df = case.backprop_filter(x, dy)
    assert df.shape == f.shape and df.dtype == dtype
    np.testing.assert_array_equal(df, 0)


@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_are_not_modified(data_format, dtype, rng):
    case = Conv1dCase(3, 30, 16, 20, 3, padding="CAUSAL", data_format=data_format, dtype=dtype)
    x, f, dy = case.inputs(rng)
    saved = [a.copy() for a in (x, f, dy)]
    results = [case.forward(x, f), case.backprop_input(f, dy), case.backprop_filter(x, dy)]
    for a, b, name in zip((x, f, dy), saved, ("input", "filters", "out_backprop")):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} was modified")
    for r in results:
        for a in (x, f, dy):
            assert not np.shares_memory(r, a)


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
def test_noncontiguous_inputs_are_accepted(kind, data_format, rng):
    case = Conv1dCase(3, 25, 17, 20, 3, stride=2, padding="SAME", data_format=data_format, dtype=np.float32)
    x, f, dy = case.inputs(rng)
    xv, fv, dyv = (strided_view(a, kind, rng) for a in (x, f, dy))
    assert_close(case.forward(xv, fv), case.ref_forward(x, f), case.dtype, what=f"forward, {kind}")
    assert_close(case.backprop_input(fv, dyv), case.ref_backprop_input(f, dy), case.dtype, what=f"bp input, {kind}")
    assert_close(case.backprop_filter(xv, dyv), case.ref_backprop_filter(x, dy), case.dtype, what=f"bp filter, {kind}")

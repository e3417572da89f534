"""kconv.ops.conv2d and its two gradients against the float64 reference.

A seeded grid covers every argument (kernel 1..7 incl. non-square, strides and dilations 1..3,
groups 1/2/4, VALID/SAME/explicit, NHWC/NCHW, float32/float64, batch 0/1/3, channel counts around
the micro-kernel tile); targeted cases cover output pixel counts around the row tile and row block,
reductions longer than one chunk (taps*channels > 1024), Winograd-shaped layers, argument forms,
non-contiguous / Fortran-ordered inputs, and that inputs are never written to.
"""

import dataclasses
import itertools
import random

import numpy as np
import pytest

from cases import CHANNELS, KERNELS_2D, OPS, Conv2dCase, check_against_reference, random_conv2d_cases
from conftest import DTYPES, VIEW_KINDS, assert_close, strided_view
import reference as ref
from kconv import ops


def parametrize_cases(cases):
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


# ---------------------------------------------------------------------------------------
# The seeded grid
# ---------------------------------------------------------------------------------------

GRID = random_conv2d_cases(130, seed=2024)


def test_grid_covers_every_argument_value():
    """The random grid really contains every argument value listed in the module docstring (guards reseeding)."""
    seen = lambda attr: {getattr(c, attr) for c in GRID}  # noqa: E731
    assert set(KERNELS_2D) <= {(c.kh, c.kw) for c in GRID}
    assert {s for c in GRID for s in c.strides} == {1, 2, 3}
    assert {d for c in GRID for d in c.dilations} == {1, 2, 3}
    assert any(min(c.strides) > 1 and min(c.dilations) > 1 for c in GRID)
    assert seen("groups") == {1, 2, 4}
    assert {c.padding if isinstance(c.padding, str) else "explicit" for c in GRID} == {"VALID", "SAME", "explicit"}
    assert seen("data_format") == {"NHWC", "NCHW"}
    assert seen("dtype") == {np.float32, np.float64}
    assert seen("n") == {0, 1, 3}
    assert {c.c for c in GRID} | {c.k for c in GRID} == set(CHANNELS)


@parametrize_cases(GRID)
@pytest.mark.parametrize("op", OPS)
def test_grid_matches_reference(case, op, rng):
    check_against_reference(case, op, rng)


# ---------------------------------------------------------------------------------------
# Row tile / row block edges: output pixel counts around multiples of 6 and 8, and above 144
# ---------------------------------------------------------------------------------------

# output pixel count -> (Ho, Wo)
PIXELS = {
    1: (1, 1), 5: (1, 5), 6: (2, 3), 7: (1, 7), 8: (2, 4), 9: (3, 3), 12: (3, 4), 13: (1, 13),
    16: (4, 4), 17: (1, 17), 47: (1, 47), 48: (6, 8), 49: (7, 7), 95: (5, 19), 96: (8, 12),
    97: (1, 97), 143: (11, 13), 144: (12, 12), 145: (5, 29), 150: (10, 15), 289: (17, 17),
}  # fmt: skip


def _pixel_cases():
    cases = []
    chans = itertools.cycle([(16, 16), (7, 33), (33, 17), (64, 8), (3, 6)])
    for (p, (ho, wo)), (kernel, padding), n in itertools.product(
        PIXELS.items(), [(1, "VALID"), (3, "SAME"), (3, "VALID")], [1, 3]
    ):
        c, k = next(chans)
        grow = 0 if padding == "SAME" else kernel - 1
        for dtype in DTYPES:
            cases.append(Conv2dCase(n, ho + grow, wo + grow, c, k, kernel, kernel, padding=padding, dtype=dtype))
    return cases


@parametrize_cases(_pixel_cases())
@pytest.mark.parametrize("op", OPS)
def test_output_pixel_counts_around_tile_multiples(case, op, rng):
    """M = N*Ho*Wo below/at/above multiples of MR (6 or 8) and above one row block (~144)."""
    check_against_reference(case, op, rng)


# ---------------------------------------------------------------------------------------
# Runs of pixels: layers with at most 16 filters (the narrow tile) whose tile rows are pixels of one
# image row take the run tile (pyx/igemm_conv.pxi, index_panels): interior runs read the image in
# place, runs at the image's edge a zero-padded strip; rows that wrap onto the next image row keep
# the pointer tile. Float32 only; widths of 16+ output pixels so whole tiles fit in one row.
# ---------------------------------------------------------------------------------------

RUN_TILE_CASES = [
    Conv2dCase(2, 32, 32, 16, 16, 3, 3, padding="SAME"),  # every tile in one row; edges top, bottom, left, right
    Conv2dCase(3, 28, 28, 16, 16, 3, 3, padding="SAME"),  # 28 = 16 + 12: tiles wrap onto the next row
    Conv2dCase(2, 20, 40, 3, 16, 3, 3, padding="SAME"),  # RGB: a run of 3 values per pixel
    Conv2dCase(2, 32, 33, 16, 16, 3, 3, strides=(2, 2), padding="SAME"),  # stride 2 <= 3 merged taps
    Conv2dCase(1, 40, 70, 8, 12, 5, 5, padding="SAME"),  # 12 filters: a partial column vector
    Conv2dCase(2, 24, 50, 16, 16, 3, 3, dilations=(1, 2), padding="SAME"),  # taps not merged: interior only
    Conv2dCase(2, 20, 36, 32, 16, 3, 3, groups=2, padding="SAME"),  # a group's channels of wider pixels
    Conv2dCase(2, 16, 48, 120, 16, 3, 3, padding="SAME"),  # 1080-long reduction: two chunks
    Conv2dCase(2, 30, 40, 16, 16, 3, 3, padding=((2, 0), (0, 2))),  # lopsided padding
    Conv2dCase(1, 40, 64, 16, 16, 2, 2, strides=(2, 2)),  # stride 2 = 2 merged taps
    Conv2dCase(2, 50, 64, 16, 16, 3, 3, strides=(3, 3), padding="SAME"),  # stride 3 = 3 merged taps
    Conv2dCase(2, 9, 90, 16, 16, 1, 7, padding="SAME"),  # one kernel row of 7
    Conv2dCase(2, 12, 40, 16, 16, 3, 3, strides=(1, 4), padding="SAME"),  # stride 4 > 3 taps: no strip
]


@parametrize_cases(RUN_TILE_CASES)
@pytest.mark.parametrize("op", OPS)
def test_layers_with_few_filters_on_runs_of_pixels(case, op, rng):
    check_against_reference(case, op, rng)


# A destination row of 1-4 row tiles reads the image's edge from zero-padded copies of whole source rows, one
# copy per source row and block (igemm_conv.pxi, row_cache_values), in both tile shapes: rows just under, at
# and over one and four tiles (16 / 8 pixels), blocks spanning several images, strides below and above the
# merged taps, padding wider than the kernel (whole taps in the padding), lopsided padding, one kernel row.
PADDED_ROW_CASES = [
    Conv2dCase(3, 9, 15, 16, 16, 3, 3, padding="SAME", algorithm="direct"),  # 15 < 16: no whole tile a row
    Conv2dCase(2, 11, 16, 16, 16, 3, 3, padding="SAME", algorithm="direct"),  # one tile a row
    Conv2dCase(2, 7, 17, 16, 12, 3, 3, padding="SAME", algorithm="direct"),  # a tile and a pixel
    Conv2dCase(2, 5, 64, 16, 16, 3, 3, padding="SAME", algorithm="direct"),  # four tiles: the limit
    Conv2dCase(1, 5, 65, 16, 16, 3, 3, padding="SAME", algorithm="direct"),  # past it: strips
    Conv2dCase(5, 8, 8, 24, 32, 3, 3, padding="SAME", algorithm="direct"),  # wide tile, 8 a row; 2 images a block
    Conv2dCase(2, 9, 31, 20, 40, 3, 3, padding="SAME", algorithm="direct"),  # wide, 3 tiles and 7 pixels
    Conv2dCase(2, 12, 33, 16, 16, 3, 3, strides=(2, 2), padding="SAME", algorithm="direct"),  # step 2 <= 3 taps
    Conv2dCase(2, 12, 70, 16, 32, 3, 3, strides=(1, 4), padding="SAME", algorithm="direct"),  # step 4 > 3 taps
    Conv2dCase(2, 8, 18, 16, 16, 3, 3, padding=((3, 3), (4, 4)), algorithm="direct"),  # taps wholly outside
    Conv2dCase(2, 9, 20, 8, 24, 3, 3, padding=((0, 2), (0, 2)), algorithm="direct"),  # right edge only
    Conv2dCase(3, 6, 24, 3, 16, 5, 5, padding="SAME", algorithm="direct"),  # RGB: 3 values a pixel
    Conv2dCase(2, 4, 30, 16, 16, 1, 5, padding="SAME", algorithm="direct"),  # one kernel row
    Conv2dCase(2, 12, 24, 64, 32, 3, 3, padding="SAME", algorithm="direct"),  # the filter read in place
    Conv2dCase(2, 10, 20, 16, 16, 3, 3, strides=(2, 2), padding="SAME", algorithm="direct",
               dtype=np.float64),  # float64 keeps its tables
]


@parametrize_cases(PADDED_ROW_CASES)
@pytest.mark.parametrize("op", OPS)
def test_edges_read_from_padded_copies_of_source_rows(case, op, rng):
    check_against_reference(case, op, rng)


# The wide tile (more than 16 filters per group) takes runs too: inside the image from the image itself, at
# its edges (rows wider than the padded-row cache) from zero-padded strips. Partial and half column panels,
# in-place filters, chunked reductions, strides, RGB stems, taps wholly in the padding.
WIDE_RUN_TILE_CASES = [
    Conv2dCase(2, 32, 32, 16, 32, 3, 3, padding="SAME", algorithm="direct"),  # whole tiles of 8 per row
    Conv2dCase(3, 28, 28, 32, 32, 3, 3, padding="SAME", algorithm="direct"),  # 28 = 3 x 8 + 4: tiles wrap
    Conv2dCase(2, 12, 20, 24, 100, 3, 3, padding="SAME", algorithm="direct"),  # 3 panels and a half panel
    Conv2dCase(2, 9, 33, 17, 20, 3, 3, algorithm="direct"),  # 20 filters: one partial panel; 17 -> dx wide
    Conv2dCase(2, 16, 24, 32, 40, 3, 3, strides=(2, 2), padding="SAME", algorithm="direct"),  # 40 = 32 + 8
    Conv2dCase(1, 10, 40, 64, 64, 1, 1),  # 1x1: the filter read in place
    Conv2dCase(2, 10, 40, 64, 32, 3, 3, padding="SAME", algorithm="direct"),  # in place at few rows
    Conv2dCase(2, 12, 32, 128, 20, 3, 3, padding="SAME", algorithm="direct"),  # 1152 long: chunks, no merge
    Conv2dCase(2, 10, 40, 64, 40, 3, 3, padding="SAME", algorithm="direct"),  # 576 in one chunk: merged
    Conv2dCase(2, 20, 36, 64, 48, 3, 3, groups=2, padding="SAME", algorithm="direct"),  # 24 filters a group
    Conv2dCase(2, 24, 50, 24, 32, 3, 3, dilations=(1, 2), padding="SAME", algorithm="direct"),  # unmerged
    Conv2dCase(2, 9, 90, 20, 24, 1, 7, padding="SAME", algorithm="direct"),  # one kernel row of 7
    Conv2dCase(1, 40, 64, 32, 48, 2, 2, strides=(2, 2), algorithm="direct"),  # stride 2 = 2 merged taps
    Conv2dCase(2, 13, 75, 3, 40, 7, 7, strides=(2, 2), padding="SAME", algorithm="direct"),  # RGB 7x7/2 stem
    Conv2dCase(2, 6, 41, 3, 64, 5, 5, padding="SAME", algorithm="direct"),  # RGB 5x5: 41 = 5 x 8 + 1
    Conv2dCase(1, 9, 70, 20, 36, 3, 3, padding=((3, 1), (4, 2)), algorithm="direct"),  # taps wholly outside
]


@parametrize_cases(WIDE_RUN_TILE_CASES)
@pytest.mark.parametrize("op", OPS)
def test_layers_with_many_filters_on_runs_of_pixels(case, op, rng):
    check_against_reference(case, op, rng)


# A last column panel of 1-8 filters (100 = 3 x 32 + 4) runs as dot products over the reduction (the forward's
# transposed tail, also the input gradient's with 1-8 channels past whole panels): run and table tiles,
# reductions in several chunks and not a multiple of the vector, groups, strides.
TAIL_CASES = [
    Conv2dCase(2, 12, 20, 24, 100, 3, 3, padding="SAME", algorithm="direct"),  # 4 past 3 panels
    Conv2dCase(3, 9, 13, 20, 33, 3, 3, algorithm="direct"),  # one filter past a panel; 20-channel taps
    Conv2dCase(2, 7, 30, 230, 40, 1, 5, padding="SAME", algorithm="direct"),  # 1150 long: two chunks
    Conv2dCase(2, 10, 11, 100, 36, 3, 3, strides=(2, 2), padding="SAME", algorithm="direct"),  # dx: 100 channels
    Conv2dCase(2, 8, 12, 72, 80, 3, 3, groups=2, padding="SAME", algorithm="direct"),  # 36 / 40 a group
    Conv2dCase(1, 5, 6, 9, 39, 2, 2, algorithm="direct"),  # few rows: a partial row tile
]


@parametrize_cases(TAIL_CASES)
@pytest.mark.parametrize("op", OPS)
def test_layers_with_a_few_filters_past_whole_panels(case, op, rng):
    check_against_reference(case, op, rng)


# A layer of at most 8 output channels over 16+ input channels runs entirely on that tail (the input gradient
# of a grey or RGB first layer, a 1-channel output layer): 1, 2, 3 filters take all 8 rows of a tile, 4-8 run
# 4 x 4 blocks; stride phases, dilation (no merged taps), channels past whole vectors, two reduction chunks.
# Unless its reduction (taps x channels) is shorter than a vector a filter: then the narrow tile (a 1x1
# segmentation head), on either side of that line.
FEW_FILTER_CASES = [
    Conv2dCase(2, 9, 11, 16, 4, 1, 1, algorithm="direct"),  # forward: 16 long for 4 filters, narrow tile
    Conv2dCase(2, 7, 10, 32, 8, 1, 1, padding="SAME", algorithm="direct"),  # 32 long for 8: narrow tile
    Conv2dCase(2, 9, 11, 16, 1, 1, 1, algorithm="direct"),  # 16 long for 1 filter: the tail
    Conv2dCase(2, 8, 9, 32, 2, 1, 1, algorithm="direct"),  # 32 for 2: the tail, at the line
    Conv2dCase(2, 12, 15, 1, 32, 5, 5, padding="SAME", algorithm="direct"),  # dx: one channel, merged taps
    Conv2dCase(2, 13, 17, 32, 1, 5, 5, padding="SAME", algorithm="direct"),  # forward: one filter
    Conv2dCase(2, 11, 14, 3, 20, 3, 3, padding="SAME", algorithm="direct"),  # dx: 3 channels, 20 a tap
    Conv2dCase(2, 17, 19, 3, 40, 7, 7, strides=(2, 2), padding="SAME", algorithm="direct"),  # dx by phases
    Conv2dCase(2, 9, 10, 2, 48, 3, 3, dilations=(2, 2), padding="SAME", algorithm="direct"),  # 2, unmerged
    Conv2dCase(3, 8, 9, 6, 16, 3, 3, algorithm="direct"),  # dx: 6 channels, two 4 x 4 blocks
    Conv2dCase(2, 10, 10, 8, 64, 1, 1, strides=(2, 2), algorithm="direct"),  # dx: 8 channels, 1x1/2 (narrow)
    Conv2dCase(2, 9, 12, 40, 5, 3, 3, padding="SAME", algorithm="direct"),  # forward: 5 filters
    Conv2dCase(2, 8, 9, 8, 64, 3, 3, groups=2, padding="SAME", algorithm="direct"),  # dx: 4 a group
    Conv2dCase(1, 6, 7, 2, 120, 3, 3, padding="SAME", algorithm="direct"),  # dx: 1080 long, two chunks
]


@parametrize_cases(FEW_FILTER_CASES)
@pytest.mark.parametrize("op", OPS)
def test_layers_of_a_few_output_channels(case, op, rng):
    check_against_reference(case, op, rng)


@pytest.mark.parametrize("filters", [1, 2, 3, 6, 16, 36, 40, 100])
@pytest.mark.parametrize("activation", ["relu", "relu6", "linear"])
def test_runs_of_pixels_with_bias_and_activation_in_the_tile(activation, filters, rng):
    x = rng.standard_normal((2, 32, 32, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, filters)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    got = ops.conv2d(x, w, 1, "SAME", bias=b, activation=activation, algorithm="direct")
    y = ref.conv2d(x, w, pads=((1, 1), (1, 1))) + b
    want = {"relu": np.maximum(y, 0), "relu6": np.clip(y, 0, 6), "linear": y}[activation]
    assert_close(got, want, np.float32, what=f"conv2d + bias, {activation}, {filters} filters")


# ---------------------------------------------------------------------------------------
# Reductions longer than one chunk (direct: taps * channels per group > 1024; Winograd: channels > 512), and
# reductions of 513-1024 in one chunk (their kernel rows merge into one pointer)
# ---------------------------------------------------------------------------------------

LONG_REDUCTIONS = [
    Conv2dCase(2, 8, 8, 100, 20, 3, 3, padding="SAME"),  # 900
    Conv2dCase(1, 9, 9, 33, 16, 5, 5),  # 825
    Conv2dCase(1, 7, 7, 16, 8, 7, 7, padding="SAME"),  # 784
    Conv2dCase(2, 6, 6, 64, 64, 3, 3, padding="SAME"),  # 576, Winograd-shaped
    Conv2dCase(1, 5, 6, 511, 9, 1, 1),
    Conv2dCase(1, 5, 6, 512, 9, 1, 1),
    Conv2dCase(1, 5, 6, 513, 9, 1, 1),
    Conv2dCase(1, 4, 4, 128, 5, 2, 2),  # exactly 512
    Conv2dCase(1, 4, 4, 129, 5, 2, 2),  # 516
    Conv2dCase(1, 7, 7, 600, 7, 1, 1, padding="SAME"),
    Conv2dCase(1, 5, 6, 1023, 9, 1, 1),
    Conv2dCase(1, 5, 6, 1024, 9, 1, 1),
    Conv2dCase(1, 5, 6, 1025, 9, 1, 1),
    Conv2dCase(1, 4, 4, 256, 5, 2, 2),  # exactly 1024
    Conv2dCase(1, 4, 4, 257, 5, 2, 2),  # 1028
    Conv2dCase(2, 9, 9, 114, 20, 3, 3, padding="SAME", algorithm="direct"),  # 1026
    Conv2dCase(1, 9, 12, 41, 24, 5, 5, padding="SAME"),  # 1025: two chunks of 5x5 taps
    Conv2dCase(1, 8, 9, 21, 16, 7, 7, padding="SAME"),  # 1029
    Conv2dCase(2, 8, 8, 240, 8, 3, 3, groups=2, padding="SAME"),  # 1080 per group
    Conv2dCase(1, 6, 6, 640, 40, 3, 3, padding="SAME"),  # Winograd-shaped: 640 channels, two product chunks
    Conv2dCase(2, 8, 8, 200, 8, 3, 3, groups=2, padding="SAME"),  # 900 per group
    Conv2dCase(1, 11, 10, 100, 7, 3, 3, strides=(2, 2), dilations=(2, 2), padding=((1, 2), (0, 1))),
    Conv2dCase(2, 8, 8, 100, 12, 3, 3, strides=(2, 1), padding="SAME", data_format="NCHW"),
    # the filter gradient reduces over N*Ho*Wo pixels: 8192 and 1600 here, many chunks and splits
    Conv2dCase(32, 16, 16, 16, 16, 3, 3, padding="SAME"),
    Conv2dCase(16, 20, 20, 8, 40, 3, 3, strides=(2, 2), groups=2, padding="SAME", data_format="NCHW"),
]
LONG_REDUCTIONS += [dataclasses.replace(c, dtype=np.float64) for c in LONG_REDUCTIONS]


@parametrize_cases(LONG_REDUCTIONS)
@pytest.mark.parametrize("op", OPS)
def test_reductions_longer_than_one_chunk(case, op, rng):
    check_against_reference(case, op, rng)


# The input gradient's filter panels are the filter transposed (columns are input channels, K apart), a
# vector's lanes of filters at a time (pyx/pack.pxi): K below, at, above and between multiples of 16 and 8,
# input channels filling whole panels or ending in a part panel, groups, and a stride-2 pass by phases.
TRANSPOSED_PANELS = [
    Conv2dCase(2, 6, 7, c, k, 3, 3, padding="SAME", algorithm="direct")
    for c, k in [(32, 15), (32, 16), (64, 17), (33, 47), (64, 64), (100, 100)]
] + [
    Conv2dCase(1, 7, 7, 96, 80, 1, 1),
    Conv2dCase(2, 8, 8, 64, 96, 3, 3, groups=2, padding="SAME", algorithm="direct"),
    Conv2dCase(2, 9, 9, 32, 40, 3, 3, strides=(2, 2), padding="SAME"),
]


@parametrize_cases(TRANSPOSED_PANELS)
def test_input_gradient_reads_the_filter_transposed_in_blocks(case, rng):
    check_against_reference(case, "backprop_input", rng)


# ---------------------------------------------------------------------------------------
# Winograd-shaped layers: 3x3, stride 1, no dilation, many channels; output sizes around tiles
# ---------------------------------------------------------------------------------------


def _winograd_cases(count=32, seed=7):
    r = random.Random(seed)
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, 16, 25]
    cases = []
    for i in range(count):
        padding = ["SAME", "VALID"][i % 2]
        ho, wo = r.choice(sizes), r.choice(sizes)
        grow = 0 if padding == "SAME" else 2
        cases.append(
            Conv2dCase(
                n=r.choice([1, 4, 5]),
                h=ho + grow,
                w=wo + grow,
                c=r.choice([16, 17, 32, 64]),
                k=r.choice([16, 17, 32, 64]),
                kh=3,
                kw=3,
                padding=padding,
                data_format=r.choice(["NHWC", "NHWC", "NCHW"]),
                dtype=DTYPES[(i // 2) % 2],
            )
        )
    return cases


@parametrize_cases(_winograd_cases())
@pytest.mark.parametrize("op", OPS)
def test_winograd_shaped_layers(case, op, rng):
    """3x3 stride-1 layers with C, K >= 16, any batch: the accuracy contract holds whatever algorithm runs."""
    check_against_reference(case, op, rng)


# ---------------------------------------------------------------------------------------
# Argument forms
# ---------------------------------------------------------------------------------------

FORM_CASE = Conv2dCase(2, 11, 10, 6, 8, 3, 2, strides=(2, 3), dilations=(1, 1), padding="SAME", dtype=np.float64)


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_strides_and_dilations_forms_are_equivalent(data_format, rng):
    """int, [s], [sh, sw] and tf's 4-long form ([1,sh,sw,1] NHWC, [1,1,sh,sw] NCHW) mean the same."""
    base = Conv2dCase(2, 11, 10, 6, 8, 3, 2, data_format=data_format, padding="SAME", dtype=np.float64)
    x, f, _ = base.inputs(rng)

    def run(strides, dilations):
        return ops.conv2d(x, f, strides=strides, padding="SAME", data_format=data_format, dilations=dilations)

    long_form = (lambda a, b: [1, a, b, 1]) if data_format == "NHWC" else (lambda a, b: [1, 1, a, b])
    for strides, dilations, expect in [
        (2, 1, ((2, 2), (1, 1))),
        ([2], [1], ((2, 2), (1, 1))),
        ((2, 3), (1, 1), ((2, 3), (1, 1))),
        (long_form(2, 3), long_form(1, 1), ((2, 3), (1, 1))),
        (1, 2, ((1, 1), (2, 2))),
        ([1, 1], [2, 3], ((1, 1), (2, 3))),
        (long_form(1, 1), long_form(2, 3), ((1, 1), (2, 3))),
        (long_form(3, 2), long_form(2, 2), ((3, 2), (2, 2))),
    ]:
        canon = dataclasses.replace(base, strides=expect[0], dilations=expect[1])
        assert_close(run(strides, dilations), canon.ref_forward(x, f), np.float64, what=f"{strides}, {dilations}")


@pytest.mark.parametrize("padding", ["same", "Same", "SAME"])
def test_padding_strings_are_case_insensitive(padding, rng):
    x, f, _ = FORM_CASE.inputs(rng)
    got = ops.conv2d(x, f, strides=(2, 3), padding=padding)
    assert_close(got, FORM_CASE.ref_forward(x, f), np.float64)


@pytest.mark.parametrize(
    "padding",
    [
        [(1, 2), (0, 3)],
        ((1, 2), (0, 3)),
        [[1, 2], [0, 3]],
        np.array([[1, 2], [0, 3]]),
        [[0, 0], [1, 2], [0, 3], [0, 0]],  # tf's 4-pair NHWC form
    ],
    ids=["list-of-tuples", "tuple-of-tuples", "list-of-lists", "ndarray", "tf-4-pairs"],
)
def test_explicit_padding_forms(padding, rng):
    case = Conv2dCase(2, 7, 6, 3, 5, 3, 2, strides=(2, 1), padding=((1, 2), (0, 3)), dtype=np.float64)
    x, f, dy = case.inputs(rng)
    kw = dict(strides=(2, 1), padding=padding)
    assert_close(ops.conv2d(x, f, **kw), case.ref_forward(x, f), np.float64)
    assert_close(ops.conv2d_backprop_input(x.shape, f, dy, **kw), case.ref_backprop_input(f, dy), np.float64)
    assert_close(ops.conv2d_backprop_filter(x, f.shape, dy, **kw), case.ref_backprop_filter(x, dy), np.float64)


def test_four_pair_padding_follows_data_format_like_tf(rng):
    """tf.nn.conv2d with NCHW takes explicit padding as [[0,0],[0,0],[t,b],[l,r]]."""
    case = Conv2dCase(2, 7, 6, 3, 5, 3, 2, padding=((1, 2), (0, 3)), data_format="NCHW", dtype=np.float64)
    x, f, _ = case.inputs(rng)
    got = ops.conv2d(x, f, padding=[[0, 0], [0, 0], [1, 2], [0, 3]], data_format="NCHW")
    assert_close(got, case.ref_forward(x, f), np.float64)


@pytest.mark.parametrize("as_type", [tuple, list, np.array], ids=["tuple", "list", "ndarray"])
def test_sizes_accept_tuple_list_and_array(as_type, rng):
    """input_sizes / filter_sizes may be any sequence of ints."""
    case = Conv2dCase(2, 7, 6, 4, 5, 3, 2, strides=(1, 2), padding="SAME", dtype=np.float64)
    x, f, dy = case.inputs(rng)
    dx = ops.conv2d_backprop_input(as_type(x.shape), f, dy, strides=(1, 2), padding="SAME")
    df = ops.conv2d_backprop_filter(x, as_type(f.shape), dy, strides=(1, 2), padding="SAME")
    assert_close(dx, case.ref_backprop_input(f, dy), np.float64)
    assert_close(df, case.ref_backprop_filter(x, dy), np.float64)


def test_positional_arguments_follow_tf_order(rng):
    """conv2d(input, filters, strides, padding, data_format, dilations), as tf.nn.conv2d."""
    case = Conv2dCase(1, 9, 9, 4, 4, 3, 3, strides=(2, 2), dilations=(1, 1), padding="SAME", data_format="NCHW",
                      dtype=np.float64)  # fmt: skip
    x, f, dy = case.inputs(rng)
    assert_close(ops.conv2d(x, f, 2, "SAME", "NCHW", 1), case.ref_forward(x, f), np.float64)
    assert_close(ops.conv2d_backprop_input(x.shape, f, dy, 2, "SAME", "NCHW", 1), case.ref_backprop_input(f, dy),
                 np.float64)  # fmt: skip
    assert_close(ops.conv2d_backprop_filter(x, f.shape, dy, 2, "SAME", "NCHW", 1), case.ref_backprop_filter(x, dy),
                 np.float64)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Empty batch, inputs untouched, non-contiguous inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_gives_empty_output_of_the_right_shape(data_format, dtype, rng):
    """N = 0: empty forward / input gradient of the right shape, an all-zero filter gradient."""
    case = Conv2dCase(0, 9, 8, 6, 16, 3, 3, strides=(2, 1), padding="SAME", data_format=data_format, dtype=dtype)
    x, f, dy = case.inputs(rng)
    y = case.forward(x, f)
    assert y.shape == case.output_shape == ((0, 16, 5, 8) if data_format == "NCHW" else (0, 5, 8, 16))
    assert y.dtype == dtype
    dx = case.backprop_input(f, dy)
    assert dx.shape == x.shape and dx.dtype == dtype
    df = case.backprop_filter(x, dy)
    assert df.shape == f.shape and df.dtype == dtype
    np.testing.assert_array_equal(df, 0)


NOT_MODIFIED_CASES = [
    Conv2dCase(3, 9, 8, 6, 16, 3, 3, padding="SAME", dtype=dtype, data_format=fmt)
    for dtype in DTYPES
    for fmt in ["NHWC", "NCHW"]
] + [Conv2dCase(2, 10, 9, 8, 4, 3, 2, strides=(2, 3), dilations=(1, 1), groups=2, padding=((1, 0), (2, 1)))]


@parametrize_cases(NOT_MODIFIED_CASES)
def test_inputs_are_not_modified(case, rng):
    """No op writes to x, filters or out_backprop, and no result aliases an input."""
    x, f, dy = case.inputs(rng)
    saved = [a.copy() for a in (x, f, dy)]
    results = [case.forward(x, f), case.backprop_input(f, dy), case.backprop_filter(x, dy)]
    for a, b, name in zip((x, f, dy), saved, ("input", "filters", "out_backprop")):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} was modified")
    for r in results:
        for a in (x, f, dy):
            assert not np.shares_memory(r, a)


VIEW_CASES = [
    Conv2dCase(2, 9, 10, 17, 20, 3, 3, padding="SAME", dtype=np.float32),
    Conv2dCase(3, 8, 7, 16, 16, 3, 3, padding="SAME", dtype=np.float64, data_format="NCHW"),
    Conv2dCase(2, 11, 9, 8, 12, 2, 3, strides=(2, 2), dilations=(1, 1), groups=4, padding="VALID"),
]


@parametrize_cases(VIEW_CASES)
@pytest.mark.parametrize("kind", VIEW_KINDS)
def test_noncontiguous_inputs_are_accepted(case, kind, rng):
    """Sliced, transposed, negatively strided, Fortran-ordered, misaligned and read-only
    x / filters / out_backprop."""
    x, f, dy = case.inputs(rng)
    xv, fv, dyv = (strided_view(a, kind, rng) for a in (x, f, dy))
    assert_close(case.forward(xv, fv), case.ref_forward(x, f), case.dtype, what=f"forward, {kind}")
    assert_close(case.backprop_input(fv, dyv), case.ref_backprop_input(f, dy), case.dtype, what=f"bp input, {kind}")
    assert_close(case.backprop_filter(xv, dyv), case.ref_backprop_filter(x, dy), case.dtype, what=f"bp filter, {kind}")


def test_channels_first_view_of_channels_last_data(rng):
    """An NCHW call on a transposed view of NHWC memory (and the reverse) gives the same values."""
    case = Conv2dCase(2, 7, 9, 5, 6, 3, 3, padding="SAME", dtype=np.float64)
    x, f, _ = case.inputs(rng)
    y_nhwc = ops.conv2d(x, f, padding="SAME")
    y_nchw = ops.conv2d(x.transpose(0, 3, 1, 2), f, padding="SAME", data_format="NCHW")
    assert_close(y_nchw, case.ref_forward(x, f).transpose(0, 3, 1, 2), np.float64)
    assert_close(y_nhwc, case.ref_forward(x, f), np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "n, h, w, c, k, kernel, stride, groups",
    [(1, 7, 7, 64, 64, 3, 1, 1), (2, 5, 6, 96, 32, 3, 2, 1), (3, 9, 9, 130, 64, 1, 1, 1), (2, 8, 8, 128, 64, 3, 1, 2),
     (1, 3, 4, 600, 96, 3, 1, 1), (4, 30, 30, 64, 64, 1, 2, 1),
     # filter rows >= 1 KB apart: each tap's slice packed per chunk (two chunks of 80 channels; groups; 1x1)
     (1, 7, 7, 160, 256, 3, 1, 1), (1, 6, 5, 256, 512, 3, 1, 2), (2, 9, 9, 96, 288, 1, 1, 1),
     # ... in pieces of rows, the next piece asked for while one runs (a 1024-long reduction; merged taps)
     (1, 7, 7, 1024, 512, 1, 1, 1), (1, 7, 7, 112, 1024, 3, 1, 1)],
)
def test_forward_reading_the_filter_in_place_matches_the_reference(n, h, w, c, k, kernel, stride, groups, dtype, rng):
    """Layers with few output pixels (or 1x1) and whole panels of filters read the filter where it lies, one
    micro-kernel call per tap, bias and ReLU applied on the last (where filter rows lie 1 KB apart or more,
    each tap's slice of the task's panels is packed first); the output is poisoned with NaN first."""
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    f = rng.standard_normal((kernel, kernel, c // groups, k)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    conv = ops._describe(2, x.shape, f.shape, stride, "SAME", "NHWC", 1)
    plan = ops._plan(conv, np.dtype(dtype), "direct", None, activation=ops.ACTIVATIONS.index("relu"))
    y = np.full((n, *plan.out_hw, k), np.nan, dtype)
    plan.forward(x, f, b, y)
    pads = ref.pad_pairs_2d("SAME", (h, w), (kernel, kernel), (stride, stride), (1, 1))
    want = np.maximum(ref.conv2d(x, f, (stride, stride), pads) + b, 0)
    assert_close(y, want, dtype, what="in-place filter forward")


@pytest.mark.parametrize("offset", [0, 1])
@pytest.mark.parametrize("activation", ["relu", "linear", "sigmoid"])
@pytest.mark.parametrize("channels, dtype", [(16, np.float32), (64, np.float32), (64, np.float64)])
def test_outputs_larger_than_the_caches_are_streamed_alike(channels, dtype, activation, offset, rng):
    """A one-chunk layer whose output outgrows the caches (16 MiB and up) stores its tiles with streaming
    stores (16 channels: packed filter; 64: read in place), where their rows are vector-aligned (offset 0)
    and plainly where not (offset 1 value); the output is poisoned with NaN first and every value checked."""
    x = rng.standard_normal((4, 64, 64, channels)).astype(dtype)
    f = rng.standard_normal((1, 1, channels, 256)).astype(dtype)
    b = rng.standard_normal(256).astype(dtype)
    conv = ops._describe(2, x.shape, f.shape, 1, "VALID", "NHWC", 1)
    plan = ops._plan(conv, np.dtype(dtype), "direct", None, activation=ops.ACTIVATIONS.index(activation))
    room = np.full(x.shape[:3] + (256,), np.nan, dtype).ravel()
    room = np.concatenate([room, np.full(1, np.nan, dtype)])
    y = room[offset:offset + room.size - 1].reshape(x.shape[:3] + (256,))
    plan.forward(x, f, b, y)
    z = np.einsum("nhwc,ck->nhwk", x.astype(np.float64), f[0, 0].astype(np.float64)) + b
    want = {"relu": np.maximum(z, 0), "linear": z, "sigmoid": 1 / (1 + np.exp(-z))}[activation]
    assert_close(y, want, dtype, what=f"streamed 1x1 output, {activation}, offset {offset}")


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("n, hw", [(3, 13), (1, 5)])
@pytest.mark.parametrize("c, k", [(16, 96), (16, 100), (24, 144), (64, 96), (64, 192)])
def test_1x1_layers_write_every_column_panel_of_every_pixel(c, k, n, hw, activation, rng):
    """A 1x1 layer's reduction is one chunk, so its row panels run outer and each pixel's column panels are
    written one after another (the packed filter below 64 channels, the filter read in place from 64, a
    last panel of 4 filters on the transposed tail); 507 pixels are several row blocks and a part panel, 25
    a single block cut into column ranges. The output is poisoned with NaN first."""
    x = rng.standard_normal((n, hw, hw, c)).astype(np.float32)
    f = rng.standard_normal((1, 1, c, k)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    conv = ops._describe(2, x.shape, f.shape, 1, "SAME", "NHWC", 1)
    plan = ops._plan(conv, np.dtype(np.float32), "direct", None, activation=ops.ACTIVATIONS.index(activation))
    y = np.full((n, hw, hw, k), np.nan, np.float32)
    plan.forward(x, f, b, y)
    z = ref.conv2d(x, f) + b
    want = np.maximum(z, 0) if activation == "relu" else 1 / (1 + np.exp(-z))
    assert_close(y, want, np.float32, what=f"1x1 {c} -> {k} + bias + {activation}")

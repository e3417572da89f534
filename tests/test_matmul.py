"""ops.matmul (the micro-kernel as a plain GEMM) against float64 numpy.

Sizes go below / at / above / between multiples of every register tile kconv may be built with
(MR in {6, 8}; NR in {4, 8, 16, 32}), and the depth k goes around the reduction chunk (1024 values).
"""

import numpy as np
import pytest

import kconv
from conftest import DTYPES, VIEW_KINDS, assert_close, strided_view
from kconv import ops

M_SIZES = [1, 2, 5, 6, 7, 8, 9, 12, 13, 16, 17, 47, 97, 145]
N_SIZES = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65]
K_SIZES = [1, 5, 511, 513, 1023, 1024, 1025, 2500]


def test_tile_is_reported():
    """config()['tile_f32'] is (MR, NR) of the compiled micro-kernel, one of the documented tiles."""
    assert tuple(kconv.config()["tile_f32"]) in {(6, 16), (8, 32), (6, 8)}


def check_matmul(a, b, dtype, what=""):
    """The contract against float64 numpy, its scale floored at the size of the products' sums
    before cancellation (see cases.check_against_reference: a lone 1x1 result of 1500 float32
    products can cancel to ~1 while its terms sum to ~40 in root-square)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    floor = np.sqrt(np.max(np.square(a64) @ np.square(b64), initial=0.0))
    assert_close(ops.matmul(a, b), a64 @ b64, dtype, what=what, floor=floor)


@pytest.mark.parametrize("k", K_SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_matches_numpy_for_every_edge_size(k, dtype, rng):
    """All (m, n) in M_SIZES x N_SIZES for one depth; failures are listed together."""
    failures = []
    for m in M_SIZES:
        for n in N_SIZES:
            a = rng.standard_normal((m, k)).astype(dtype)
            b = rng.standard_normal((k, n)).astype(dtype)
            try:
                check_matmul(a, b, dtype, what=f"m={m} n={n}")
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, f"{len(failures)} of {len(M_SIZES) * len(N_SIZES)} sizes fail:\n" + "\n".join(failures[:10])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(300, 200, 2100), (1000, 33, 1500), (7, 500, 1025)])
def test_matmul_larger_blocks(m, n, k, dtype, rng):
    """Several row blocks, column panels and reduction chunks at once."""
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    check_matmul(a, b, dtype)


@pytest.mark.parametrize("kind", VIEW_KINDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_noncontiguous_inputs(kind, dtype, rng):
    a = rng.standard_normal((37, 515)).astype(dtype)
    b = rng.standard_normal((515, 45)).astype(dtype)
    av, bv = strided_view(a, kind, rng), strided_view(b, kind, rng)
    a_saved, b_saved = av.copy(), bv.copy()
    assert_close(ops.matmul(av, bv), a.astype(np.float64) @ b.astype(np.float64), dtype, what=kind)
    np.testing.assert_array_equal(av, a_saved)
    np.testing.assert_array_equal(bv, b_saved)


def test_matmul_transposed_operands(rng):
    """a.T and b.T views (the common non-contiguous case in a backward pass)."""
    a = rng.standard_normal((600, 30)).astype(np.float32)
    b = rng.standard_normal((50, 600)).astype(np.float32)
    assert_close(ops.matmul(a.T, b.T), a.T.astype(np.float64) @ b.T.astype(np.float64), np.float32)


@pytest.mark.parametrize("m, n, k", [(0, 5, 7), (5, 0, 7), (5, 7, 0)])
def test_matmul_empty_dimensions(m, n, k, rng):
    """Zero rows / columns give an empty result; zero depth gives zeros, as numpy does."""
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    got = ops.matmul(a, b)
    assert got.shape == (m, n) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.zeros((m, n)))


def test_matmul_rejects_mismatched_shapes_and_dtypes():
    with pytest.raises(ValueError):
        ops.matmul(np.ones((3, 4)), np.ones((5, 6)))
    with pytest.raises(ValueError):
        ops.matmul(np.ones((3, 4, 1)), np.ones((4, 6)))
    with pytest.raises(TypeError):
        ops.matmul(np.ones((3, 4), np.float32), np.ones((4, 6)))
    with pytest.raises(TypeError):
        ops.matmul(np.ones((3, 4), np.int64), np.ones((4, 6), np.int64))

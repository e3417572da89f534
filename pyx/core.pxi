# One instruction-set build of kconv's kernels. Python reaches them through plans (plan.pxi: ConvPlan, and
# the kc_api table the TensorFlow op library calls); kconv.ops checks arguments first.
import numpy as np

include "tile.pxi"
include "scratch.pxi"
include "pack.pxi"
include "epilogue.pxi"
include "batch_norm.pxi"
include "igemm_conv.pxi"
include "filter_grad.pxi"
include "depthwise.pxi"
include "winograd.pxi"
include "winograd_filter_grad.pxi"
include "winograd_matrices.pxi"
include "team_binding.pxi"
include "plan.pxi"

ISA = KC_ISA.decode()


def tile_shape(dtype):
    """(MR, NR) of the micro-kernel tile for float32 or float64."""
    if np.dtype(dtype) == np.float32:
        return KC_MR_F32, KC_NR_F32
    return KC_MR_F64, KC_NR_F64


def fma_chains(long iters, int n_threads):
    """Runs independent vector FMA chains on n_threads threads; returns (flops done, a checksum)."""
    cdef int t
    cdef float sink = 0
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule='static'):
            sink += kc_fma_chains(iters)
    return float(iters) * KC_FMA_CHAIN_FLOPS * n_threads, sink


def winograd_tile_transform(str kind, int m, const real[:, :, ::1] src):
    """One 2-D F(m x m, 3 x 3) tile through the register transform of `kind`, n channels (src's last axis):
    "input" B^T d B (alpha x alpha -> alpha x alpha), "output" A^T M A (alpha x alpha -> m x m), "filter"
    G g G^T (3 x 3 -> alpha x alpha), "output_gradient" A dY A^T (m x m -> alpha x alpha). For the tests."""
    cdef int alpha = m + 2
    cdef WinoGrid grid
    cdef Py_ssize_t n = src.shape[2]
    if m not in (2, 4, 6) or kind not in ("input", "output", "filter", "output_gradient"):
        raise ValueError(f"no {kind!r} transform for F({m}x{m}, 3x3)")
    rows = {"input": alpha, "output": alpha, "filter": 3, "output_gradient": m}[kind]
    if src.shape[0] != rows or src.shape[1] != rows:
        raise ValueError(f"a {kind} tile of F({m}x{m}, 3x3) is {rows} x {rows}, not {src.shape[0]} x {src.shape[1]}")
    side = m if kind == "output" else alpha
    out = np.full((side, side, n), np.nan, np.float32 if real is float else np.float64)
    cdef real[:, :, ::1] dst = out
    if n == 0:
        return out
    grid.mh, grid.mw, grid.ah, grid.aw = m, m, alpha, alpha
    if kind == "input":
        transform_input(&src[0, 0, 0], alpha * n, n, 0, alpha, 0, alpha, &grid, &dst[0, 0, 0], n, n)
    elif kind == "output":
        transform_output(&src[0, 0, 0], n, &grid, &dst[0, 0, 0], m * n, n, m, m, n, NULL, 0)
    elif kind == "filter":
        transform_filter(&src[0, 0, 0], n, alpha, alpha, 3, &dst[0, 0, 0], n, n)
    else:
        transform_output_gradient(&src[0, 0, 0], m * n, n, m, m, &grid, &dst[0, 0, 0], n, n)
    return out

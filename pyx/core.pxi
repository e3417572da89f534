# One instruction-set build of kconv's kernels. Python reaches them through plans (plan.pxi: ConvPlan, and
# the kc_api table the TensorFlow op library calls); kconv.ops checks arguments first.
import numpy as np

include "tile.pxi"
include "scratch.pxi"
include "pack.pxi"
include "epilogue.pxi"
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


def transform_rows(const double[:, ::1] matrix, const real[:, ::1] src):
    """matrix @ src by the routine every Winograd transform runs on (for tests: it must equal numpy's)."""
    dtype = np.float32 if real is float else np.float64
    out = np.empty((matrix.shape[0], src.shape[1]), dtype)
    cdef real[:, ::1] dst = out
    if matrix.shape[1] != src.shape[0]:
        raise ValueError(f"matrix {matrix.shape} and src {src.shape} do not chain")
    if out.size and src.shape[0]:
        apply_rows(&matrix[0, 0], matrix.shape[0], matrix.shape[1], &src[0, 0], src.shape[1],
                   &dst[0, 0], dst.shape[1], src.shape[1])
    return out

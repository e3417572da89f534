# The Python-visible kernels of one instruction-set build. They trust their arguments: kconv.ops checks
# shapes, dtypes and padding and turns every layout and padding into the tap lists used here.
import numpy as np

include "tile.pxi"
include "pack.pxi"
include "epilogue.pxi"
include "igemm_conv.pxi"
include "filter_grad.pxi"
include "winograd.pxi"
include "winograd_filter_grad.pxi"
include "winograd_matrices.pxi"
include "plan.pxi"

ISA = KC_ISA.decode()


def tile_shape(dtype):
    """(MR, NR) of the micro-kernel tile for float32 or float64."""
    if np.dtype(dtype) == np.float32:
        return KC_MR_F32, KC_NR_F32
    return KC_MR_F64, KC_NR_F64


def conv_igemm(const real[:, :, :, ::1] src, const real[:, :, ::1] filters, real[:, :, :, ::1] dst,
               const Py_ssize_t[::1] tap_h, const Py_ssize_t[::1] tap_w, const Py_ssize_t[::1] tap_index,
               Py_ssize_t qh, Py_ssize_t qw, Py_ssize_t step_h, Py_ssize_t step_w,
               Py_ssize_t dst_h0, Py_ssize_t dst_w0, Py_ssize_t dstep_h, Py_ssize_t dstep_w,
               Py_ssize_t groups, bint input_gradient, int n_threads):
    """dst[pixel grid] = sum over taps and channels of src[shifted pixel] * filters[tap].

    filters is the (taps, C/groups, K) view of a TensorFlow filter. With input_gradient the filter is used
    transposed (reduction over K/groups, columns over C/groups), as the gradient with respect to the input
    needs; otherwise this is the forward convolution.
    """
    cdef Py_ssize_t ntaps = tap_h.shape[0]
    cdef Py_ssize_t cg = filters.shape[1], K = filters.shape[2], kg = K // groups
    cdef ConvGrid grid
    grid.N, grid.Hs, grid.Ws, grid.Cs = src.shape[0], src.shape[1], src.shape[2], src.shape[3]
    grid.Hd, grid.Wd, grid.Cd = dst.shape[1], dst.shape[2], dst.shape[3]
    grid.Qh, grid.Qw, grid.step_h, grid.step_w = qh, qw, step_h, step_w
    grid.dst_h0, grid.dst_w0, grid.dstep_h, grid.dstep_w = dst_h0, dst_w0, dstep_h, dstep_w
    grid.groups = groups
    if input_gradient:
        grid.cin, grid.cout = kg, cg
    else:
        grid.cin, grid.cout = cg, kg
    cdef real* typed_null = NULL
    cdef int NR = tile_cols(typed_null)
    cdef Py_ssize_t ncolp = (grid.cout + NR - 1) // NR
    dtype = np.float32 if real is float else np.float64
    cdef real[::1] panels = np.empty(max(groups * ncolp * ntaps * grid.cin * NR, 1), dtype)
    cdef real[::1] zeros = np.zeros(max(grid.cin, 1), dtype)
    cdef Py_ssize_t[::1] tap_off = np.asarray(tap_index, dtype=np.intp) * cg * K
    cdef Py_ssize_t s_red = 1 if input_gradient else K
    cdef Py_ssize_t s_col = K if input_gradient else 1
    cdef int status
    if dst.size == 0:
        return
    # an empty source (every tap in the padding) or filter reads only the zero row
    cdef const real* src_data = &src[0, 0, 0, 0] if src.size else &zeros[0]
    cdef const real* filter_data = &filters[0, 0, 0] if filters.size else &zeros[0]
    cdef const Py_ssize_t* off = &tap_off[0] if ntaps else NULL
    cdef const Py_ssize_t* th = &tap_h[0] if ntaps else NULL
    cdef const Py_ssize_t* tw = &tap_w[0] if ntaps else NULL
    with nogil:
        pack_filter_panels(filter_data, off, ntaps, groups, kg, grid.cin, s_red, grid.cout, s_col,
                           &panels[0], n_threads)
        status = igemm_conv(src_data, &dst[0, 0, 0, 0], grid, th, tw, ntaps, &panels[0], &zeros[0], NULL, n_threads)
    if status:
        raise MemoryError("kconv: cannot allocate the convolution's pointer tables")


def filter_grad_partial(const real[:, :, :, ::1] x, const real[:, :, :, ::1] dy, real[:, :, :, ::1] partial,
                        const Py_ssize_t[::1] tap_h, const Py_ssize_t[::1] tap_w,
                        Py_ssize_t step_h, Py_ssize_t step_w, Py_ssize_t groups, Py_ssize_t kcp,
                        int n_threads):
    """partial[s, g, k, t*cin + c] = sum over pixels of split s of dy[p, g*cout + k] * x[p at tap t, g*cin + c]."""
    cdef Py_ssize_t ntaps = tap_h.shape[0]
    cdef ConvGrid grid
    grid.N, grid.Hs, grid.Ws, grid.Cs = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    grid.Hd, grid.Wd, grid.Cd = dy.shape[1], dy.shape[2], dy.shape[3]
    grid.Qh, grid.Qw, grid.step_h, grid.step_w = dy.shape[1], dy.shape[2], step_h, step_w
    grid.dst_h0 = grid.dst_w0 = 0
    grid.dstep_h = grid.dstep_w = 1
    grid.groups = groups
    grid.cin, grid.cout = x.shape[3] // groups, dy.shape[3] // groups
    dtype = np.float32 if real is float else np.float64
    cdef real[::1] zeros = np.zeros(max(grid.cin, 1), dtype)
    cdef int status
    if partial.size == 0:
        return
    with nogil:
        status = filter_grad(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], &partial[0, 0, 0, 0], grid,
                             &tap_h[0], &tap_w[0], ntaps, partial.shape[0], kcp, &zeros[0], n_threads)
    if status:
        raise MemoryError("kconv: cannot allocate the filter gradient's scratch")


def fma_chains(long iters, int n_threads):
    """Runs independent vector FMA chains on n_threads threads; returns (flops done, a checksum)."""
    cdef int t
    cdef float sink = 0
    with nogil:
        for t in prange(n_threads, num_threads=n_threads, schedule='static'):
            sink += kc_fma_chains(iters)
    return float(iters) * KC_FMA_CHAIN_FLOPS * n_threads, sink


def winograd_filter_panels(const real[:, :, :, ::1] filters, const double[:, ::1] Gh, const double[:, ::1] Gw,
                           int n_threads, out_buffer=None):
    """The (kh, kw, C, K) filters transformed (U = G g G^T, alpha^2 x C x K) and packed into NR-wide panels,
    one set per xi: the B operands of the Winograd products. Written into out_buffer when it is large enough
    (reusing memory saves the page faults of a fresh buffer on every call)."""
    cdef Py_ssize_t kh = filters.shape[0], kw = filters.shape[1], C = filters.shape[2], K = filters.shape[3]
    cdef int ah = Gh.shape[0], aw = Gw.shape[0]
    cdef real* typed_null = NULL
    cdef int NR = tile_cols(typed_null)
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR
    dtype = np.float32 if real is float else np.float64
    size = max(ah * aw * ncolp * C * NR, 1)
    if out_buffer is None or out_buffer.shape[0] < size or out_buffer.dtype != dtype:
        out_buffer = np.empty(size, dtype)
    panels = out_buffer[:size]
    cdef real[::1] out = panels
    if C * K == 0:
        return panels
    cdef int status
    with nogil:
        status = filter_transform_panels(&filters[0, 0, 0, 0], kh, kw, C, K, &Gh[0, 0], &Gw[0, 0], ah, aw,
                                         &out[0], n_threads)
    if status:
        raise MemoryError("kconv: cannot allocate the Winograd filter transform's scratch")
    return panels


def winograd_forward(const real[:, :, :, ::1] x, const real[::1] panels, real[:, :, :, ::1] y,
                     Py_ssize_t pad_top, Py_ssize_t pad_left, int mh, int mw,
                     const double[:, ::1] BTh, const double[:, ::1] ATh,
                     const double[:, ::1] BTw, const double[:, ::1] ATw, Py_ssize_t block, int n_threads,
                     real[::1] staged_work=None):
    """y = x * filters, stride 1, from winograd_filter_panels' output; tiles of mh x mw outputs.

    Fused blocks of `block` tiles, or, given `staged_work` (alpha^2 x tiles x (C + K) values), three stages
    over all tiles. Returns False when y holds a NaN or infinity (Winograd spreads one over its tile:
    recompute directly)."""
    cdef WinoGrid grid
    grid.N, grid.H, grid.W, grid.C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    grid.Ho, grid.Wo, grid.K = y.shape[1], y.shape[2], y.shape[3]
    grid.pad_top, grid.pad_left = pad_top, pad_left
    grid.mh, grid.mw, grid.ah, grid.aw = mh, mw, BTh.shape[0], BTw.shape[0]
    grid.th, grid.tw = (grid.Ho + mh - 1) // mh, (grid.Wo + mw - 1) // mw
    cdef int status
    if y.size == 0:
        return True
    if x.size == 0 or grid.C == 0:
        y[...] = 0
        return True
    cdef real* work = NULL
    if staged_work is not None:
        if staged_work.shape[0] < grid.ah * grid.aw * grid.N * grid.th * grid.tw * (grid.C + grid.K):
            raise ValueError("staged_work is too small")
        work = &staged_work[0]
    with nogil:
        if work != NULL:
            status = winograd_conv_staged(&x[0, 0, 0, 0], &y[0, 0, 0, 0], grid, &BTh[0, 0], &BTw[0, 0],
                                          &ATh[0, 0], &ATw[0, 0], &panels[0], work, NULL, n_threads)
        else:
            status = winograd_conv(&x[0, 0, 0, 0], &y[0, 0, 0, 0], grid, &BTh[0, 0], &BTw[0, 0], &ATh[0, 0],
                                   &ATw[0, 0], &panels[0], block, NULL, n_threads)
    if status < 0:
        raise MemoryError("kconv: cannot allocate the Winograd scratch")
    return status == 0


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


def winograd_filter_gradient(const real[:, :, :, ::1] x, const real[:, :, :, ::1] dy, real[:, :, ::1] mgrad,
                             Py_ssize_t pad_top, Py_ssize_t pad_left, int mh, int mw,
                             const double[:, ::1] BTh, const double[:, ::1] BTw,
                             const double[:, ::1] Ah, const double[:, ::1] Aw, Py_ssize_t chunk, int n_threads):
    """mgrad (alpha^2, K, C) = sum over tiles of (A dY A^T) (B^T X B): the Winograd-domain filter gradient
    of a stride-1 convolution; dW = G^T mgrad G (the caller's last step)."""
    cdef WinoGrid grid
    grid.N, grid.H, grid.W, grid.C = x.shape[0], x.shape[1], x.shape[2], x.shape[3]
    grid.Ho, grid.Wo, grid.K = dy.shape[1], dy.shape[2], dy.shape[3]
    grid.pad_top, grid.pad_left = pad_top, pad_left
    grid.mh, grid.mw, grid.ah, grid.aw = mh, mw, BTh.shape[0], BTw.shape[0]
    grid.th, grid.tw = (grid.Ho + mh - 1) // mh, (grid.Wo + mw - 1) // mw
    cdef int status
    if mgrad.size == 0:
        return
    if dy.size == 0 or x.size == 0:
        mgrad[...] = 0
        return
    with nogil:
        status = winograd_filter_grad(&x[0, 0, 0, 0], &dy[0, 0, 0, 0], &mgrad[0, 0, 0], grid, &BTh[0, 0],
                                      &BTw[0, 0], &Ah[0, 0], &Aw[0, 0], chunk, n_threads)
    if status:
        raise MemoryError("kconv: cannot allocate the Winograd filter gradient's buffers")

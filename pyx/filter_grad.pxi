# Gradient with respect to the filter, as a GEMM over pixels.
#
#     dW^T[k, (t, c)] = sum over output pixels p of dY[p, k] * X[p at tap t, c]
#
# Rows are the output channels k of a group (A = dY^T, read in place: the micro-kernel steps through a
# row of A with a stride of dY's row length, so nothing is transposed), columns are (tap, input channel) pairs (B = panels of
# im2col: for each pixel, NR consecutive channels of one source pixel, a contiguous copy), and the
# reduction runs over pixels. The pixel range is cut into `nsplit` parts whose partial sums land in
# separate planes of `partial` (nsplit, groups, cout, ntaps * cin); the caller adds them in order.
# nsplit and the chunk length depend on the shape only, so results do not depend on the thread count.

cdef enum:
    COL_PANELS_PER_TASK = 16


cdef void pack_im2col_panels(const real* x, const ConvGrid* grid, const Py_ssize_t* tap_h,
                             const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t g, Py_ssize_t p0,
                             Py_ssize_t kc, Py_ssize_t jp0, Py_ssize_t jp1, const real* zeros,
                             real* b) noexcept nogil:
    """b[((j - jp0) * kc + pl) * NR + v] = X[pixel p0 + pl at tap t, channel c], column j*NR + v = t*cin + c.

    Columns run tap by tap, cin channels each: a pixel's columns are copied as runs of channels (a whole
    NR-wide panel from one tap when cin >= NR; several taps' runs per panel for small cin, e.g. RGB)."""
    cdef int NR = tile_cols(b)
    cdef Py_ssize_t plane = grid.Qh * grid.Qw, NC = ntaps * grid.cin
    cdef Py_ssize_t pl, p, n, rem, qh, qw, col, end, t, c, run, v, ih, iw, j
    cdef const real* pix
    cdef real* dst
    for pl in range(kc):
        p = p0 + pl
        n = p // plane
        rem = p - n * plane
        qh = rem // grid.Qw
        qw = rem - qh * grid.Qw
        col = jp0 * NR
        end = jp1 * NR if jp1 * NR < NC else NC
        t = col // grid.cin
        c = col - t * grid.cin
        while col < end:
            run = grid.cin - c               # the rest of this tap's channels, cut at the panel's edge
            if run > NR - col % NR:
                run = NR - col % NR
            if run > end - col:
                run = end - col
            ih = qh * grid.step_h + tap_h[t]
            iw = qw * grid.step_w + tap_w[t]
            if 0 <= ih < grid.Hs and 0 <= iw < grid.Ws:
                pix = x + ((n * grid.Hs + ih) * grid.Ws + iw) * grid.Cs + g * grid.cin + c
            else:
                pix = zeros
            j = col // NR
            dst = b + ((j - jp0) * kc + pl) * NR + (col - j * NR)
            if run == NR:                    # a whole panel from one tap: a fixed-size (vector) copy
                for v in range(NR):
                    dst[v] = pix[v]
            else:
                for v in range(run):
                    dst[v] = pix[v]
            col = col + run
            c = c + run
            if c == grid.cin:
                t = t + 1
                c = 0
        while col < jp1 * NR:                 # the last panel's columns past taps x cin
            j = col // NR
            b[((j - jp0) * kc + pl) * NR + (col - j * NR)] = 0
            col = col + 1


cdef int filter_grad(const real* x, const real* dy, real* partial, ConvGrid grid,
                     const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, Py_ssize_t ntaps,
                     Py_ssize_t nsplit, Py_ssize_t kcp, const real* zeros, int n_threads) noexcept nogil:
    """Fills partial (nsplit, groups, cout, ntaps*cin). Returns 0, or -1 when scratch cannot be allocated."""
    cdef int MR = tile_rows(partial)
    cdef int NR = tile_cols(partial)
    cdef Py_ssize_t P = grid.N * grid.Qh * grid.Qw
    cdef Py_ssize_t NC = ntaps * grid.cin
    cdef Py_ssize_t ncolp = (NC + NR - 1) // NR
    cdef Py_ssize_t nblocks = (ncolp + COL_PANELS_PER_TASK - 1) // COL_PANELS_PER_TASK
    cdef Py_ssize_t krows = ((grid.cout + MR - 1) // MR) * MR
    cdef Py_ssize_t per_thread = COL_PANELS_PER_TASK * NR * kcp
    cdef Py_ssize_t task, s, g, cb, pb0, pb1, jp0, jp1, p0, kc, j, kp, r, mr, nr, tid
    cdef real* scratch = <real*> malloc(n_threads * per_thread * sizeof(real))
    cdef const real** aptr_all = <const real**> malloc(n_threads * krows * sizeof(real*))
    cdef real** crow_all = <real**> malloc(n_threads * krows * sizeof(real*))
    cdef real* b
    cdef const real** aptr
    cdef real** crow
    if scratch == NULL or aptr_all == NULL or crow_all == NULL:
        free(scratch)
        free(aptr_all)
        free(crow_all)
        return -1
    with parallel(num_threads=n_threads):
        tid = threadid()
        b = scratch + tid * per_thread
        aptr = aptr_all + tid * krows
        crow = crow_all + tid * krows
        for task in prange(nsplit * grid.groups * nblocks, schedule='dynamic'):
            s = task // (grid.groups * nblocks)
            g = (task // nblocks) % grid.groups
            cb = task % nblocks
            pb0 = P * s // nsplit
            pb1 = P * (s + 1) // nsplit
            jp0 = cb * COL_PANELS_PER_TASK
            jp1 = jp0 + COL_PANELS_PER_TASK if jp0 + COL_PANELS_PER_TASK < ncolp else ncolp
            for r in range(krows):      # rows past cout repeat row 0; they are never stored
                crow[r] = partial + ((s * grid.groups + g) * grid.cout + (r if r < grid.cout else 0)) * NC
            p0 = pb0
            while p0 < pb1:
                kc = pb1 - p0 if pb1 - p0 < kcp else kcp
                for r in range(krows):  # row k of A = dY[p0:, g*cout + k], Cd apart
                    aptr[r] = dy + p0 * grid.Cd + g * grid.cout + (r if r < grid.cout else 0)
                pack_im2col_panels(x, &grid, tap_h, tap_w, ntaps, g, p0, kc, jp0, jp1, zeros, b)
                for j in range(jp0, jp1):
                    nr = NC - j * NR if NC - j * NR < NR else NR
                    for kp in range(krows // MR):
                        mr = grid.cout - kp * MR if grid.cout - kp * MR < MR else MR
                        igemm_tile_strided(1, <int> kc, &aptr[kp * MR], 0, grid.Cd, b + (j - jp0) * kc * NR, NR,
                                           &crow[kp * MR], j * NR, mr, nr, p0 > pb0)
                p0 = p0 + kc
    free(scratch)
    free(aptr_all)
    free(crow_all)
    return 0


# Few channels per tap (first layers, C = 1 or 3): the same gradient with the roles turned around,
#
#     dW[(t, c), k] = sum over pixels p of X[p at tap t, c] * dY[p, k]
#
# rows (tap, channel) and columns k, so the result is TensorFlow's (taps, C/groups, K/groups) layout as it
# is and dY's rows are the B panels almost as they are. The A operand is packed along pixels: one output
# row at a time, each (tap, channel) is a strided run of the input image (contiguous for stride 1, C = 1),
# instead of a handful of values gathered per pixel (pack_taps_by_pixels, igemm_conv.pxi).

cdef int filter_grad_small(const real* x, const real* dy, real* partial, ConvGrid grid,
                           const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, Py_ssize_t ntaps,
                           Py_ssize_t nsplit, Py_ssize_t kcp, int n_threads) noexcept nogil:
    """Fills partial (nsplit, groups, ntaps*cin, cout). Returns 0, or -1 when scratch cannot be allocated."""
    cdef int MR = tile_rows(partial)
    cdef int NR = tile_cols(partial)
    cdef Py_ssize_t P = grid.N * grid.Qh * grid.Qw, R = ntaps * grid.cin, K = grid.cout
    cdef Py_ssize_t rpan = (R + MR - 1) // MR, ncolp = (K + NR - 1) // NR
    cdef Py_ssize_t a_len = R * kcp, b_len = ncolp * kcp * NR, per_thread = a_len + b_len
    cdef Py_ssize_t task, s, g, pb0, pb1, p0, kc, j, rp, i, row, mr, nr, pl, v, tid
    cdef real* scratch = <real*> malloc(n_threads * per_thread * sizeof(real))
    cdef const real** aptr_all = <const real**> malloc(n_threads * MR * sizeof(real*))
    cdef real** crow_all = <real**> malloc(n_threads * MR * sizeof(real*))
    cdef real* a
    cdef real* b
    cdef real* bd
    cdef const real* drow
    cdef const real** aptr
    cdef real** crow
    if scratch == NULL or aptr_all == NULL or crow_all == NULL:
        free(scratch)
        free(aptr_all)
        free(crow_all)
        return -1
    with parallel(num_threads=n_threads):
        tid = threadid()
        a = scratch + tid * per_thread
        b = a + a_len
        aptr = aptr_all + tid * MR
        crow = crow_all + tid * MR
        for task in prange(nsplit * grid.groups, schedule='dynamic'):
            s = task // grid.groups
            g = task - s * grid.groups
            pb0 = P * s // nsplit
            pb1 = P * (s + 1) // nsplit
            p0 = pb0
            while p0 < pb1:
                kc = pb1 - p0 if pb1 - p0 < kcp else kcp
                pack_taps_by_pixels(x, &grid, tap_h, tap_w, ntaps, g, p0, kc, kcp, a)
                for j in range(ncolp):             # dY's rows, NR channels per panel (zero past cout)
                    nr = K - j * NR if K - j * NR < NR else NR
                    for pl in range(kc):
                        drow = dy + (p0 + pl) * grid.Cd + g * K + j * NR
                        bd = b + (j * kcp + pl) * NR
                        for v in range(nr):
                            bd[v] = drow[v]
                        for v in range(nr, NR):
                            bd[v] = 0
                for rp in range(rpan):
                    mr = R - rp * MR if R - rp * MR < MR else MR
                    for i in range(MR):            # rows past R repeat the panel's first row, never stored
                        row = rp * MR + (i if i < mr else 0)
                        aptr[i] = a + row * kcp
                        crow[i] = partial + ((s * grid.groups + g) * R + row) * K
                    for j in range(ncolp):
                        nr = K - j * NR if K - j * NR < NR else NR
                        igemm_tile(1, <int> kc, aptr, 0, b + j * kcp * NR, crow, j * NR, mr, nr, p0 > pb0)
                p0 = p0 + kc
    free(scratch)
    free(aptr_all)
    free(crow_all)
    return 0

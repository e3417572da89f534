# Gradient with respect to the filter by Winograd: the transpose of the forward algorithm.
#
#     y = A^T [ (G g) (.) (B^T d) ]    =>    dL/dg = G^T [ (A dy) (.) (B^T d) ]     (per tile, summed)
#
# For each xi: M[xi] (K x C) = sum over tiles of W[xi, tile, k] V[xi, tile, c], with V = B^T d B (the
# forward's input transform) and W = A dY A^T (a tile of the output gradient taken into the Winograd
# domain); the caller finishes with dW = G^T M G. Both stay in their natural [xi][tile][channel] layout:
# the micro-kernel reads A = W^T with a stride of K and B = V with a stride of C, so nothing is transposed. Tiles go in chunks whose size depends on the shape only:
# a chunk is transformed (in parallel over tiles), then multiplied into M (in parallel over xi and blocks
# of channels), so every element of M sums its tiles in one fixed order whatever the thread count.

cdef void output_gradient_tile_transform(const real* dy, const WinoGrid* grid, Py_ssize_t tile,
                                         const double* Ah, const double* Aw, real* patch, real* tmp,
                                         real* w, Py_ssize_t slot, Py_ssize_t chunk) noexcept nogil:
    """w[(xi * chunk + slot) * K + k] = (A dY A^T)[xi, k] for the mh x mw tile of dY under `tile`, zero
    past the edge of dY: the same [xi][tile][channel] layout as the input transform's."""
    cdef Py_ssize_t K = grid.K, plane = grid.th * grid.tw
    cdef Py_ssize_t n = tile // plane, rem = tile - n * plane
    cdef Py_ssize_t h0 = (rem // grid.tw) * grid.mh, w0 = (rem % grid.tw) * grid.mw
    cdef Py_ssize_t u, v, k, a
    cdef const real* src
    cdef real* dst
    if h0 + grid.mh <= grid.Ho and w0 + grid.mw <= grid.Wo:   # interior: dY rows read in place
        apply_rows(Ah, grid.ah, grid.mh, dy + ((n * grid.Ho + h0) * grid.Wo + w0) * K, grid.Wo * K,
                   tmp, grid.mw * K, grid.mw * K)
    else:
        for u in range(grid.mh):
            for v in range(grid.mw):
                dst = patch + (u * grid.mw + v) * K
                if h0 + u < grid.Ho and w0 + v < grid.Wo:
                    src = dy + ((n * grid.Ho + h0 + u) * grid.Wo + w0 + v) * K
                    for k in range(K):
                        dst[k] = src[k]
                else:
                    for k in range(K):
                        dst[k] = 0
        apply_rows(Ah, grid.ah, grid.mh, patch, grid.mw * K, tmp, grid.mw * K, grid.mw * K)
    for a in range(grid.ah):
        apply_rows(Aw, grid.aw, grid.mw, tmp + a * grid.mw * K, K,
                   w + (a * grid.aw * chunk + slot) * K, chunk * K, K)


cdef int winograd_filter_grad(const real* x, const real* dy, real* mgrad, WinoGrid grid,
                              const double* Ah, const double* Aw, Py_ssize_t chunk, int n_threads) noexcept nogil:
    """mgrad[xi][k][c] = sum over tiles of (A dY A^T)[xi, k] (B^T X B)[xi, c]. Returns 0, or -1 when the
    chunk buffers cannot be allocated."""
    cdef int MR = tile_rows(mgrad)
    cdef int NR = tile_cols(mgrad)
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw
    cdef Py_ssize_t T = grid.N * grid.th * grid.tw
    cdef Py_ssize_t ncolp = (C + NR - 1) // NR
    cdef Py_ssize_t ncb = (ncolp + COL_PANELS_PER_TASK - 1) // COL_PANELS_PER_TASK
    cdef Py_ssize_t krows = ((K + MR - 1) // MR) * MR
    cdef Py_ssize_t wide = C if C > K else K
    cdef Py_ssize_t per_thread = A2 * wide + A2 * wide
    cdef Py_ssize_t t0, tb, s, task, xi, jb, j, kp, r, mr, nr, tid
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    # v is read NR values at a time from any channel: NR spare values keep the last row's reads in bounds
    cdef real* v = <real*> scratch_alloc((A2 * chunk * C + NR) * sizeof(real))
    cdef real* w = <real*> scratch_alloc(A2 * K * chunk * sizeof(real))
    cdef real* scratch = <real*> scratch_alloc(n_threads * per_thread * sizeof(real))
    cdef const real** aptr_all = <const real**> malloc(n_threads * krows * sizeof(real*))
    cdef real** crow_all = <real**> malloc(n_threads * krows * sizeof(real*))
    cdef real* patch
    cdef real* tmp
    cdef const real** aptr
    cdef real** crow
    if v == NULL or w == NULL or scratch == NULL or aptr_all == NULL or crow_all == NULL:
        scratch_free(v)
        scratch_free(w)
        scratch_free(scratch)
        free(aptr_all)
        free(crow_all)
        return -1
    for r in range(A2 * chunk * C, A2 * chunk * C + NR):
        v[r] = 0
    t0 = 0
    while t0 < T:
        tb = T - t0 if T - t0 < chunk else chunk
        with parallel(num_threads=phase_threads(tb, tb * A2 * (C + K), n_threads)):   # both operands' tiles
            patch = scratch + threadid() * per_thread
            tmp = patch + A2 * wide
            for s in prange(tb, schedule='static'):
                input_tile_transform(x, &grid, t0 + s, v, s, chunk)
                output_gradient_tile_transform(dy, &grid, t0 + s, Ah, Aw, patch, tmp, w, s, chunk)
        next_t = 0
        with parallel(num_threads=n_threads):      # M[xi] (+)= W[xi]^T V[xi], by xi and channel block
            tid = threadid()
            aptr = aptr_all + tid * krows
            crow = crow_all + tid * krows
            while True:
                task = next_task(&next_t, A2 * ncb, tid, n_threads)
                if task >= A2 * ncb:
                    break
                xi = task // ncb
                jb = task - xi * ncb
                for r in range(krows):     # row k of A is column k of W[xi] (K apart); rows past K repeat row 0
                    aptr[r] = w + xi * chunk * K + (r if r < K else 0)
                    crow[r] = mgrad + (xi * K + (r if r < K else 0)) * C
                for j in range(jb * COL_PANELS_PER_TASK, min((jb + 1) * COL_PANELS_PER_TASK, ncolp)):
                    nr = C - j * NR if C - j * NR < NR else NR
                    for kp in range(krows // MR):
                        mr = K - kp * MR if K - kp * MR < MR else MR
                        igemm_tile_strided(1, <int> tb, &aptr[kp * MR], 0, K, v + xi * chunk * C + j * NR, C,
                                           &crow[kp * MR], j * NR, mr, nr, t0 > 0)
        t0 = t0 + tb
    scratch_free(v)
    scratch_free(w)
    scratch_free(scratch)
    free(aptr_all)
    free(crow_all)
    return 0

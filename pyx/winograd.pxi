# Winograd convolution F(m x m, 3 x 3) (and F(m, 3) for 1-D), stride 1, groups 1.
#
#     Y = A^T [ (G g G^T) (.) (B^T d B) ] A        per alpha x alpha input tile d, alpha = m + 2
#
# so the alpha^2 elementwise products over channels become alpha^2 independent GEMMs of
# [tiles x C] by [C x K] (Lavin & Gray 2016), run on the same micro-kernel as direct convolution.
# Each thread takes a block of tiles and does all three stages on it while it is in cache:
#     input transform -> alpha^2 products -> output transform.
# A 1-D convolution is the 2-D machine with a 1 x 1 identity transform along H.
#
# The transforms are matrices applied along one axis to vectors of channels (contiguous in NHWC), so
# every variant shares one small routine; the matrices come from kconv._winograd (exact Toom-Cook).

cdef struct WinoGrid:
    Py_ssize_t N, H, W, C           # input (NHWC)
    Py_ssize_t Ho, Wo, K            # output (NHWC)
    Py_ssize_t pad_top, pad_left
    int mh, mw, ah, aw              # output tile and input tile (alpha) per axis
    Py_ssize_t th, tw               # tiles per image along H and W


cdef inline void combine4(real* d, Py_ssize_t n, const real* k, const real* const* s, bint accumulate) noexcept nogil:
    """d[c] (+)= k0 s0[c] + k1 s1[c] + k2 s2[c] + k3 s3[c]: one pass over d for four source rows."""
    cdef Py_ssize_t c
    cdef real k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3]
    cdef const real* s0 = s[0]
    cdef const real* s1 = s[1]
    cdef const real* s2 = s[2]
    cdef const real* s3 = s[3]
    if accumulate:
        for c in range(n):
            d[c] += k0 * s0[c] + k1 * s1[c] + k2 * s2[c] + k3 * s3[c]
    else:
        for c in range(n):
            d[c] = k0 * s0[c] + k1 * s1[c] + k2 * s2[c] + k3 * s3[c]


cdef inline void apply_rows(const double* M, int rows, int cols, const real* src, Py_ssize_t s_src,
                            real* dst, Py_ssize_t s_dst, Py_ssize_t n) noexcept nogil:
    """dst[x*s_dst + c] = sum_j M[x, j] * src[j*s_src + c], c < n: a 1-D transform of n-vectors.

    The nonzero terms of a row are folded four at a time (the transforms are store-bound otherwise);
    a short group is padded with zero coefficients on its first row."""
    cdef int x, j, used, group
    cdef real k[4]
    cdef const real* s[4]
    for x in range(rows):
        used = 0
        group = 0
        for j in range(cols + 1):
            if j < cols and M[x * cols + j] != 0:
                k[used] = <real> M[x * cols + j]
                s[used] = src + j * s_src
                used += 1
            if used == 4 or (j == cols and (used > 0 or group == 0)):
                while used < 4:
                    k[used] = 0
                    s[used] = src
                    used += 1
                combine4(dst + x * s_dst, n, k, s, group > 0)
                group += 1
                used = 0


cdef int filter_transform_panels(const real* g, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t C, Py_ssize_t K,
                                 const double* Gh, const double* Gw, int ah, int aw, real* panels,
                                 int n_threads) noexcept nogil:
    """panels[xi][j][c][NR] = (G g G^T)[xi, c, j*NR + v] for the (kh, kw, C, K) filter g: the transform and
    the micro-kernel's packing in one pass. Returns 0, or -1 when its scratch cannot be allocated. One input channel at a time, in parallel: its K filters at every
    tap form long rows, so the transform's vector loops run over all K at once."""
    cdef int NR = tile_cols(panels)
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR, A2 = ah * aw
    cdef Py_ssize_t per_thread = (kh * kw + ah * kw + A2) * K
    cdef Py_ssize_t j, c, t, v, xi, col
    cdef real* scratch = <real*> scratch_alloc(n_threads * per_thread * sizeof(real))
    cdef real* taps
    cdef real* half
    cdef real* u
    cdef real* dst
    if scratch == NULL:
        return -1
    n_threads = phase_threads(C, C * per_thread, n_threads)
    with parallel(num_threads=n_threads):
        taps = scratch + threadid() * per_thread
        half = taps + kh * kw * K
        u = half + ah * kw * K
        for c in prange(C, schedule='static'):
            for t in range(kh * kw):
                for v in range(K):
                    taps[t * K + v] = g[(t * C + c) * K + v]
            apply_rows(Gh, ah, <int> kh, taps, kw * K, half, kw * K, kw * K)
            for t in range(ah):
                apply_rows(Gw, aw, <int> kw, half + t * kw * K, K, u + t * aw * K, K, K)
            for xi in range(A2):
                for j in range(ncolp):
                    dst = panels + (xi * ncolp * C + j * C + c) * NR
                    for v in range(NR):
                        col = j * NR + v
                        dst[v] = u[xi * K + col] if col < K else 0
    scratch_free(scratch)
    return 0


cdef void input_tile_transform(const real* x, const WinoGrid* grid, Py_ssize_t tile,
                               const double* BTh, const double* BTw, real* patch, real* tmp,
                               real* v, Py_ssize_t slot, Py_ssize_t block) noexcept nogil:
    """v[(a*aw + b) * block + slot, :] = (B^T d B)[a, b, :] for the input patch under `tile`."""
    cdef Py_ssize_t C = grid.C, plane = grid.th * grid.tw
    cdef Py_ssize_t n = tile // plane, rem = tile - n * plane
    cdef Py_ssize_t h0 = (rem // grid.tw) * grid.mh - grid.pad_top
    cdef Py_ssize_t w0 = (rem % grid.tw) * grid.mw - grid.pad_left
    cdef Py_ssize_t i, j, c, h, w
    cdef const real* src
    cdef real* dst
    if h0 >= 0 and w0 >= 0 and h0 + grid.ah <= grid.H and w0 + grid.aw <= grid.W:
        # interior tile: a patch row is aw*C contiguous values of the image, read in place
        apply_rows(BTh, grid.ah, grid.ah, x + ((n * grid.H + h0) * grid.W + w0) * C, grid.W * C,
                   tmp, grid.aw * C, grid.aw * C)
    else:
        for i in range(grid.ah):
            for j in range(grid.aw):
                h = h0 + i
                w = w0 + j
                dst = patch + (i * grid.aw + j) * C
                if 0 <= h < grid.H and 0 <= w < grid.W:
                    src = x + ((n * grid.H + h) * grid.W + w) * C
                    for c in range(C):
                        dst[c] = src[c]
                else:
                    for c in range(C):
                        dst[c] = 0
        apply_rows(BTh, grid.ah, grid.ah, patch, grid.aw * C, tmp, grid.aw * C, grid.aw * C)
    for i in range(grid.ah):
        apply_rows(BTw, grid.aw, grid.aw, tmp + i * grid.aw * C, C,
                   v + (i * grid.aw * block + slot) * C, block * C, C)


cdef inline int any_nonfinite(const real* v, Py_ssize_t n) noexcept nogil:
    """1 when v[0:n] holds a NaN or an infinity (x - x is NaN exactly then)."""
    cdef int bad = 0
    cdef Py_ssize_t c
    cdef real t
    for c in range(n):
        t = v[c] - v[c]
        bad |= t != t
    return bad


cdef int output_tile_transform(const real* mprod, const WinoGrid* grid, Py_ssize_t tile,
                                const double* ATh, const double* ATw, real* tmp, real* out,
                                real* y, Py_ssize_t slot, Py_ssize_t block) noexcept nogil:
    """y[tile] = A^T M A, M[a, b, :] = mprod[(a*aw + b) * block + slot, :]; edges cropped.

    Returns 1 when the tile holds a non-finite value: Winograd spreads one over its whole tile, so the
    caller recomputes such a call by direct convolution, which keeps it to the windows that read it."""
    cdef Py_ssize_t K = grid.K, plane = grid.th * grid.tw
    cdef Py_ssize_t n = tile // plane, rem = tile - n * plane
    cdef Py_ssize_t h0 = (rem // grid.tw) * grid.mh, w0 = (rem % grid.tw) * grid.mw
    cdef Py_ssize_t b, u, v, k
    cdef Py_ssize_t rows = grid.Ho - h0 if grid.Ho - h0 < grid.mh else grid.mh
    cdef Py_ssize_t cols = grid.Wo - w0 if grid.Wo - w0 < grid.mw else grid.mw
    cdef real* dst
    cdef const real* src
    cdef int bad = 0
    for b in range(grid.aw):
        apply_rows(ATh, grid.mh, grid.ah, mprod + (b * block + slot) * K, grid.aw * block * K,
                   tmp + b * K, grid.aw * K, K)
    for u in range(rows):
        dst = y + ((n * grid.Ho + h0 + u) * grid.Wo + w0) * K
        if cols == grid.mw:     # a whole tile row: mw*K contiguous values of y, written in place
            apply_rows(ATw, grid.mw, grid.aw, tmp + u * grid.aw * K, K, dst, K, K)
        else:
            apply_rows(ATw, grid.mw, grid.aw, tmp + u * grid.aw * K, K, out, K, K)
            for v in range(cols):
                src = out + v * K
                for k in range(K):
                    dst[v * K + k] = src[k]
        bad |= any_nonfinite(dst, cols * K)
    return bad


cdef void epilogue_tile(real* y, const WinoGrid* grid, Py_ssize_t tile, const Epilogue* ep) noexcept nogil:
    """Bias and activation on the outputs of one tile (its rows are cols*K contiguous values of y)."""
    cdef Py_ssize_t plane = grid.th * grid.tw
    cdef Py_ssize_t n = tile // plane, rem = tile - n * plane
    cdef Py_ssize_t h0 = (rem // grid.tw) * grid.mh, w0 = (rem % grid.tw) * grid.mw
    cdef Py_ssize_t rows = grid.Ho - h0 if grid.Ho - h0 < grid.mh else grid.mh
    cdef Py_ssize_t cols = grid.Wo - w0 if grid.Wo - w0 < grid.mw else grid.mw
    cdef Py_ssize_t u, v
    cdef real* dst
    for u in range(rows):
        dst = y + ((n * grid.Ho + h0 + u) * grid.Wo + w0) * grid.K
        for v in range(cols):
            apply_epilogue(dst + v * grid.K, grid.K, <const real*> ep.bias, ep)


cdef int winograd_conv(const real* x, real* y, WinoGrid grid, const double* BTh, const double* BTw,
                       const double* ATh, const double* ATw, const real* panels, Py_ssize_t block,
                       const Epilogue* ep, int n_threads) noexcept nogil:
    """y = x * filters (stride 1) with the filters already transformed and packed (`panels`, one set of
    NR-wide panels of U[xi] (C x K) per xi). Returns 0; 1 when y holds a non-finite value; -1 when scratch
    cannot be allocated."""
    cdef int MR = tile_rows(y)
    cdef int NR = tile_cols(y)
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw
    cdef Py_ssize_t tiles = grid.N * grid.th * grid.tw
    cdef Py_ssize_t nblocks = (tiles + block - 1) // block
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR
    cdef Py_ssize_t nchunks = product_chunks(C)
    cdef Py_ssize_t wide = C if C > K else K
    cdef Py_ssize_t per_thread = A2 * C + A2 * wide + A2 * block * C + A2 * block * K + grid.mw * K
    cdef Py_ssize_t task, t0, tb, slot, xi, q, c0, kc, j, p, i, row, mr, nr, npan, tid
    cdef int nonfinite_seen[1]
    cdef real* scratch
    n_threads = loop_threads(nblocks, SERIAL_PHASE_VALUES, n_threads)    # no idle helper woken for nothing
    scratch = <real*> scratch_alloc(n_threads * per_thread * sizeof(real))
    cdef const real** aptr_all = <const real**> malloc(n_threads * MR * sizeof(real*))
    cdef real** crow_all = <real**> malloc(n_threads * MR * sizeof(real*))
    cdef real* patch
    cdef real* tmp
    cdef real* v
    cdef real* mprod
    cdef real* out
    cdef const real** aptr
    cdef real** crow
    cdef const real* bq
    if scratch == NULL or aptr_all == NULL or crow_all == NULL:
        scratch_free(scratch)
        free(aptr_all)
        free(crow_all)
        return -1
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    nonfinite_seen[0] = 0
    with parallel(num_threads=n_threads):
        tid = threadid()
        patch = scratch + tid * per_thread
        tmp = patch + A2 * C
        v = tmp + A2 * wide
        mprod = v + A2 * block * C
        out = mprod + A2 * block * K
        aptr = aptr_all + tid * MR
        crow = crow_all + tid * MR
        while True:
            task = next_task(&next_t, nblocks, tid, n_threads)
            if task >= nblocks:
                break
            t0 = task * block
            tb = tiles - t0 if tiles - t0 < block else block
            npan = (tb + MR - 1) // MR
            for slot in range(tb):
                input_tile_transform(x, &grid, t0 + slot, BTh, BTw, patch, tmp, v, slot, block)
            for xi in range(A2):
                for q in range(nchunks):
                    c0 = chunk_start(q, nchunks, C)
                    kc = chunk_start(q + 1, nchunks, C) - c0
                    for j in range(ncolp):
                        nr = K - j * NR if K - j * NR < NR else NR
                        bq = panels + (xi * ncolp * C + j * C + c0) * NR
                        for p in range(npan):
                            mr = tb - p * MR if tb - p * MR < MR else MR
                            for i in range(MR):     # rows past the block's end repeat its first row
                                row = xi * block + p * MR + (i if i < mr else 0)
                                aptr[i] = v + row * C
                                crow[i] = mprod + row * K
                            igemm_tile(1, <int> kc, aptr, c0, bq, crow, j * NR, mr, nr, q > 0)
            for slot in range(tb):
                if output_tile_transform(mprod, &grid, t0 + slot, ATh, ATw, tmp, out, y, slot, block):
                    nonfinite_seen[0] = 1      # any thread may set it; none clears it
                if ep != NULL:
                    epilogue_tile(y, &grid, t0 + slot, ep)
    scratch_free(scratch)
    free(aptr_all)
    free(crow_all)
    return 1 if nonfinite_seen[0] else 0


cdef int winograd_conv_staged(const real* x, real* y, WinoGrid grid, const double* BTh, const double* BTw,
                              const double* ATh, const double* ATw, const real* panels, real* work,
                              const Epilogue* ep, int n_threads) noexcept nogil:
    """The same convolution in three stages over all tiles at once, for layers with few tiles and many
    channels: there the fused blocks would each stream all alpha^2 x C x K transformed filters, while here
    each xi's filters are read by one task. `work` holds alpha^2 x tiles x (C + K) values.
    Returns as winograd_conv."""
    cdef int MR = tile_rows(y)
    cdef int NR = tile_cols(y)
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw
    cdef Py_ssize_t T = grid.N * grid.th * grid.tw
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR
    cdef Py_ssize_t ncb = (ncolp + COL_PANELS_PER_TASK - 1) // COL_PANELS_PER_TASK
    cdef Py_ssize_t nchunks = product_chunks(C)
    cdef Py_ssize_t wide = C if C > K else K
    cdef Py_ssize_t per_thread = A2 * C + A2 * wide + grid.mw * K
    cdef Py_ssize_t npan = (T + MR - 1) // MR
    cdef Py_ssize_t t, task, xi, jb, q, c0, kc, j, p, i, row, mr, nr, tid
    cdef int nonfinite = 0
    cdef real* v = work
    cdef real* mprod = work + A2 * T * C
    cdef real* scratch = <real*> scratch_alloc(n_threads * per_thread * sizeof(real))
    cdef const real** aptr_all = <const real**> malloc(n_threads * MR * sizeof(real*))
    cdef real** crow_all = <real**> malloc(n_threads * MR * sizeof(real*))
    cdef real* patch
    cdef real* tmp
    cdef real* out
    cdef const real** aptr
    cdef real** crow
    cdef const real* bq
    if scratch == NULL or aptr_all == NULL or crow_all == NULL:
        scratch_free(scratch)
        free(aptr_all)
        free(crow_all)
        return -1
    with parallel(num_threads=phase_threads(T, T * A2 * C, n_threads)):   # stage 1: every tile's input transform
        patch = scratch + threadid() * per_thread
        tmp = patch + A2 * C
        for t in prange(T, schedule='static'):
            input_tile_transform(x, &grid, t, BTh, BTw, patch, tmp, v, t, T)
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    with parallel(num_threads=n_threads):          # stage 2: the alpha^2 products, by column block
        tid = threadid()
        aptr = aptr_all + tid * MR
        crow = crow_all + tid * MR
        while True:
            task = next_task(&next_t, A2 * ncb, tid, n_threads)
            if task >= A2 * ncb:
                break
            xi = task // ncb
            jb = task - xi * ncb
            for q in range(nchunks):
                c0 = chunk_start(q, nchunks, C)
                kc = chunk_start(q + 1, nchunks, C) - c0
                for j in range(jb * COL_PANELS_PER_TASK, min((jb + 1) * COL_PANELS_PER_TASK, ncolp)):
                    nr = K - j * NR if K - j * NR < NR else NR
                    bq = panels + (xi * ncolp * C + j * C + c0) * NR
                    for p in range(npan):
                        mr = T - p * MR if T - p * MR < MR else MR
                        for i in range(MR):
                            row = xi * T + p * MR + (i if i < mr else 0)
                            aptr[i] = v + row * C
                            crow[i] = mprod + row * K
                        igemm_tile(1, <int> kc, aptr, c0, bq, crow, j * NR, mr, nr, q > 0)
    with parallel(num_threads=phase_threads(T, T * A2 * K, n_threads)):   # stage 3: every tile's output transform
        tid = threadid()
        tmp = scratch + tid * per_thread + A2 * C
        out = tmp + A2 * wide
        for t in prange(T, schedule='static'):
            nonfinite |= output_tile_transform(mprod, &grid, t, ATh, ATw, tmp, out, y, t, T)
            if ep != NULL:
                epilogue_tile(y, &grid, t, ep)
    scratch_free(scratch)
    free(aptr_all)
    free(crow_all)
    return 1 if nonfinite else 0

# Gradient with respect to the filter, as a GEMM over output pixels.
#
#     dW[(t, c), k] = sum over output pixels p of X[p at tap t, c] * dY[p, k]
#
# Rows are the (tap, input channel) pairs of a group, in TensorFlow's filter order, so the result needs no
# transpose; columns are its output channels; the reduction runs over output pixels. No im2col buffer:
#
#   A  row (t, c) reads channel c along an output row at tap t: one pointer per output row, stride x channels
#      apart, in a small copy of the window of X that one chunk of pixels reads (this task's channels only,
#      zeros where the window leaves the image). The copy is cache-hot and makes padding free of branches.
#   B  dY's rows for the chunk, read in place (NR channels per panel, aligned or not) when every panel the
#      tile runs is whole (100 filters: 3 whole panels, the last 4 on the transposed tail), else packed per
#      chunk (a partial panel the tile must run).
#
# The micro-kernel's tap loop walks the chunk's output rows (a chunk is whole rows of one image, or a piece of
# one long row, so its dY is one contiguous run). Chunks are cut from the shape; split s owns a fixed run of
# them and its partial sums land in plane s of `partial` (nsplit, groups, taps * cin, cout), which the
# caller adds in order; so results do not depend on the thread count. Tasks are (split, group, block of input
# channels): blocks cost little (each reads only its channels of X) and keep a block's sums in L2; splits
# cost a plane of partial sums each (plan.pxi: choose_splits).
#
# Measured against the two kernels it replaced (im2col panels with rows = filters; taps packed along pixels
# for C < 16), plan-level on a 2-core AVX-512 Xeon: 1.3-2x on first layers, C = K = 16, 7x7/2 stems and the
# late 7x7 / 14x14 layers at batch 1-2; 0.9-1.1x on the rest; about 0.9x on 100-filter text layers (their
# partial last panel), which the transposed tail below (grad_tail) took 14-21 % further on one core.

cdef struct PixelChunks:
    Py_ssize_t per_chunk         # whole output rows per chunk (when segs == 1)
    Py_ssize_t segs              # pieces each output row is cut into (per_chunk == 1 when segs > 1)
    Py_ssize_t per_image         # chunks per image
    Py_ssize_t count             # chunks in all


cdef struct PixelChunk:
    Py_ssize_t n, qh0, nr, w0, w1   # image n, output rows qh0 .. qh0 + nr, columns w0 .. w1 of each


cdef inline PixelChunks pixel_chunks(Py_ssize_t N, Py_ssize_t Qh, Py_ssize_t Qw, Py_ssize_t target) noexcept nogil:
    """Cuts each image's Qh x Qw output pixels into chunks of about `target` pixels, each one contiguous run
    of dY: whole rows, or equal pieces of one row when a row is longer than the target."""
    cdef PixelChunks ch
    if Qw >= target:
        ch.per_chunk, ch.segs = 1, (Qw + target - 1) // target
        ch.per_image = Qh * ch.segs
    else:
        ch.per_chunk, ch.segs = target // Qw, 1
        ch.per_image = (Qh + ch.per_chunk - 1) // ch.per_chunk
    ch.count = N * ch.per_image
    return ch


cdef inline PixelChunk chunk_at(const PixelChunks* ch, Py_ssize_t i, Py_ssize_t Qh, Py_ssize_t Qw) noexcept nogil:
    """Chunk i. (Returned by value: a prange body must assign its variables to keep them private.)"""
    cdef PixelChunk c
    cdef Py_ssize_t j, seg
    c.n = i // ch.per_image
    j = i - c.n * ch.per_image
    if ch.segs > 1:
        c.qh0 = j // ch.segs
        seg = j - c.qh0 * ch.segs
        c.nr = 1
        c.w0 = seg * Qw // ch.segs
        c.w1 = (seg + 1) * Qw // ch.segs
    else:
        c.qh0 = j * ch.per_chunk
        c.nr = Qh - c.qh0 if Qh - c.qh0 < ch.per_chunk else ch.per_chunk
        c.w0 = 0
        c.w1 = Qw
    return c


cdef void copy_sparse_window(const real* x, const ConvGrid* grid, Py_ssize_t n, Py_ssize_t ch0, Py_ssize_t nb,
                             Py_ssize_t ih0, Py_ssize_t lh, Py_ssize_t span_h, Py_ssize_t jump_h,
                             Py_ssize_t iw0, Py_ssize_t lw, Py_ssize_t span_w, Py_ssize_t jump_w,
                             Py_ssize_t ldw, real* win) noexcept nogil:
    """copy_window for a kernel narrower than its stride (a 1x1 stride-2 shortcut): only the pixels its taps
    read. Window row r is image row ih0 + (r // span_h) * jump_h + r % span_h (r < lh), column w likewise
    (span 1, jump 1 along an axis the kernel covers: every row); the rows and columns between are never
    read, and copying them had the copy move 4x the data."""
    cdef Py_ssize_t r, w, ih, iw
    cdef real* dst
    for r in range(lh):
        ih = ih0 + (r // span_h) * jump_h + r % span_h
        dst = win + r * ldw * nb
        if ih < 0 or ih >= grid.Hs:
            memset(dst, 0, lw * nb * sizeof(real))
            continue
        for w in range(lw):
            iw = iw0 + (w // span_w) * jump_w + w % span_w
            if iw < 0 or iw >= grid.Ws:
                memset(dst + w * nb, 0, nb * sizeof(real))
            else:
                memcpy(dst + w * nb, x + ((n * grid.Hs + ih) * grid.Ws + iw) * grid.Cs + ch0, nb * sizeof(real))


cdef void copy_window(const real* x, const ConvGrid* grid, Py_ssize_t n, Py_ssize_t ch0, Py_ssize_t nb,
                      Py_ssize_t ih0, Py_ssize_t lh, Py_ssize_t iw0, Py_ssize_t lw, Py_ssize_t ldw,
                      real* win) noexcept nogil:
    """win[r, w, c] = X[n, ih0 + r, iw0 + w, ch0 + c] (r < lh, w < lw, c < nb), zero outside the image;
    rows of win are ldw pixels apart."""
    cdef Py_ssize_t r, w, c, ih, iw, lo, hi
    cdef const real* src
    cdef real* dst
    lo = -iw0 if iw0 < 0 else 0                     # columns inside the image: lo .. hi
    hi = grid.Ws - iw0 if grid.Ws - iw0 < lw else lw
    hi = lo if hi < lo else hi
    for r in range(lh):
        ih = ih0 + r
        dst = win + r * ldw * nb
        if ih < 0 or ih >= grid.Hs:
            memset(dst, 0, lw * nb * sizeof(real))
            continue
        memset(dst, 0, lo * nb * sizeof(real))
        src = x + ((n * grid.Hs + ih) * grid.Ws + iw0 + lo) * grid.Cs + ch0
        if nb == grid.Cs:
            memcpy(dst + lo * nb, src, (hi - lo) * nb * sizeof(real))
        else:
            for w in range(lo, hi):
                for c in range(nb):
                    dst[w * nb + c] = src[c]
                src = src + grid.Cs
        memset(dst + hi * nb, 0, (lw - hi) * nb * sizeof(real))


cdef int filter_grad(const real* x, const real* dy, real* partial, ConvGrid grid,
                          const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, Py_ssize_t ntaps,
                          Py_ssize_t nsplit, Py_ssize_t chunk_pixels, Py_ssize_t cblock,
                          int n_threads) noexcept nogil:
    """Fills partial (nsplit, groups, ntaps*cin, cout). Tasks are (split, group, block of cblock input
    channels). Returns 0, or -1 when scratch cannot be allocated."""
    cdef bint narrow = grid.cout <= tile_cols(partial) // 2
    cdef int MR = shape_rows(partial, narrow)
    cdef int NR = shape_cols(partial, narrow)
    cdef Py_ssize_t K = grid.cout, R = ntaps * grid.cin
    cdef PixelChunks ch = pixel_chunks(grid.N, grid.Qh, grid.Qw, chunk_pixels)
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR
    cdef Py_ssize_t nblocks = (grid.cin + cblock - 1) // cblock
    cdef Py_ssize_t max_pix = ch.per_chunk * grid.Qw if ch.segs == 1 else (grid.Qw + ch.segs - 1) // ch.segs
    cdef Py_ssize_t th_min = tap_h[0], th_max = tap_h[0], tw_min = tap_w[0], tw_max = tap_w[0]
    cdef Py_ssize_t t, win_h, win_w, b_len, per_thread, ncol
    cdef bint packed, chan
    cdef const real* bp
    cdef Py_ssize_t ldb
    for t in range(ntaps):
        th_min = tap_h[t] if tap_h[t] < th_min else th_min
        th_max = tap_h[t] if tap_h[t] > th_max else th_max
        tw_min = tap_w[t] if tap_w[t] < tw_min else tw_min
        tw_max = tap_w[t] if tap_w[t] > tw_max else tw_max
    # the input window one chunk reads: its rows and (widest) columns, for every tap
    # a kernel narrower than its stride reads rows (columns) with gaps between: the window keeps only those,
    # span_h (span_w) for each output row (column), else step_h (step_w), the window then a whole block of X
    cdef Py_ssize_t span_h = th_max - th_min + 1, span_w = tw_max - tw_min + 1
    cdef bint sparse = span_h < grid.step_h or span_w < grid.step_w
    cdef Py_ssize_t wstep_h = span_h if span_h < grid.step_h else grid.step_h
    cdef Py_ssize_t wstep_w = span_w if span_w < grid.step_w else grid.step_w
    win_h = (ch.per_chunk - 1) * wstep_h + span_h
    win_w = ((grid.Qw if ch.segs == 1 else max_pix) - 1) * wstep_w + span_w
    # a last panel of at most TAIL_COLS filters runs transposed (grad_tail) where blocks keep whole vectors
    cdef Py_ssize_t lanes = KC_VEC_BYTES // sizeof(real), last_cols = K - (ncolp - 1) * NR
    cdef bint tail = real is float and not narrow and last_cols <= TAIL_COLS
    # dY is read in place when every panel the tile runs is whole (a partial last one going to the tail in
    # every task), else packed per chunk
    packed = not (K % NR == 0 or (tail and grid.cin % lanes == 0 and cblock % lanes == 0))
    cdef bint use_tail                                          # this task's blocks keep whole vectors
    cdef Py_ssize_t ncolm                                       # the panels the GEMM tile runs for this task
    cdef Py_ssize_t tail_len = TAIL_COLS * ntaps * cblock if tail else 0
    b_len = ncolp * max_pix * NR if packed else 0
    per_thread = thread_stride(b_len + win_h * win_w * cblock + tail_len, sizeof(real))
    cdef Py_ssize_t task, s, g, c0, nb, brows, ci, ci0, kc, npix, pix0, j, pl, v
    cdef Py_ssize_t q0, q, i, c, rr, mr, tid, lda, r
    cdef PixelChunk cur
    cdef const real* src
    cdef real* dst
    n_threads = loop_threads(nsplit * grid.groups * nblocks, SERIAL_PHASE_VALUES, n_threads)   # no helper without a task
    cdef real* scratch = <real*> scratch_alloc(n_threads * per_thread * sizeof(real))
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, ch.per_chunk * MR, sizeof(real*))
    cdef real** crow_all = <real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef Py_ssize_t* off_all = <Py_ssize_t*> thread_arrays(n_threads, MR, sizeof(Py_ssize_t))
    cdef real* b
    cdef real* win
    cdef real* tl
    cdef const real** aptr
    cdef real** crow
    cdef Py_ssize_t* tapoff
    if scratch == NULL or aptr_all == NULL or crow_all == NULL or off_all == NULL:
        scratch_free(scratch)
        free(aptr_all)
        free(crow_all)
        free(off_all)
        return -1
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    with parallel(num_threads=n_threads):
        tid = threadid()
        b = scratch + tid * per_thread
        win = b + b_len
        tl = win + win_h * win_w * cblock
        aptr = aptr_all + tid * thread_stride(ch.per_chunk * MR, sizeof(real*))
        crow = crow_all + tid * thread_stride(MR, sizeof(real*))
        tapoff = off_all + tid * thread_stride(MR, sizeof(Py_ssize_t))
        while True:
            task = next_task(&next_t, nsplit * grid.groups * nblocks, tid, n_threads)
            if task >= nsplit * grid.groups * nblocks:
                break
            s = task // (grid.groups * nblocks)
            g = (task // nblocks) % grid.groups
            c0 = (task % nblocks) * cblock
            nb = grid.cin - c0 if grid.cin - c0 < cblock else cblock
            brows = ntaps * nb
            lda = wstep_w * nb
            ci0 = ch.count * s // nsplit
            use_tail = tail and nb % lanes == 0
            ncolm = ncolp - 1 if use_tail else ncolp
            if use_tail:
                memset(tl, 0, TAIL_COLS * brows * sizeof(real))
            for ci in range(ci0, ch.count * (s + 1) // nsplit):
                cur = chunk_at(&ch, ci, grid.Qh, grid.Qw)
                kc = cur.w1 - cur.w0
                npix = cur.nr * kc
                pix0 = (cur.n * grid.Qh + cur.qh0) * grid.Qw + cur.w0
                # A's source: the chunk's input window, this block's channels, zeros where it leaves the image
                if sparse:
                    copy_sparse_window(x, &grid, cur.n, g * grid.cin + c0, nb, cur.qh0 * grid.step_h + th_min,
                                       (cur.nr - 1) * wstep_h + span_h, span_h if span_h < grid.step_h else 1,
                                       grid.step_h if span_h < grid.step_h else 1, cur.w0 * grid.step_w + tw_min,
                                       (kc - 1) * wstep_w + span_w, span_w if span_w < grid.step_w else 1,
                                       grid.step_w if span_w < grid.step_w else 1, win_w, win)
                else:
                    copy_window(x, &grid, cur.n, g * grid.cin + c0, nb, cur.qh0 * grid.step_h + th_min,
                                (cur.nr - 1) * grid.step_h + span_h, cur.w0 * grid.step_w + tw_min,
                                (kc - 1) * grid.step_w + span_w, win_w, win)
                if packed:                      # B: the chunk's dY rows, NR channels per panel (zeros past cout)
                    for j in range(ncolm):
                        ncol = K - j * NR if K - j * NR < NR else NR
                        for pl in range(npix):
                            src = dy + (pix0 + pl) * grid.Cd + g * K + j * NR
                            dst = b + (j * npix + pl) * NR
                            for v in range(ncol):
                                dst[v] = src[v]
                            for v in range(ncol, NR):
                                dst[v] = 0
                q0 = 0
                while q0 < brows:               # A: MR (tap, channel) rows, one pointer per output row each
                    mr = brows - q0 if brows - q0 < MR else MR
                    for i in range(MR):         # rows past brows repeat the panel's first row, never stored
                        q = q0 + (i if i < mr else 0)
                        t = q // nb
                        c = q - t * nb
                        crow[i] = partial + ((s * grid.groups + g) * R + t * grid.cin + c0 + c) * K
                        tapoff[i] = ((tap_h[t] - th_min) * win_w + tap_w[t] - tw_min) * nb + c
                    for rr in range(cur.nr):
                        for i in range(MR):
                            aptr[rr * MR + i] = win + (rr * wstep_h * win_w * nb + tapoff[i])
                    # MR channels of one tap: row i is row 0 + i, one pointer per output row (the channels tile)
                    chan = real is float and mr == MR and q0 // nb == (q0 + MR - 1) // nb
                    for j in range(ncolm):
                        ncol = K - j * NR if K - j * NR < NR else NR
                        bp = b + j * npix * NR if packed else dy + pix0 * grid.Cd + g * K + j * NR
                        ldb = NR if packed else grid.Cd    # dY in place: its rows hold whole, aligned panels
                        if chan and (narrow or 2 * ncol > NR):     # (the half tile does a 4-column panel)
                            igemm_tile_channels(<int> cur.nr, <int> kc, aptr, 0, lda, bp, ldb, crow, j * NR,
                                                <int> mr, <int> ncol if packed else NR, ci > ci0, narrow)
                        else:
                            igemm_tile_final(<int> cur.nr, <int> kc, aptr, 0, lda, bp, ldb, crow, j * NR,
                                             <int> mr, <int> ncol if packed else NR, ci > ci0, NULL, 0, narrow)
                    q0 = q0 + MR
                if use_tail:                    # the last panel's few filters: tl[r][t * nb + c], dY in place
                    for t in range(ntaps):
                        for r in range(0, last_cols, 4):
                            grad_tail(<int> cur.nr, <int> kc, <int> (last_cols - r if last_cols - r < 4 else 4),
                                      dy + pix0 * grid.Cd + g * K + (ncolp - 1) * NR + r, grid.Qw * grid.Cd,
                                      grid.Cd, win + ((tap_h[t] - th_min) * win_w + tap_w[t] - tw_min) * nb,
                                      wstep_h * win_w * nb, lda, <int> (nb // lanes), tl + r * brows + t * nb,
                                      brows)
            if use_tail:
                for r in range(last_cols):
                    for q in range(brows):
                        t = q // nb
                        partial[((s * grid.groups + g) * R + t * grid.cin + c0 + q - t * nb) * K
                                + (ncolp - 1) * NR + r] = tl[r * brows + q]
    scratch_free(scratch)
    free(aptr_all)
    free(crow_all)
    free(off_all)
    return 0

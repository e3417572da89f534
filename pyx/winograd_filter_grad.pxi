# Gradient with respect to the filter by Winograd: the transpose of the forward algorithm.
#
#     y = A^T [ (G g) (.) (B^T d) ]    =>    dL/dg = G^T [ (A dy) (.) (B^T d) ]     (per tile, summed)
#
# For each xi: M[xi] (K x C) = sum over tiles of W[xi, tile, k] V[xi, tile, c], with V = B^T d B (the
# forward's input transform) and W = A dY A^T (a tile of the output gradient taken into the Winograd
# domain); the caller finishes with dW = G^T M G. Both stay in their natural [xi][tile][channel] layout:
# the micro-kernel reads A = W^T with a stride of K and B = V with a stride of C, so nothing is transposed.
# Tiles go in chunks whose size depends on the shape only: a chunk is transformed (in parallel over tiles),
# then multiplied into M (in parallel over xi and blocks of channels), so every element of M sums its tiles
# in one fixed order whatever the thread count.
#
# M is summed in float64 over runs of WINOGRAD_GRAD_SUM_TILES tiles summed in registers: the long float32
# sum over every tile of the batch, not the transforms, is what made F(4x4)'s filter gradient inaccurate
# (1.6e-5 of max|dW| on 8x56x56x32 -> 32; 2.2e-6 with float32 transforms summed in float64, 3.8e-6 in runs
# of 64, 7.5e-6 in runs of 256: a numpy emulation).

cdef enum:
    WINOGRAD_GRAD_SUM_TILES = 64
    WINOGRAD_GRAD_TRANSFORM_TILES = 16      # tiles of both operands one transform task takes

cdef inline void transform_output_gradient(const real* src, Py_ssize_t rs, Py_ssize_t cs, int rows, int cols,
                                           const WinoGrid* grid, real* dst, Py_ssize_t ds,
                                           Py_ssize_t n) noexcept nogil:
    """A dY A^T of the m x m tile of dY at src (rows rs apart, pixels cs apart; rows x cols of it inside dY,
    zeros past its edge) into dst (values ds apart), n channels: microkernel.h, kc_wino_dy*."""
    if real is float:
        if grid.ah == 1:
            if grid.aw == 4:
                kc_wino_dy1_f32_a4(src, cs, cols, dst, ds, n)
            elif grid.aw == 6:
                if grid.mw == 3:
                    kc_wino_dy1_f32_a6_m3(src, cs, cols, dst, ds, n)
                elif grid.mw == 2:
                    kc_wino_dy1_f32_a6_m2(src, cs, cols, dst, ds, n)
                else:
                    kc_wino_dy1_f32_a6(src, cs, cols, dst, ds, n)
            elif grid.mw == 5:
                kc_wino_dy1_f32_a8_m5(src, cs, cols, dst, ds, n)
            elif grid.mw == 4:
                kc_wino_dy1_f32_a8_m4(src, cs, cols, dst, ds, n)
            elif grid.mw == 3:
                kc_wino_dy1_f32_a8_m3(src, cs, cols, dst, ds, n)
            elif grid.mw == 2:
                kc_wino_dy1_f32_a8_m2(src, cs, cols, dst, ds, n)
            else:
                kc_wino_dy1_f32_a8(src, cs, cols, dst, ds, n)
        elif grid.aw == 4:
            kc_wino_dy_f32_a4(src, rs, cs, rows, cols, dst, ds, n)
        elif grid.aw == 6:
            if grid.mw == 2:
                kc_wino_dy_f32_a6_m2(src, rs, cs, rows, cols, dst, ds, n)
            else:
                kc_wino_dy_f32_a6(src, rs, cs, rows, cols, dst, ds, n)
        elif grid.mw == 4:
            kc_wino_dy_f32_a8_m4(src, rs, cs, rows, cols, dst, ds, n)
        else:
            kc_wino_dy_f32_a8(src, rs, cs, rows, cols, dst, ds, n)
    else:
        if grid.ah == 1:
            if grid.aw == 4:
                kc_wino_dy1_f64_a4(src, cs, cols, dst, ds, n)
            elif grid.aw == 6:
                if grid.mw == 3:
                    kc_wino_dy1_f64_a6_m3(src, cs, cols, dst, ds, n)
                elif grid.mw == 2:
                    kc_wino_dy1_f64_a6_m2(src, cs, cols, dst, ds, n)
                else:
                    kc_wino_dy1_f64_a6(src, cs, cols, dst, ds, n)
            elif grid.mw == 5:
                kc_wino_dy1_f64_a8_m5(src, cs, cols, dst, ds, n)
            elif grid.mw == 4:
                kc_wino_dy1_f64_a8_m4(src, cs, cols, dst, ds, n)
            elif grid.mw == 3:
                kc_wino_dy1_f64_a8_m3(src, cs, cols, dst, ds, n)
            elif grid.mw == 2:
                kc_wino_dy1_f64_a8_m2(src, cs, cols, dst, ds, n)
            else:
                kc_wino_dy1_f64_a8(src, cs, cols, dst, ds, n)
        elif grid.aw == 4:
            kc_wino_dy_f64_a4(src, rs, cs, rows, cols, dst, ds, n)
        elif grid.aw == 6:
            if grid.mw == 2:
                kc_wino_dy_f64_a6_m2(src, rs, cs, rows, cols, dst, ds, n)
            else:
                kc_wino_dy_f64_a6(src, rs, cs, rows, cols, dst, ds, n)
        elif grid.mw == 4:
            kc_wino_dy_f64_a8_m4(src, rs, cs, rows, cols, dst, ds, n)
        else:
            kc_wino_dy_f64_a8(src, rs, cs, rows, cols, dst, ds, n)


cdef void output_gradient_tile_transform(const real* dy, const WinoGrid* grid, Py_ssize_t tile, real* w,
                                         Py_ssize_t slot, Py_ssize_t plane) noexcept nogil:
    """w[xi * plane + slot * K + k] = (A dY A^T)[xi, k] for the mh x mw tile of dY under `tile`, zero
    past the edge of dY: the same [xi][tile][channel] layout as the input transform's."""
    cdef Py_ssize_t K = grid.K, h0, w0
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    cdef int rows = <int> (grid.mh if h0 + grid.mh <= grid.Ho else grid.Ho - h0)
    cdef int cols = outputs_across(grid, w0)     # 0 (all zeros) for an empty column of a dilated row
    transform_output_gradient(dy + ((n * grid.Ho + h0) * grid.Wo + (w0 if cols else 0)) * K, grid.Wo * K,
                              grid.dw * K, rows, cols, grid, w + slot * K, plane, K)


cdef inline void prefetch_rows(const real* base, Py_ssize_t rows, Py_ssize_t rs, Py_ssize_t values) noexcept nogil:
    cdef Py_ssize_t r
    for r in range(rows):
        kc_prefetch_l2(base + r * rs, values * sizeof(real))


cdef void prefetch_tile_operands(const real* x, const real* dy, const WinoGrid* grid,
                                 Py_ssize_t tile) noexcept nogil:
    """Asks for the input patch and the dY tile under `tile` ahead of their transforms. The filter gradient
    reads x long after the forward wrote it: from memory, where the transforms' own loads, a row at a time,
    left the core waiting (3x3 32x28x28x32 on one thread: 1.08 ms on inputs in cache, 1.94 on inputs that
    are not; a graph step rotates its inputs)."""
    cdef Py_ssize_t h0, w0, r0, r1, c0, c1
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    r1 = grid.mh if h0 + grid.mh <= grid.Ho else grid.Ho - h0
    c1 = w0 + (grid.mw - 1) * grid.dw + 1
    c1 = grid.Wo if c1 > grid.Wo else c1
    if r1 > 0 and c1 > w0:
        prefetch_rows(dy + ((n * grid.Ho + h0) * grid.Wo + w0) * grid.K, r1, grid.Wo * grid.K, (c1 - w0) * grid.K)
    h0 -= grid.pad_top
    w0 -= grid.pad_left
    r0 = 0 if h0 >= 0 else -h0
    r1 = grid.ah if h0 + grid.ah <= grid.H else grid.H - h0
    c0 = 0 if w0 >= 0 else -w0
    c1 = (grid.aw - 1) * grid.dw + 1
    c1 = grid.W - w0 if w0 + c1 > grid.W else c1
    if r1 > r0 and c1 > c0:
        prefetch_rows(x + ((n * grid.H + h0 + r0) * grid.W + w0 + c0) * grid.C, r1 - r0, grid.W * grid.C,
                      (c1 - c0) * grid.C)


cdef enum:
    WINOGRAD_GRAD_PREFETCH_TILES = 2        # how far ahead of its transforms a task asks for a tile's operands


cdef void transform_tile_run(const real* x, const real* dy, const WinoGrid* grid, Py_ssize_t first,
                             Py_ssize_t count, real* v, Py_ssize_t vplane, real* w, Py_ssize_t wplane,
                             Py_ssize_t slot) noexcept nogil:
    """Both operands of tiles first .. first+count-1 into slots slot .. slot+count-1 of v and w, each tile's
    operands asked for WINOGRAD_GRAD_PREFETCH_TILES tiles ahead of its transforms."""
    cdef Py_ssize_t T = grid.N * grid.th * grid.tw, s, q
    for q in range(WINOGRAD_GRAD_PREFETCH_TILES):
        if first + q < T:
            prefetch_tile_operands(x, dy, grid, first + q)
    for s in range(count):
        if first + s + WINOGRAD_GRAD_PREFETCH_TILES < T:
            prefetch_tile_operands(x, dy, grid, first + s + WINOGRAD_GRAD_PREFETCH_TILES)
        input_tile_transform(x, grid, first + s, v, slot + s, vplane)
        output_gradient_tile_transform(dy, grid, first + s, w, slot + s, wplane)


cdef void gradient_products(const real* w, const real* v, Py_ssize_t ntiles, const WinoGrid* grid,
                            Py_ssize_t j0, Py_ssize_t j1, double* m, bint first, const real** aptr, real** prow,
                            real* part) noexcept nogil:
    """m[k][c] (+)= sum over ntiles tiles of w[tile][k] v[tile][c] (one xi plane of each; m its K x C block of
    M, float64), for the column panels j0 .. j1-1 and every row panel: float32 (or float64) sums of
    WINOGRAD_GRAD_SUM_TILES tiles from the first, added to m in float64 in order (first: m is set, not added
    to). aptr (krows pointers), prow (MR rows of part) and part (MR x NR) are the calling thread's."""
    cdef int MR = tile_rows(<real*> w)
    cdef int NR = tile_cols(<real*> w)
    cdef Py_ssize_t C = grid.C, K = grid.K, krows = ((K + MR - 1) // MR) * MR
    cdef Py_ssize_t j, kp, r, q, s0, sb, mr, nr
    cdef double* mrow
    if real is float:               # float32 runs added to M in float64 from registers
        for j in range(j0, j1):
            nr = C - j * NR if C - j * NR < NR else NR
            for kp in range(krows // MR):
                mr = K - kp * MR if K - kp * MR < MR else MR
                kc_wgrad_tile_f32(<int> ntiles, WINOGRAD_GRAD_SUM_TILES, w + kp * MR, K, v + j * NR, C,
                                  m + kp * MR * C + j * NR, C, <int> mr, <int> nr, first)
    else:
        for r in range(krows):         # row k of A is column k of W[xi] (K apart); rows past K repeat row 0
            aptr[r] = w + (r if r < K else 0)
        for j in range(j0, j1):
            nr = C - j * NR if C - j * NR < NR else NR
            for kp in range(krows // MR):
                mr = K - kp * MR if K - kp * MR < MR else MR
                s0 = 0
                while s0 < ntiles:     # fixed runs of tiles from the first: any thread count, same sums
                    sb = ntiles - s0 if ntiles - s0 < WINOGRAD_GRAD_SUM_TILES else WINOGRAD_GRAD_SUM_TILES
                    igemm_tile_strided(1, <int> sb, &aptr[kp * MR], s0 * K, K, v + s0 * C + j * NR, C, prow, 0,
                                       <int> mr, <int> nr, False)
                    for r in range(mr):
                        mrow = m + (kp * MR + r) * C + j * NR
                        if first and s0 == 0:
                            for q in range(nr):
                                mrow[q] = part[r * NR + q]
                        else:
                            for q in range(nr):
                                mrow[q] = mrow[q] + part[r * NR + q]
                    s0 = s0 + sb


cdef int winograd_filter_grad(const real* x, const real* dy, double* mgrad, WinoGrid grid,
                              Py_ssize_t chunk, int n_threads) noexcept nogil:
    """mgrad[xi][k][c] = sum over tiles of (A dY A^T)[xi, k] (B^T X B)[xi, c], in float64 over float32 (or
    float64) sums of WINOGRAD_GRAD_SUM_TILES tiles each, by phases: a chunk's transforms on every thread,
    then its products by xi and channel block. Returns 0, or -1 when the chunk buffers cannot be
    allocated."""
    cdef int MR = tile_rows(<real*> x)
    cdef int NR = tile_cols(<real*> x)
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw
    cdef Py_ssize_t T = grid.N * grid.th * grid.tw
    cdef Py_ssize_t ncolp = (C + NR - 1) // NR
    cdef Py_ssize_t ncb = (ncolp + COL_PANELS_PER_TASK - 1) // COL_PANELS_PER_TASK
    cdef Py_ssize_t krows = ((K + MR - 1) // MR) * MR
    cdef Py_ssize_t t0, tb, s, task, xi, jb, r, tid, ci, ntt
    cdef Py_ssize_t nchunks = (T + chunk - 1) // chunk
    cdef int team
    cdef bint leave
    cdef kc_barrier phase_end
    kc_barrier_init(&phase_end)
    n_threads = loop_threads(A2 * ncb, T * A2 * (C + K), n_threads)
    # per chunk, the task counters of its transforms and of its products (tile.pxi, next_task)
    cdef long* counters = <long*> calloc(2 * nchunks, sizeof(long))
    # v is read NR values at a time from any channel: NR spare values keep the last row's reads in bounds
    cdef Py_ssize_t vplane = plane_values(chunk, C, sizeof(real)), wplane = plane_values(chunk, K, sizeof(real))
    cdef real* v = <real*> scratch_alloc((A2 * vplane + NR) * sizeof(real))
    # w is read a run of MR channels at a time (kc_wgrad_tile_f32): MR spare values for the last row panel
    cdef real* w = <real*> scratch_alloc((A2 * wplane + MR) * sizeof(real))
    cdef real* part_all = <real*> thread_arrays(n_threads, MR * NR, sizeof(real))
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, krows, sizeof(real*))
    cdef real** prow_all = <real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef const real** aptr
    cdef real** prow
    cdef real* part
    if v == NULL or w == NULL or part_all == NULL or aptr_all == NULL or prow_all == NULL or counters == NULL:
        scratch_free(v)
        scratch_free(w)
        free(part_all)
        free(aptr_all)
        free(prow_all)
        free(counters)
        return -1
    for r in range(A2 * vplane, A2 * vplane + NR):
        v[r] = 0
    for r in range(A2 * wplane, A2 * wplane + MR):
        w[r] = 0
    # One parallel region for every chunk (each phase's end a kc_barrier): a region per phase cost a wake-up
    # of the helper per phase.
    with parallel(num_threads=n_threads):
        tid = threadid()
        team = kc_region_threads()
        aptr = aptr_all + tid * thread_stride(krows, sizeof(real*))
        part = part_all + tid * thread_stride(MR * NR, sizeof(real))
        prow = prow_all + tid * thread_stride(MR, sizeof(real*))
        for r in range(MR):
            prow[r] = part + r * NR
        t0 = 0
        ci = 0
        leave = False
        # A helper whose CPU another call's caller needs leaves the call for good between tasks (the phase
        # ends then stop waiting for it: microkernel.h, kc_barrier_leave); which thread runs a task never
        # changes a sum.
        while t0 < T:
            tb = T - t0 if T - t0 < chunk else chunk
            ntt = (tb + WINOGRAD_GRAD_TRANSFORM_TILES - 1) // WINOGRAD_GRAD_TRANSFORM_TILES
            while True:                     # both operands' tiles, a run of tiles a task
                leave = kc_should_leave(tid, team, g_cpus)
                if leave:
                    break
                task = kc_take_task(&counters[2 * ci])
                if task >= ntt:
                    break
                s = task * WINOGRAD_GRAD_TRANSFORM_TILES
                transform_tile_run(x, dy, &grid, t0 + s, min(WINOGRAD_GRAD_TRANSFORM_TILES, tb - s), v, vplane,
                                   w, wplane, s)
            if leave:
                break
            kc_barrier_wait(&phase_end, team, tid < kc_share(team, g_cpus))
            while True:                     # M[xi] (+)= W[xi]^T V[xi], by xi and channel block
                leave = kc_should_leave(tid, team, g_cpus)
                if leave:
                    break
                task = kc_take_task(&counters[2 * ci + 1])
                if task >= A2 * ncb:
                    break
                xi = task // ncb
                jb = task - xi * ncb
                gradient_products(w + xi * wplane, v + xi * vplane, tb, &grid, jb * COL_PANELS_PER_TASK,
                                  min((jb + 1) * COL_PANELS_PER_TASK, ncolp), mgrad + xi * K * C, t0 == 0,
                                  aptr, prow, part)
            if leave:
                break
            t0 = t0 + tb
            ci = ci + 1
            if t0 < T:                      # the next chunk's transforms overwrite v and w
                kc_barrier_wait(&phase_end, team, tid < kc_share(team, g_cpus))
        if leave:
            kc_barrier_leave(&phase_end, team)
    scratch_free(v)
    scratch_free(w)
    free(part_all)
    free(aptr_all)
    free(prow_all)
    free(counters)
    return 0


cdef inline Py_ssize_t lane_first_tile(Py_ssize_t lane, Py_ssize_t lanes, Py_ssize_t T) noexcept nogil:
    """The first tile of a lane: lanes take equal shares of the tiles, to a tile (each lane's runs of
    WINOGRAD_GRAD_SUM_TILES start at its first tile; lanes of whole runs left 7 runs as 3 + 4 on two threads)."""
    return lane * T // lanes


cdef void filter_from_m_row(const double* rows, Py_ssize_t rstride, const double* gh, Py_ssize_t ah,
                            const double* gw, Py_ssize_t aw, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t C, Py_ssize_t K,
                            Py_ssize_t k, double* half, real* dw) noexcept nogil:
    """dw[i, j, c, k] = (G^T M[., ., k, c] G)[i, j] for one k, in float64: along H then along W, each a sum of
    rows of C values, M[a, b, k, .] the row at rows + (a * aw + b) * rstride (mgrad[xi][k][c]: rows = mgrad +
    k * C, rstride = K * C). gh: ah x kh, gw: aw x kw (row a: G[a, 0..k-1]); half: room for (kh * aw + 1) * C
    values."""
    cdef Py_ssize_t i, j, a, b, c
    cdef double g
    cdef double* acc = half + kh * aw * C
    cdef double* row
    cdef const double* src
    for i in range(kh):             # half[(i*aw + b)*C + c] = sum_a Gh[a, i] M[a, b, k, c]
        for b in range(aw):
            row = half + (i * aw + b) * C
            for c in range(C):
                row[c] = 0
            for a in range(ah):
                g = gh[a * kh + i]
                if g != 0:
                    src = rows + (a * aw + b) * rstride
                    for c in range(C):
                        row[c] = row[c] + g * src[c]
    for i in range(kh):
        for j in range(kw):
            for c in range(C):
                acc[c] = 0
            for b in range(aw):
                g = gw[b * kw + j]
                if g != 0:
                    row = half + (i * aw + b) * C
                    for c in range(C):
                        acc[c] = acc[c] + g * row[c]
            for c in range(C):
                dw[((i * kw + j) * C + c) * K + k] = <real> acc[c]


cdef inline void sum_lane_rows(const double* mlanes, Py_ssize_t lanes, Py_ssize_t plane, Py_ssize_t A2,
                               Py_ssize_t K, Py_ssize_t C, Py_ssize_t k, double* dst) noexcept nogil:
    """dst[xi * C + c] = M_0[xi][k][c] + M_1[xi][k][c] + ... (lane l's M at mlanes + l * plane), lane 0 first,
    then 1, 2, ...: filter k's rows of the lanes' sum, in the order the shape fixes."""
    cdef Py_ssize_t xi, l, c
    cdef double* d
    cdef const double* src
    for xi in range(A2):
        d = dst + xi * C
        src = mlanes + (xi * K + k) * C
        for c in range(C):
            d[c] = src[c]
        for l in range(1, lanes):
            src = mlanes + l * plane + (xi * K + k) * C
            for c in range(C):
                d[c] = d[c] + src[c]


cdef int winograd_filter_grad_lanes(const real* x, const real* dy, double* mlanes, WinoGrid grid,
                                    Py_ssize_t lanes, Py_ssize_t sub, const double* gh, const double* gw,
                                    Py_ssize_t kh, Py_ssize_t kw, real* dw, int n_threads) noexcept nogil:
    """dw by lanes, in one parallel region of two phases, the second waiting for the first's tasks (a region a
    phase cost the helper a wake-up each: 39-56 us a fork and join on a 2-CPU Zen 5 VM with passive waiting).
    1. mlanes[l][xi][k][c] = the sum over lane l's tiles of (A dY A^T)[xi, k] (B^T X B)[xi, c], summed as
       winograd_filter_grad sums. A lane is one task: its thread transforms `sub` tiles at a time into buffers
       of its own and multiplies them into the lane's M at once, so no transformed value crosses between cores
       (the phases' products read planes every thread wrote: on a VM whose two CPUs sit on different L3s, a
       400 ns round trip, Kim k6's filter gradient took 4.5 ms on two threads instead of 2.6).
    2. dW = G^T M G, M the lanes' sum, a cache line of filters a task: each filter's rows of the lanes added in
       order (sum_lane_rows) into the thread's own buffer, then filter_from_m_row; gh / gw: the tile's G along
       H (ah x kh) and W (aw x kw). Apart (the lanes added into lane 0 by blocks of values in a phase of their
       own, then dW from lane 0 a filter a task, the threads' filters interleaved in each cache line of dw),
       Kim k6's filter gradient took 4.86-4.94 ms on one thread and 2.57-2.58 on two; joined, 4.67-4.78 and
       2.46-2.49 (numpy API, inputs rotating, both ways in one process, two runs, 2-CPU Zen 5).
    The lanes depend on the shape only, and every task computes its values the same way on any thread.
    Returns 0, or -1 when buffers cannot be allocated."""
    cdef int MR = tile_rows(<real*> x)
    cdef int NR = tile_cols(<real*> x)
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw, KC = K * C
    cdef Py_ssize_t T = grid.N * grid.th * grid.tw
    cdef Py_ssize_t ncolp = (C + NR - 1) // NR
    cdef Py_ssize_t krows = ((K + MR - 1) // MR) * MR
    cdef Py_ssize_t lane, t, t1, ta, tb, xi, r, tid, runs, nsub, i, task
    cdef long counters[2]
    cdef int lanes_left = <int> lanes       # lanes not yet summed
    counters[0] = counters[1] = 0
    n_threads = loop_threads(lanes, T * A2 * (C + K), n_threads)
    cdef Py_ssize_t vplane = plane_values(sub, C, sizeof(real)), wplane = plane_values(sub, K, sizeof(real))
    # as winograd_filter_grad's buffers, one pair a thread (NR and MR spare values past the last plane)
    cdef Py_ssize_t vstride = thread_stride(A2 * vplane + NR, sizeof(real))
    cdef Py_ssize_t wstride = thread_stride(A2 * wplane + MR, sizeof(real))
    # a thread's room for filter_from_m_row's sums along H and one filter's rows of the lanes' sum
    cdef Py_ssize_t hstride = thread_stride((kh * grid.aw + 1 + A2) * C, sizeof(double))
    cdef Py_ssize_t fblock = 64 // sizeof(real)
    cdef Py_ssize_t nfblocks = (K + fblock - 1) // fblock, k
    cdef double* msum
    # kept between calls (scratch.pxi): fresh from malloc, these were new pages, faulted in on every call
    # (8x28x28x64 3x3 on two threads: 1.33 ms, slower than one thread's 1.13-1.18)
    cdef real* v_all = <real*> scratch_alloc(n_threads * vstride * sizeof(real))
    cdef real* w_all = <real*> scratch_alloc(n_threads * wstride * sizeof(real))
    cdef double* half_all = <double*> scratch_alloc(n_threads * hstride * sizeof(double))
    cdef real* part_all = <real*> thread_arrays(n_threads, MR * NR, sizeof(real))
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, krows, sizeof(real*))
    cdef real** prow_all = <real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef real* v
    cdef real* w
    cdef const real** aptr
    cdef real** prow
    cdef real* part
    if (v_all == NULL or w_all == NULL or half_all == NULL or part_all == NULL or aptr_all == NULL
            or prow_all == NULL):
        scratch_free(v_all)
        scratch_free(w_all)
        scratch_free(half_all)
        free(part_all)
        free(aptr_all)
        free(prow_all)
        return -1
    with parallel(num_threads=n_threads):
        tid = threadid()
        v = v_all + tid * vstride
        w = w_all + tid * wstride
        for r in range(A2 * vplane, A2 * vplane + NR):
            v[r] = 0
        for r in range(A2 * wplane, A2 * wplane + MR):
            w[r] = 0
        aptr = aptr_all + tid * thread_stride(krows, sizeof(real*))
        part = part_all + tid * thread_stride(MR * NR, sizeof(real))
        prow = prow_all + tid * thread_stride(MR, sizeof(real*))
        for r in range(MR):
            prow[r] = part + r * NR
        # Each phase ends when its tasks are done (kc_phase_wait), not when every thread has arrived: a helper
        # that stands down for an overlapping call (next_task: a training step's input gradient beside this)
        # holds no one up, and rejoins between tasks when the CPUs free up.
        while True:
            lane = next_task(&counters[0], lanes, tid, n_threads)
            if lane >= lanes:
                break
            t = lane_first_tile(lane, lanes, T)
            t1 = lane_first_tile(lane + 1, lanes, T)
            if t == t1:                 # (the plan gives every lane a run's tiles; an empty one still sums to zero)
                memset(mlanes + lane * A2 * KC, 0, A2 * KC * sizeof(double))
            # the lane's runs in nsub near-equal pieces of at most sub tiles (whole runs: the pieces never
            # change a sum, only how much of the lane's operands is in cache at once)
            runs = (t1 - t + WINOGRAD_GRAD_SUM_TILES - 1) // WINOGRAD_GRAD_SUM_TILES
            nsub = (runs * WINOGRAD_GRAD_SUM_TILES + sub - 1) // sub
            for i in range(nsub):
                ta = t + runs * i // nsub * WINOGRAD_GRAD_SUM_TILES
                tb = t + runs * (i + 1) // nsub * WINOGRAD_GRAD_SUM_TILES
                tb = (t1 if tb > t1 else tb) - ta
                transform_tile_run(x, dy, &grid, ta, tb, v, vplane, w, wplane, 0)
                for xi in range(A2):
                    gradient_products(w + xi * wplane, v + xi * vplane, tb, &grid, 0, ncolp,
                                      mlanes + (lane * A2 + xi) * KC, i == 0, aptr, prow, part)
            kc_phase_task_done(&lanes_left)
        kc_phase_wait(&lanes_left, tid < kc_share(n_threads, g_cpus))
        msum = half_all + tid * hstride + (kh * grid.aw + 1) * C
        while True:                     # dW, a cache line of filters a task: one thread writes each line of dw
            task = next_task(&counters[1], nfblocks, tid, n_threads)
            if task >= nfblocks:
                break
            for k in range(task * fblock, min((task + 1) * fblock, K)):
                sum_lane_rows(mlanes, lanes, A2 * KC, A2, K, C, k, msum)
                filter_from_m_row(msum, C, gh, grid.ah, gw, grid.aw, kh, kw, C, K, k, half_all + tid * hstride,
                                  dw)
    scratch_free(v_all)
    scratch_free(w_all)
    scratch_free(half_all)
    free(part_all)
    free(aptr_all)
    free(prow_all)
    return 0


# Depthwise convolution (groups == input channels, one or a few filters per channel), on channels.
#
# A depthwise layer has no reduction over channels, so the GEMM tile of igemm_conv.pxi would multiply 1 x 1
# blocks. Here channels run across the vector lanes instead (microkernel.h, kc_dw_* / kc_dwgrad_*): a tile
# is MR pixels (or MR taps, for the filter gradient) x two vectors of channels, and the reduction runs over
# taps (or pixels). The three passes share the geometry of the rest of kconv (ConvGrid, the plan's taps and
# stride phases):
#
#   forward         rows = output pixels, sources = input pixels through the forward taps;
#   input gradient  the same loop over dy, once per stride phase (plan.pxi, build_taps), as direct_run does;
#   filter gradient dw[t, k] = sum over output pixels of x(pixel through tap t)[k] * dy(pixel)[k], split over
#                   rows of pixels into fixed chunks whose partial sums are added in order.
#
# A depth multiplier dm > 1 (output channel k = c * dm + m reads input channel c) runs on a copy of the
# input with each channel repeated dm times (expand_channels), so every pass is the dm = 1 loop; the input
# gradient adds the dm copies back (fold_channels). Every output element is owned by one task and reduced in
# a fixed order, so results do not depend on the thread count.

cdef enum:
    DW_PIXELS = 64          # pixels per filter-gradient pointer table


cdef inline int vector_lanes(real* dummy) noexcept nogil:
    return tile_cols(dummy) // 2


cdef inline real tail_epilogue(real s, const real* bias, Py_ssize_t k, int clamp) noexcept nogil:
    if bias != NULL:
        s = s + bias[k]
    if clamp == 1:
        return activate(s, ACT_RELU)
    if clamp == 2:
        return activate(s, ACT_RELU6)
    return s


cdef inline void dw_tile(int ntaps, const real* const* a, const real* const* wp, real* const* c, int mr,
                         Py_ssize_t C, const real* bias, int clamp) noexcept nogil:
    """c[i][0..C) = sum over taps of a[t*MR + i][..] * wp[t][..]: all channels of a tile of mr pixels; then
    + bias (unless NULL) and relu (clamp 1) or relu6 (clamp 2)."""
    cdef int MR = tile_rows(c[0])
    cdef Py_ssize_t L = vector_lanes(c[0]), c0 = 0, i, k
    cdef int t
    cdef real s
    while c0 + 2 * L <= C:
        if real is float:
            kc_dw_f32_nv2(ntaps, a, c0, wp, c0, c, c0, mr, bias + c0 if bias != NULL else NULL, clamp)
        else:
            kc_dw_f64_nv2(ntaps, a, c0, wp, c0, c, c0, mr, bias + c0 if bias != NULL else NULL, clamp)
        c0 += 2 * L
    if c0 + L <= C:
        if real is float:
            kc_dw_f32_nv1(ntaps, a, c0, wp, c0, c, c0, mr, bias + c0 if bias != NULL else NULL, clamp)
        else:
            kc_dw_f64_nv1(ntaps, a, c0, wp, c0, c, c0, mr, bias + c0 if bias != NULL else NULL, clamp)
        c0 += L
    for i in range(mr):             # channels that fill no vector
        for k in range(c0, C):
            s = 0
            for t in range(ntaps):
                s = s + a[t * MR + i][k] * wp[t][k]
            c[i][k] = tail_epilogue(s, bias, k, clamp)


cdef inline void dw_run_tile(int ntaps, const real* const* a, Py_ssize_t xs, const real* const* wp, real* c,
                             Py_ssize_t cs, Py_ssize_t C, const real* bias, int clamp) noexcept nogil:
    """dw_tile for a full tile of MR pixels inside the image: pixel i of tap t is a[t] + i*xs, its output
    c + i*cs."""
    cdef int MR = tile_rows(c)
    cdef Py_ssize_t L = vector_lanes(c), c0 = 0, i, k
    cdef int t
    cdef real s
    while c0 + 2 * L <= C:
        if real is float:
            kc_dwrun_f32_nv2(ntaps, a, xs, c0, wp, c0, c + c0, cs, bias + c0 if bias != NULL else NULL, clamp)
        else:
            kc_dwrun_f64_nv2(ntaps, a, xs, c0, wp, c0, c + c0, cs, bias + c0 if bias != NULL else NULL, clamp)
        c0 += 2 * L
    if c0 + L <= C:
        if real is float:
            kc_dwrun_f32_nv1(ntaps, a, xs, c0, wp, c0, c + c0, cs, bias + c0 if bias != NULL else NULL, clamp)
        else:
            kc_dwrun_f64_nv1(ntaps, a, xs, c0, wp, c0, c + c0, cs, bias + c0 if bias != NULL else NULL, clamp)
        c0 += L
    for i in range(MR):
        for k in range(c0, C):
            s = 0
            for t in range(ntaps):
                s = s + a[t][i * xs + k] * wp[t][k]
            c[i * cs + k] = tail_epilogue(s, bias, k, clamp)


cdef inline void dw_edge_pixel(const real* src, real* dst, const ConvGrid* grid, Py_ssize_t n, Py_ssize_t qh,
                               Py_ssize_t qw, const Py_ssize_t* tap_h, const Py_ssize_t* tap_w,
                               const Py_ssize_t* live, Py_ssize_t nlive, const real** pa, const real** wp,
                               const real* zeros, const real* bias, int clamp) noexcept nogil:
    """Destination pixel (n, qh, qw), all channels, through the live taps (those whose source row is inside):
    a tap whose source column is in the padding reads zeros. pa: room for nlive pointers."""
    cdef Py_ssize_t j, t, sw
    for j in range(nlive):
        t = live[j]
        sw = qw * grid.step_w + tap_w[t]
        if 0 <= sw < grid.Ws:
            pa[j] = src + ((n * grid.Hs + qh * grid.step_h + tap_h[t]) * grid.Ws + sw) * grid.Cs
        else:
            pa[j] = zeros
    cdef real* c = dst + ((n * grid.Hd + grid.dst_h0 + qh * grid.dstep_h) * grid.Wd + grid.dst_w0
                          + qw * grid.dstep_w) * grid.Cd
    if real is float:
        kc_dwpixel_f32(<int> nlive, pa, wp, c, grid.Cd, bias, clamp)
    else:
        kc_dwpixel_f64(<int> nlive, pa, wp, c, grid.Cd, bias, clamp)


cdef inline void inside_range(const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t step, Py_ssize_t Ws,
                              Py_ssize_t Q, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the destination columns q whose source columns q*step + tap_w[t] are inside 0..Ws-1 for
    every tap (empty when lo >= hi)."""
    cdef Py_ssize_t t, wmin = 0, wmax = 0
    for t in range(ntaps):
        if t == 0 or tap_w[t] < wmin:
            wmin = tap_w[t]
        if t == 0 or tap_w[t] > wmax:
            wmax = tap_w[t]
    lo[0] = 0 if wmin >= 0 else (-wmin + step - 1) // step
    hi[0] = 0 if Ws - 1 - wmax < 0 else (Ws - 1 - wmax) // step + 1
    if hi[0] > Q:
        hi[0] = Q
    if lo[0] > hi[0]:
        lo[0] = hi[0]


cdef struct DwTables:      # one thread's pointer tables (depthwise_row)
    const void** a          # nt * MR: the edge tiles' source pixels, tap by tap
    void** crow             # MR: their output pixels
    const void** wp         # nt: the live taps' filter rows
    const void** base       # nt: the run tiles' first source pixel, tap by tap
    Py_ssize_t* live        # nt: the live taps
    const void** pa         # nt: an edge pixel's source pixels


cdef inline DwTables dw_tables(void** room, Py_ssize_t nt, int MR) noexcept nogil:
    """One thread's tables, carved from room (nt * MR + MR + 4 * nt pointers)."""
    cdef DwTables tb
    tb.a = <const void**> room
    tb.crow = room + nt * MR
    tb.wp = <const void**> (room + nt * MR + MR)
    tb.base = <const void**> (room + nt * MR + MR + nt)
    tb.live = <Py_ssize_t*> (room + nt * MR + MR + 2 * nt)
    tb.pa = <const void**> (room + nt * MR + MR + 3 * nt)
    return tb


cdef void depthwise_row(const real* src, real* dst, const ConvGrid* grid, const Py_ssize_t* tap_h,
                        const Py_ssize_t* tap_w, const Py_ssize_t* tap_off, Py_ssize_t ntaps, const real* w,
                        const real* zeros, const Epilogue* ep, Py_ssize_t n, Py_ssize_t qh, Py_ssize_t qlo,
                        Py_ssize_t qhi, bint prefetch_next, DwTables* tb) noexcept nogil:
    """Destination row qh of image n over grid: taps whose source row is in the padding are dropped; pixels
    whose taps all lie inside (qlo .. qhi) run as whole tiles without pointer tables, the others one at a
    time (rows narrower than a tile: as pointer-table tiles). prefetch_next: the grid has a row after this
    one (its rows are asked for now)."""
    cdef int MR = tile_rows(dst)
    cdef Py_ssize_t C = grid.Cd
    cdef const real** a = <const real**> tb.a
    cdef real** crow = <real**> tb.crow
    cdef const real** wp = <const real**> tb.wp
    cdef const real** base = <const real**> tb.base
    cdef const real** pa = <const real**> tb.pa
    cdef Py_ssize_t* live = tb.live
    cdef Py_ssize_t qw, qw0, blk, sh, sw, t, j, i, nlive = 0, dh
    cdef Py_ssize_t xs = grid.step_w * grid.Cs, cs = grid.dstep_w * C
    cdef int mr
    cdef real* c
    # bias with no activation, relu or relu6 are applied in the tile; anything else after it is stored
    cdef bint in_tile = ep != NULL and ep.z0 == NULL and (ep.act == ACT_LINEAR or ep.act == ACT_RELU or
                                                          ep.act == ACT_RELU6)
    cdef const real* bias = <const real*> ep.bias if in_tile else NULL
    cdef int clamp = (1 if ep.act == ACT_RELU else 2 if ep.act == ACT_RELU6 else 0) if in_tile else 0
    for t in range(ntaps):
        sh = qh * grid.step_h + tap_h[t]
        if 0 <= sh < grid.Hs:
            live[nlive] = t
            wp[nlive] = w + tap_off[t]
            nlive = nlive + 1
    dh = grid.dst_h0 + qh * grid.dstep_h
    # The next row's new source row and its output row, asked for now: a depthwise tile does 1 FMA per
    # value it loads and waits on memory otherwise (one core, Zen 4, maps evicted between calls as in a
    # model: 8x28x28x128 forward 1.53 -> 1.09 ms, input gradient 1.56 -> 1.23; 56x56x64 2.31 -> 2.11
    # and 2.31 -> 1.89). Rows go to threads in contiguous runs, so the next row is mostly this thread's.
    if prefetch_next:
        sh = -1
        if ntaps > 0:       # taps go row by row: the last one reads the lowest source row
            sh = (qh + 1) * grid.step_h + tap_h[ntaps - 1] if qh + 1 < grid.Qh else tap_h[ntaps - 1]
        if 0 <= sh < grid.Hs:
            kc_prefetch_l2(src + ((n + (qh + 1) // grid.Qh) * grid.Hs + sh) * grid.Ws * grid.Cs,
                           grid.Ws * grid.Cs * sizeof(real))
        kc_prefetch_write_l2(dst + ((n * grid.Hd + dh + grid.dstep_h) * grid.Wd) * C,
                             grid.Wd * C * sizeof(real))
    if qhi - qlo >= MR:
        # Pixels whose taps reach into the padding one at a time; those inside in whole tiles, the
        # last one moved back to end at qhi (it writes some pixels again, the same values).
        for qw in range(qlo):
            dw_edge_pixel(src, dst, grid, n, qh, qw, tap_h, tap_w, live, nlive, pa, wp, zeros, bias, clamp)
        qw0 = qlo
        while qw0 < qhi:
            if qw0 + MR > qhi:
                qw0 = qhi - MR
            for j in range(nlive):
                t = live[j]
                base[j] = src + ((n * grid.Hs + qh * grid.step_h + tap_h[t]) * grid.Ws
                                 + qw0 * grid.step_w + tap_w[t]) * grid.Cs
            dw_run_tile(<int> nlive, base, xs, wp,
                        dst + ((n * grid.Hd + dh) * grid.Wd + grid.dst_w0 + qw0 * grid.dstep_w) * C,
                        cs, C, bias, clamp)
            qw0 = qw0 + MR
        for qw in range(qhi, grid.Qw):
            dw_edge_pixel(src, dst, grid, n, qh, qw, tap_h, tap_w, live, nlive, pa, wp, zeros, bias, clamp)
    else:
        for blk in range((grid.Qw + MR - 1) // MR):
            qw0 = blk * MR
            mr = <int> (grid.Qw - qw0 if grid.Qw - qw0 < MR else MR)
            c = dst + ((n * grid.Hd + dh) * grid.Wd + grid.dst_w0 + qw0 * grid.dstep_w) * C
            if qw0 >= qlo and qw0 + MR <= qhi:
                for j in range(nlive):
                    t = live[j]
                    base[j] = src + ((n * grid.Hs + qh * grid.step_h + tap_h[t]) * grid.Ws
                                     + qw0 * grid.step_w + tap_w[t]) * grid.Cs
                dw_run_tile(<int> nlive, base, xs, wp, c, cs, C, bias, clamp)
            else:
                for i in range(MR):    # rows past the edge repeat the first one and are never stored
                    qw = qw0 + (i if i < mr else 0)
                    crow[i] = c + (qw - qw0) * cs
                    for j in range(nlive):
                        t = live[j]
                        sh = qh * grid.step_h + tap_h[t]
                        sw = qw * grid.step_w + tap_w[t]
                        if 0 <= sw < grid.Ws:
                            a[j * MR + i] = src + ((n * grid.Hs + sh) * grid.Ws + sw) * grid.Cs
                        else:
                            a[j * MR + i] = zeros
                dw_tile(<int> nlive, a, wp, crow, mr, C, bias, clamp)
    if ep != NULL and not in_tile:     # once per pixel, after the row (tiles may overlap)
        c = dst + ((n * grid.Hd + dh) * grid.Wd + grid.dst_w0) * C
        for qw in range(grid.Qw):
            apply_epilogue(c + qw * cs, C, <const real*> ep.bias, ep)


cdef int depthwise_conv(const real* src, real* dst, ConvGrid grid, const Phase* phases, Py_ssize_t nphases,
                        const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, const Py_ssize_t* tap_off,
                        const real* w, const real* zeros, const Epilogue* ep, int n_threads) noexcept nogil:
    """dst = the depthwise convolution of src over grid (grid.Cs == grid.Cd channels), phase by phase:
    phase ph is the grid of phases[ph].qh x qw destination pixels from (rh, rw), its taps t0 .. t0 + nt of
    tap_h / tap_w (tap t reads filter row w + tap_off[t]). The forward is one phase at (0, 0); the input
    gradient of a strided layer has one per stride phase. One parallel loop over bands of destination rows,
    row r of every phase (one team for the pass, not one per phase; each task owns its rows). Returns 0, or
    -1 when the pointer tables cannot be allocated."""
    cdef int MR = tile_rows(dst)
    cdef Py_ssize_t ph, nt = 1, max_qh = 0, bands, task, n, r, tid
    for ph in range(nphases):
        nt = phases[ph].nt if phases[ph].nt > nt else nt
        max_qh = phases[ph].qh if phases[ph].qh > max_qh else max_qh
    cdef Py_ssize_t per_thread = thread_stride(nt * MR + MR + 4 * nt, sizeof(void*))
    cdef void** tables = <void**> thread_arrays(n_threads, per_thread, sizeof(void*))
    cdef Py_ssize_t* lims = <Py_ssize_t*> malloc((2 * nphases + 1) * sizeof(Py_ssize_t))
    cdef DwTables tb
    cdef ConvGrid pg
    if tables == NULL or lims == NULL:
        free(tables)
        free(lims)
        return -1
    for ph in range(nphases):
        inside_range(tap_w + phases[ph].t0, phases[ph].nt, grid.step_w, grid.Ws, phases[ph].qw,
                     &lims[2 * ph], &lims[2 * ph + 1])
    bands = grid.N * max_qh
    with parallel(num_threads=phase_threads(bands * nphases, SERIAL_PHASE_VALUES, n_threads)):
        tid = threadid()
        tb = dw_tables(tables + tid * per_thread, nt, MR)     # (assigned whole: private to the thread)
        pg = grid
        for task in prange(bands, schedule='static'):
            n = task // max_qh
            r = task - n * max_qh
            for ph in range(nphases):
                if r >= phases[ph].qh:
                    continue
                pg.Qh, pg.Qw = phases[ph].qh, phases[ph].qw
                pg.dst_h0 = grid.dst_h0 + phases[ph].rh
                pg.dst_w0 = grid.dst_w0 + phases[ph].rw
                depthwise_row(src, dst, &pg, tap_h + phases[ph].t0, tap_w + phases[ph].t0,
                              tap_off + phases[ph].t0, phases[ph].nt, w, zeros, ep, n, r, lims[2 * ph],
                              lims[2 * ph + 1], n * phases[ph].qh + r + 1 < grid.N * phases[ph].qh, &tb)
    free(lims)
    free(tables)
    return 0


cdef inline void dw_grad_channels(int npix, int rows, const real* const* a, Py_ssize_t step, bint strided,
                                  const real* dy, Py_ssize_t ldd, Py_ssize_t C, real* out) noexcept nogil:
    """out[r, k] += sum over npix pixels p of x_p,r[k] * dy[p*ldd + k], for rows (taps) r < rows and every
    channel k. strided: x_p,r = a[r] + p*step; else a table, x_p,r = a[p*step + r]."""
    cdef Py_ssize_t L = vector_lanes(out), c0 = 0, k, p
    cdef int r
    cdef real acc
    while c0 + 2 * L <= C:
        if real is float:
            if strided:
                kc_dwgradrun_f32_nv2(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
            else:
                kc_dwgrad_f32_nv2(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
        else:
            if strided:
                kc_dwgradrun_f64_nv2(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
            else:
                kc_dwgrad_f64_nv2(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
        c0 += 2 * L
    if c0 + L <= C:
        if real is float:
            if strided:
                kc_dwgradrun_f32_nv1(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
            else:
                kc_dwgrad_f32_nv1(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
        else:
            if strided:
                kc_dwgradrun_f64_nv1(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
            else:
                kc_dwgrad_f64_nv1(npix, rows, a, step, c0, dy + c0, ldd, out + c0, C)
        c0 += L
    for r in range(rows):        # channels that fill no vector
        for k in range(c0, C):
            acc = 0
            for p in range(npix):
                acc = acc + (a[r][p * step + k] if strided else a[p * step + r][k]) * dy[p * ldd + k]
            out[r * C + k] = out[r * C + k] + acc


cdef inline void live_taps(const ConvGrid* grid, const Py_ssize_t* tap_h, Py_ssize_t ntaps, Py_ssize_t qh,
                           Py_ssize_t* t_lo, Py_ssize_t* t_hi) noexcept nogil:
    """Taps t_lo .. t_hi-1 read source rows inside the image from destination row qh (taps go row by row)."""
    cdef Py_ssize_t t, sh
    t_lo[0] = ntaps
    t_hi[0] = 0
    for t in range(ntaps):
        sh = qh * grid.step_h + tap_h[t]
        if 0 <= sh < grid.Hs:
            if t < t_lo[0]:
                t_lo[0] = t
            t_hi[0] = t + 1


cdef inline void dw_grad_edge(const real* src, const real* dy, const ConvGrid* grid, const Py_ssize_t* tap_h,
                              const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t r, Py_ssize_t nr,
                              Py_ssize_t t_lo, Py_ssize_t t_hi, Py_ssize_t q0, Py_ssize_t q1,
                              const real* zeros, const real** a, int MR, real* out) noexcept nogil:
    """out[t] += the filter gradient's sums over destination rows r .. r+nr-1 (all with live taps t_lo ..
    t_hi-1) and columns q0 .. q1-1, through pointer tables (a: room for DW_PIXELS x ntaps; a source pixel in
    the padding reads zeros). Either one row and a run of columns, or one column and a run of rows."""
    cdef Py_ssize_t C = grid.Cd, blk, npix, p, t, t0, n, qh, qw, sh, sw, m
    cdef Py_ssize_t width = q1 - q0, total = nr * (q1 - q0)
    cdef Py_ssize_t ldd = C if nr == 1 else grid.Wd * C       # dy between consecutive pixels of the run
    cdef int nrows
    for blk in range((total + DW_PIXELS - 1) // DW_PIXELS):
        npix = total - blk * DW_PIXELS if total - blk * DW_PIXELS < DW_PIXELS else DW_PIXELS
        for p in range(npix):
            m = blk * DW_PIXELS + p
            n = (r + m // width) // grid.Qh
            qh = (r + m // width) - n * grid.Qh
            qw = q0 + m % width
            for t in range(t_lo, t_hi):
                sh = qh * grid.step_h + tap_h[t]
                sw = qw * grid.step_w + tap_w[t]
                if 0 <= sw < grid.Ws:
                    a[p * ntaps + t] = src + ((n * grid.Hs + sh) * grid.Ws + sw) * grid.Cs
                else:
                    a[p * ntaps + t] = zeros
        m = blk * DW_PIXELS
        t0 = t_lo
        while t0 < t_hi:
            nrows = <int> (t_hi - t0 if t_hi - t0 < MR else MR)
            dw_grad_channels(<int> npix, nrows, a + t0, ntaps, False,
                             dy + ((r + m // width) * grid.Wd + q0 + m % width) * C, ldd, C, out + t0 * C)
            t0 = t0 + MR


cdef int depthwise_filter_grad(const real* src, const real* dy, real* partial, ConvGrid grid,
                               const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, Py_ssize_t ntaps,
                               Py_ssize_t nsplit, Py_ssize_t chunk, const real* zeros,
                               int n_threads) noexcept nogil:
    """partial[s, t, k] = sum over the output rows of split s (chunk rows of N x Ho each) of
    x(pixel through tap t)[k] * dy(pixel)[k]. Pixels whose every tap is inside the image run strided, the
    edges through pointer tables. Returns 0, or -1 when the tables cannot be allocated."""
    cdef int MR = tile_rows(partial)
    cdef Py_ssize_t C = grid.Cd
    cdef Py_ssize_t plane = ntaps * C, rows = grid.N * grid.Qh
    cdef int GR = KC_DW_GRAD_ROWS if KC_DW_GRAD_ROWS > MR else MR     # taps a strided pass takes
    cdef Py_ssize_t per_thread = thread_stride(DW_PIXELS * ntaps + GR, sizeof(real*))
    cdef const real** tables = <const real**> thread_arrays(n_threads, per_thread, sizeof(real*))
    cdef const real** a
    cdef const real** base
    cdef real* out
    cdef Py_ssize_t s, r, r0, r1, n, qh, q, e, t0, t_lo, t_hi, lo2, hi2, k, sh, tid
    cdef Py_ssize_t qlo, qhi, xs = grid.step_w * grid.Cs
    cdef int nrows
    if tables == NULL:
        return -1
    inside_range(tap_w, ntaps, grid.step_w, grid.Ws, grid.Qw, &qlo, &qhi)
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    with parallel(num_threads=n_threads):
        tid = threadid()
        a = tables + tid * per_thread
        base = tables + tid * per_thread + DW_PIXELS * ntaps
        while True:
            s = next_task(&next_t, nsplit, tid, n_threads)
            if s >= nsplit:
                break
            out = partial + s * plane
            for k in range(plane):
                out[k] = 0
            r0 = s * chunk
            r1 = r0 + chunk if r0 + chunk < rows else rows
            for r in range(r0, r1):
                n = r // grid.Qh
                qh = r - n * grid.Qh
                if r + 1 < rows:    # the next row's dy and new source row, asked for now (depthwise_row)
                    kc_prefetch_l2(dy + (r + 1) * grid.Wd * C, grid.Wd * C * sizeof(real))
                    sh = (qh + 1) * grid.step_h + tap_h[ntaps - 1] if qh + 1 < grid.Qh else tap_h[ntaps - 1]
                    if ntaps > 0 and 0 <= sh < grid.Hs:
                        kc_prefetch_l2(src + ((n + (qh + 1) // grid.Qh) * grid.Hs + sh) * grid.Ws * grid.Cs,
                                       grid.Ws * grid.Cs * sizeof(real))
                live_taps(&grid, tap_h, ntaps, qh, &t_lo, &t_hi)
                # the inside pixels, qlo..qhi-1, in one run per group of GR taps (a 3x3 kernel's nine at once
                # on AVX-512: dy read once for all of them)
                if qhi > qlo:
                    t0 = t_lo
                    while t0 < t_hi:
                        nrows = <int> (t_hi - t0 if t_hi - t0 < GR else GR)
                        for k in range(nrows):
                            base[k] = src + ((n * grid.Hs + qh * grid.step_h + tap_h[t0 + k]) * grid.Ws
                                             + qlo * grid.step_w + tap_w[t0 + k]) * grid.Cs
                        dw_grad_channels(<int> (qhi - qlo), nrows, base, xs, True,
                                         dy + ((n * grid.Hd + qh) * grid.Wd + qlo) * C, C, C, out + t0 * C)
                        t0 = t0 + GR
                if qhi <= qlo:      # nothing inside: the whole row through tables (zeros outside the image)
                    dw_grad_edge(src, dy, &grid, tap_h, tap_w, ntaps, r, 1, t_lo, t_hi, 0, grid.Qw, zeros, a,
                                 MR, out)
            # The edge columns, 0..qlo-1 and qhi..Qw-1, through tables: one column over the split's rows in
            # one call (dy read Wd * C apart), rows grouped by their live taps. Row by row, a 12-pixel row's
            # two edge pixels took as long as its ten inside ones (one core: 12x12x192 depthwise, 31 % of
            # the filter gradient in the edge tiles' calls of one pixel each).
            if qhi > qlo:
                for q in range(grid.Qw):
                    if qlo <= q < qhi:
                        continue
                    r = r0
                    while r < r1:
                        live_taps(&grid, tap_h, ntaps, r % grid.Qh, &t_lo, &t_hi)
                        e = r + 1
                        while e < r1 and e - r < DW_PIXELS:
                            live_taps(&grid, tap_h, ntaps, e % grid.Qh, &lo2, &hi2)
                            if lo2 != t_lo or hi2 != t_hi:
                                break
                            e = e + 1
                        dw_grad_edge(src, dy, &grid, tap_h, tap_w, ntaps, r, e - r, t_lo, t_hi, q, q + 1, zeros,
                                     a, MR, out)
                        r = e
    free(tables)
    return 0


cdef void expand_channels(const real* x, Py_ssize_t pixels, Py_ssize_t C, Py_ssize_t dm, real* out,
                          int n_threads) noexcept nogil:
    """out[pixel, c * dm + m] = x[pixel, c]: the input each output channel of a depth multiplier reads."""
    cdef Py_ssize_t q, c, m
    for q in prange(pixels, schedule='static', num_threads=phase_threads(pixels, pixels * C * dm, n_threads)):
        for c in range(C):
            for m in range(dm):
                out[(q * C + c) * dm + m] = x[q * C + c]


cdef void fold_channels(const real* g, Py_ssize_t pixels, Py_ssize_t C, Py_ssize_t dm, real* out,
                        int n_threads) noexcept nogil:
    """out[pixel, c] = sum over m of g[pixel, c * dm + m]: expand_channels' adjoint."""
    cdef Py_ssize_t q, c, m
    cdef real s
    for q in prange(pixels, schedule='static', num_threads=phase_threads(pixels, pixels * C * dm, n_threads)):
        for c in range(C):
            s = 0
            for m in range(dm):
                s = s + g[(q * C + c) * dm + m]
            out[q * C + c] = s

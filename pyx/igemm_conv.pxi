# Convolution as an indirect GEMM (no im2col buffer).
#
# Rows of the GEMM are the pixels of a destination grid (N x Qh x Qw), columns are output channels of a
# group, and the reduction runs over taps x input channels. For row (n, qh, qw) and tap t, the micro-kernel
# reads the channels of source pixel (n, qh*step_h + tap_h[t], qw*step_w + tap_w[t]) straight from the
# NHWC image, or a row of zeros where that pixel falls in the padding. The result goes to destination
# pixel (n, dst_h0 + qh*dstep_h, dst_w0 + qw*dstep_w).
#
# The forward pass is the plain case (rows = output pixels, step = stride). The input gradient is the same
# machine run once per stride phase: input pixels whose coordinates share a residue mod the stride see
# the same subset of taps, so no zero-stuffed work is done for strided layers.
#
# Every output element is owned by one task and reduced in a fixed order (chunk by chunk, tap by tap),
# so results do not depend on the thread count.

cdef struct ConvGrid:
    Py_ssize_t N, Hs, Ws, Cs       # source image (NHWC)
    Py_ssize_t Hd, Wd, Cd          # destination image (NHWC, same N)
    Py_ssize_t Qh, Qw              # rows: an N x Qh x Qw grid of destination pixels
    Py_ssize_t step_h, step_w      # source pixel = q * step + tap offset
    Py_ssize_t dst_h0, dst_w0      # destination pixel = dst_0 + q * dstep
    Py_ssize_t dstep_h, dstep_w
    Py_ssize_t groups, cin, cout   # per group: reduction channels and output channels
    bint narrow                    # the narrow tile (2 MR x NR/2: at most NR/2 output channels per group)


cdef enum:
    TABLE_FAST_TAPS = 64           # kernels up to this many taps get the offset table below


cdef inline void inside_rows(const Py_ssize_t* tap, Py_ssize_t ntaps, Py_ssize_t step, Py_ssize_t size,
                             Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """[lo, hi): the grid coordinates q whose source q*step + tap[t] is inside 0..size-1 for every tap."""
    cdef Py_ssize_t t, vmin = tap[0], vmax = tap[0]
    for t in range(1, ntaps):
        vmin = tap[t] if tap[t] < vmin else vmin
        vmax = tap[t] if tap[t] > vmax else vmax
    lo[0] = 0 if vmin >= 0 else (-vmin + step - 1) // step
    hi[0] = (size - 1 - vmax) // step + 1 if size - 1 - vmax >= 0 else 0


cdef Py_ssize_t merged_run(const ConvGrid* grid, const Py_ssize_t* tap_h, const Py_ssize_t* tap_w,
                           Py_ssize_t ntaps) noexcept nogil:
    """How many consecutive taps read consecutive pixels of one source row (a kernel row at dilation 1, in
    NHWC their channels are one contiguous run): R > 1 lets the micro-kernel read R x cin values from one
    pointer, so a tile takes ntaps / R pointers per row instead of ntaps and runs R times longer between
    them. 1 where that does not hold: groups (a pixel's other channels sit between), several reduction
    chunks (a chunk is a slice of channels), or taps not in runs of one length."""
    cdef Py_ssize_t R = 1, t
    if grid.groups != 1 or grid.cin != grid.Cs or reduction_chunks(ntaps, grid.cin) != 1:
        return 1
    while R < ntaps and tap_h[R] == tap_h[0] and tap_w[R] == tap_w[R - 1] + 1:
        R = R + 1
    if R == 1 or ntaps % R:
        return 1
    for t in range(ntaps):
        if t % R and (tap_h[t] != tap_h[t - 1] or tap_w[t] != tap_w[t - 1] + 1):
            return 1
    return R


cdef void index_tile_rows(const real* src, real* dst, const ConvGrid* grid,
                          const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t run,
                          Py_ssize_t g, Py_ssize_t m0, Py_ssize_t mc, Py_ssize_t rows_padded,
                          const real* zeros, const real** aptr, real** crow, real* edge) noexcept nogil:
    """Pointer tables for rows m0..m0+mc: aptr[(panel*nu + u)*MR + i] and crow[row], nu = ntaps / run: tap
    u covers taps u*run .. u*run + run - 1 (merged_run), read as run x cin values from one pointer. A row
    whose every tap is inside the image (most rows) takes its pointers as one offset per tap from its
    pixel; the rest check each tap against the image's edges: a row of zeros where the tap lies wholly in
    the padding, and, for a merged tap partly inside, a zero-padded copy of its pixels in `edge` (room for
    mc x ntaps x cin values)."""
    cdef int MR = shape_rows(dst, grid.narrow)
    cdef Py_ssize_t r, n, rem, qh, qw, t, u, sh, sw, p, i, j, c, pixel
    cdef Py_ssize_t nu = ntaps // run, width = run * grid.cin
    cdef Py_ssize_t plane = grid.Qh * grid.Qw
    cdef Py_ssize_t toff[TABLE_FAST_TAPS]
    cdef Py_ssize_t qh_lo = 0, qh_hi = 0, qw_lo = 0, qw_hi = 0
    cdef bint fast = 0 < ntaps <= TABLE_FAST_TAPS
    cdef real* copy
    cdef const real* px
    if fast:
        for u in range(nu):
            toff[u] = (tap_h[u * run] * grid.Ws + tap_w[u * run]) * grid.Cs
        inside_rows(tap_h, ntaps, grid.step_h, grid.Hs, &qh_lo, &qh_hi)
        inside_rows(tap_w, ntaps, grid.step_w, grid.Ws, &qw_lo, &qw_hi)
    # (n, qh, qw) of row m0 by division once, then stepped row by row (divisions cost more than the table)
    n = m0 // plane
    rem = m0 - n * plane
    qh = rem // grid.Qw
    qw = rem - qh * grid.Qw
    p = 0
    i = -1
    for r in range(rows_padded):
        i = i + 1                           # row r is row i of panel p
        if i == MR:
            i = 0
            p = p + 1
        if r >= mc:                         # rows past the edge repeat row 0; they are never stored
            crow[r] = crow[0]
            for u in range(nu):
                aptr[(p * nu + u) * MR + i] = aptr[u * MR]
            continue
        crow[r] = dst + ((n * grid.Hd + grid.dst_h0 + qh * grid.dstep_h) * grid.Wd
                         + grid.dst_w0 + qw * grid.dstep_w) * grid.Cd + g * grid.cout
        if fast and qh_lo <= qh < qh_hi and qw_lo <= qw < qw_hi:
            pixel = ((n * grid.Hs + qh * grid.step_h) * grid.Ws + qw * grid.step_w) * grid.Cs + g * grid.cin
            for u in range(nu):
                aptr[(p * nu + u) * MR + i] = src + (pixel + toff[u])
        elif run == 1:
            for t in range(ntaps):
                sh = qh * grid.step_h + tap_h[t]
                sw = qw * grid.step_w + tap_w[t]
                if 0 <= sh < grid.Hs and 0 <= sw < grid.Ws:
                    aptr[(p * ntaps + t) * MR + i] = src + ((n * grid.Hs + sh) * grid.Ws + sw) * grid.Cs + g * grid.cin
                else:
                    aptr[(p * ntaps + t) * MR + i] = zeros
        else:
            for u in range(nu):
                sh = qh * grid.step_h + tap_h[u * run]
                sw = qw * grid.step_w + tap_w[u * run]
                if sh < 0 or sh >= grid.Hs or sw + run <= 0 or sw >= grid.Ws:
                    aptr[(p * nu + u) * MR + i] = zeros
                elif sw >= 0 and sw + run <= grid.Ws:
                    aptr[(p * nu + u) * MR + i] = src + ((n * grid.Hs + sh) * grid.Ws + sw) * grid.Cs
                else:
                    copy = edge + (r * nu + u) * width
                    for j in range(run):
                        if 0 <= sw + j < grid.Ws:
                            px = src + ((n * grid.Hs + sh) * grid.Ws + sw + j) * grid.Cs
                            for c in range(grid.cin):
                                copy[j * grid.cin + c] = px[c]
                        else:
                            for c in range(grid.cin):
                                copy[j * grid.cin + c] = 0
                    aptr[(p * nu + u) * MR + i] = copy
        qw = qw + 1
        if qw == grid.Qw:
            qw = 0
            qh = qh + 1
            if qh == grid.Qh:
                qh = 0
                n = n + 1


cdef void pack_taps_by_pixels(const real* x, const ConvGrid* grid, const Py_ssize_t* tap_h,
                              const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t g, Py_ssize_t p0,
                              Py_ssize_t kc, Py_ssize_t kcp, real* a) noexcept nogil:
    """a[(t*cin + c) * kcp + pl] = X[pixel p0 + pl at tap t, channel c], zero in the padding."""
    cdef Py_ssize_t plane = grid.Qh * grid.Qw, cin = grid.cin, stride = grid.step_w * grid.Cs
    cdef Py_ssize_t pl = 0, p, n, rem, qh, qw0, run, t, c, q, ih, tw, lo, hi
    cdef const real* src
    cdef real* dst
    while pl < kc:
        p = p0 + pl
        n = p // plane
        rem = p - n * plane
        qh = rem // grid.Qw
        qw0 = rem - qh * grid.Qw
        run = grid.Qw - qw0 if grid.Qw - qw0 < kc - pl else kc - pl
        for t in range(ntaps):
            ih = qh * grid.step_h + tap_h[t]
            tw = tap_w[t]
            # output columns qw whose source column qw * step_w + tw lies inside the image
            lo = (-tw + grid.step_w - 1) // grid.step_w if tw < 0 else 0
            hi = (grid.Ws - 1 - tw) // grid.step_w + 1 if grid.Ws - 1 - tw >= 0 else 0
            lo = qw0 if lo < qw0 else lo
            hi = qw0 + run if hi > qw0 + run else hi
            if ih < 0 or ih >= grid.Hs or hi < lo:
                lo = hi = qw0
            for c in range(cin):
                dst = a + (t * cin + c) * kcp + pl - qw0       # indexed by qw in [qw0, qw0 + run)
                for q in range(qw0, lo):
                    dst[q] = 0
                if lo < hi:
                    src = x + ((n * grid.Hs + ih) * grid.Ws + tw) * grid.Cs + g * cin + c
                    if stride == 1:
                        for q in range(lo, hi):
                            dst[q] = src[q]
                    else:
                        for q in range(lo, hi):
                            dst[q] = src[q * stride]
                for q in range(hi, qw0 + run):
                    dst[q] = 0
        pl = pl + run


cdef void dst_rows(real* dst, const ConvGrid* grid, Py_ssize_t g, Py_ssize_t m0, Py_ssize_t mc,
                   real** crow) noexcept nogil:
    """crow[r] = where GEMM row m0 + r goes in dst."""
    cdef Py_ssize_t plane = grid.Qh * grid.Qw, r, m, n, rem, qh, qw
    for r in range(mc):
        m = m0 + r
        n = m // plane
        rem = m - n * plane
        qh = rem // grid.Qw
        qw = rem - qh * grid.Qw
        crow[r] = dst + ((n * grid.Hd + grid.dst_h0 + qh * grid.dstep_h) * grid.Wd
                         + grid.dst_w0 + qw * grid.dstep_w) * grid.Cd + g * grid.cout


# Zero-padded source rows, shared by a block's edge panels (index_panels). A panel of the run tile at the
# image's left or right edge reads, per merged tap, a source row with padding around it. Copied per panel
# (a strip) and per tap, a 3x3 16 -> 16 layer on 32x32 maps made ~18 memcpy / memset calls per 16 pixels and
# ran 28 % slower than the same layer on unpadded input (one core, Zen 4). When a destination row is at most
# ROW_CACHE_PANELS panels wide, each source row a block's edge panels read is instead copied once, whole and
# padded, and every such panel reads its pixels there (a source row serves kh destination rows).
cdef enum:
    ROW_CACHE_PANELS = 4
    ROW_CACHE_KEYS = 128           # distinct padded rows one block may keep (the lookup is a linear scan)


cdef inline Py_ssize_t padded_row_values(const ConvGrid* grid, Py_ssize_t run) noexcept nogil:
    """Values in one padded source row as the run tile reads it: the (Qw - 1) * step_w + run pixels under a
    destination row's merged taps."""
    return ((grid.Qw - 1) * grid.step_w + run) * grid.Cs


cdef inline Py_ssize_t row_cache_values(const ConvGrid* grid, Py_ssize_t ntaps, Py_ssize_t run,
                                        int MR) noexcept nogil:
    """Room (values) one thread's block needs for its padded rows: nu = ntaps / run per destination row the
    block touches, plus a row of zeros; 0 where the row cache is not used (no merged taps, rows too wide for
    whole copies to pay, or narrower than one panel)."""
    cdef Py_ssize_t rows
    if run <= 1 or grid.Qw < MR or grid.Qw > ROW_CACHE_PANELS * MR:
        return 0
    rows = (MR * PANELS_PER_BLOCK - 1) // grid.Qw + 2
    rows = grid.N * grid.Qh if rows > grid.N * grid.Qh else rows
    rows = rows * (ntaps // run) + 1
    return rows * padded_row_values(grid, run) if rows <= ROW_CACHE_KEYS else 0


cdef inline void copy_padded_row(const real* src, const ConvGrid* grid, Py_ssize_t n, Py_ssize_t sh,
                                 Py_ssize_t sw0, Py_ssize_t width, real* out) noexcept nogil:
    """out = source row (n, sh), pixels sw0 .. sw0 + width - 1, zeros outside the image (sh < 0: all zeros)."""
    cdef Py_ssize_t lo = -sw0 if sw0 < 0 else 0
    cdef Py_ssize_t hi = grid.Ws - sw0 if grid.Ws - sw0 < width else width
    if sh < 0 or sh >= grid.Hs or hi < lo:
        lo = hi = 0
    memset(out, 0, lo * grid.Cs * sizeof(real))
    if hi > lo:
        memcpy(out + lo * grid.Cs, src + ((n * grid.Hs + sh) * grid.Ws + sw0 + lo) * grid.Cs,
               (hi - lo) * grid.Cs * sizeof(real))
    memset(out + hi * grid.Cs, 0, (width - hi) * grid.Cs * sizeof(real))


cdef inline void prefetch_block_rows(const real* src, const ConvGrid* grid, const Py_ssize_t* tap_h,
                                     const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t m0,
                                     Py_ssize_t mc) noexcept nogil:
    """Fetches into L2 the source pixels GEMM rows m0 .. m0+mc-1 read, so that the next block (with one thread,
    this thread's) finds them there: its padded-row copies (index_panels) otherwise wait on memory, and its
    tiles less so. One core, Zen 4, numpy API, caches evicted between calls, interleaved in one process:
    3x3 32x32 16 -> 16 batch 32 forward 1.99 -> 1.84 ms, 16x16 32 -> 32 1.77 -> 1.69, the input gradient of
    3 -> 16 1.26 -> 1.13, 56x56 32 -> 32 batch 8 4.78 -> 4.72; the same for the rows a block writes
    (prefetchw) was no faster."""
    cdef Py_ssize_t plane = grid.Qh * grid.Qw, M = grid.N * plane, t, m, n, qh, qa, qb, sh, wa, wb
    cdef Py_ssize_t tmin = tap_h[0], tmax = tap_h[0], wmin = tap_w[0], wmax = tap_w[0]
    if m0 >= M or ntaps <= 0:
        return
    mc = M - m0 if M - m0 < mc else mc
    for t in range(1, ntaps):
        tmin = tap_h[t] if tap_h[t] < tmin else tmin
        tmax = tap_h[t] if tap_h[t] > tmax else tmax
        wmin = tap_w[t] if tap_w[t] < wmin else wmin
        wmax = tap_w[t] if tap_w[t] > wmax else wmax
    m = m0
    while m < m0 + mc:          # destination row by row: the columns qa .. qb-1 of row qh of image n
        n = m // plane
        qh = (m - n * plane) // grid.Qw
        qa = m - n * plane - qh * grid.Qw
        qb = grid.Qw if m0 + mc - (m - qa) >= grid.Qw else m0 + mc - (m - qa)
        wa = qa * grid.step_w + wmin
        wb = (qb - 1) * grid.step_w + wmax + 1
        wa = 0 if wa < 0 else wa
        wb = grid.Ws if wb > grid.Ws else wb
        if wb > wa:
            for sh in range(qh * grid.step_h + tmin, qh * grid.step_h + tmax + 1):
                if 0 <= sh < grid.Hs:
                    kc_prefetch_l2(src + ((n * grid.Hs + sh) * grid.Ws + wa) * grid.Cs,
                                   (wb - wa) * grid.Cs * sizeof(real))
        m = m - qa + qb


cdef void index_panels(const real* src, real* dst, const ConvGrid* grid, const Py_ssize_t* tap_h,
                       const Py_ssize_t* tap_w, Py_ssize_t ntaps, Py_ssize_t run, Py_ssize_t g, Py_ssize_t m0,
                       Py_ssize_t mc, int MR, const real* zeros, const real** aptr, real** crow, real* edge,
                       bint* runs, real* rows, Py_ssize_t rows_len) noexcept nogil:
    """index_tile_rows for a block, panel by panel, with runs[p] set where panel p takes the run tile (tile.pxi:
    float, either tile). Such a panel is MR pixels of one destination row: inside the image its merged
    taps' row 0 pointers are all it needs (row i is row 0 + i * rs); near the image's edge each merged tap
    reads a zero-padded copy of the source row under the panel (a strip, in the panel's part of `edge`:
    it spans (MR-1) * stride + run pixels where the panel's edge copies take MR * run, so stride <= run).
    Other panels get index_tile_rows's tables. Strips serve both tile shapes: on the wide tile they once
    cost what the tables did (C >= 16), but at C = 3 the tables copy each edge row's taps value by value:
    numpy API, 2-CPU Zen 5, one thread, 7x7/2 3 -> 32 128x128 batch 16 forward 3.05 -> 2.78 ms, 224x224
    3 -> 64 batch 4 4.13-4.18 -> 3.99-4.04; 3x3 and 5x5 layers at C = 16-64 level. Pointer tables cost a
    16 -> 16 3x3 layer ~15 % of its time.
    rows (room for rows_len values, or NULL): the padded-row cache (row_cache_values); where it applies, every
    edge panel of the run tile, either tile shape, reads its merged taps there (or in place, for a tap whose
    pixels are all inside), instead of strips or tables."""
    cdef Py_ssize_t nu = ntaps // run, rs = grid.step_w * grid.Cs, plane = grid.Qh * grid.Qw
    cdef Py_ssize_t npan = (mc + MR - 1) // MR, width = (MR - 1) * grid.step_w + run
    cdef Py_ssize_t qh_lo = 0, qh_hi = 0, qw_lo = 0, qw_hi = 0
    cdef Py_ssize_t p, u, i, m, n, rem, qh, qw0, sh, sw0, lo, hi, pixel
    cdef real* strip
    cdef real* c0
    cdef bint float_runs = real is float and 0 < ntaps <= TABLE_FAST_TAPS
    cdef Py_ssize_t row_vals = padded_row_values(grid, run), row_px = (grid.Qw - 1) * grid.step_w + run
    cdef Py_ssize_t keys[ROW_CACHE_KEYS]           # the source row (n * Hs + sh, or -1: zeros) of each kept row
    cdef Py_ssize_t nkeys = 0, key, k
    cdef bint use_rows = (rows != NULL and 0 < row_cache_values(grid, ntaps, run, MR) <= rows_len
                          and float_runs)
    if use_rows:        # one padded row serves every merged tap only if they start at the same column
        for u in range(1, nu):
            use_rows = use_rows and tap_w[u * run] == tap_w[0]
    if not float_runs:
        index_tile_rows(src, dst, grid, tap_h, tap_w, ntaps, run, g, m0, mc, npan * MR, zeros, aptr, crow, edge)
        for p in range(npan):
            runs[p] = False
        return
    inside_rows(tap_h, ntaps, grid.step_h, grid.Hs, &qh_lo, &qh_hi)
    inside_rows(tap_w, ntaps, grid.step_w, grid.Ws, &qw_lo, &qw_hi)
    for p in range(npan):
        m = m0 + p * MR
        n = m // plane
        rem = m - n * plane
        qh = rem // grid.Qw
        qw0 = rem - qh * grid.Qw
        runs[p] = mc - p * MR >= MR and qw0 + MR <= grid.Qw
        if runs[p] and qh_lo <= qh < qh_hi and qw_lo <= qw0 and qw0 + MR <= qw_hi:
            pixel = ((n * grid.Hs + qh * grid.step_h) * grid.Ws + qw0 * grid.step_w) * grid.Cs + g * grid.cin
            for u in range(nu):
                aptr[(p * nu + u) * MR] = src + pixel + (tap_h[u * run] * grid.Ws + tap_w[u * run]) * grid.Cs
        elif runs[p] and use_rows and nkeys + nu <= ROW_CACHE_KEYS and (nkeys + nu) * row_vals <= rows_len:
            for u in range(nu):     # (room for nu more rows is checked above; row_cache_values sizes it)
                sh = qh * grid.step_h + tap_h[u * run]
                if 0 <= sh < grid.Hs and qw_lo <= qw0 and qw0 + MR <= qw_hi:      # this tap's pixels all inside
                    aptr[(p * nu + u) * MR] = src + ((n * grid.Hs + sh) * grid.Ws + qw0 * grid.step_w
                                                     + tap_w[0]) * grid.Cs
                    continue
                key = n * grid.Hs + sh if 0 <= sh < grid.Hs else -1
                k = 0
                while k < nkeys and keys[k] != key:
                    k = k + 1
                if k == nkeys:
                    keys[k] = key
                    nkeys = nkeys + 1
                    copy_padded_row(src, grid, n, sh, tap_w[0], row_px, rows + k * row_vals)
                aptr[(p * nu + u) * MR] = rows + k * row_vals + qw0 * grid.step_w * grid.Cs
        elif runs[p] and run > 1 and edge != NULL and grid.step_w <= run:   # one group, cin == Cs
            for u in range(nu):
                strip = edge + p * MR * nu * run * grid.cin + u * width * grid.Cs
                sh = qh * grid.step_h + tap_h[u * run]
                sw0 = qw0 * grid.step_w + tap_w[u * run]
                lo = -sw0 if sw0 < 0 else 0                     # strip pixels inside the image: lo .. hi
                hi = grid.Ws - sw0 if grid.Ws - sw0 < width else width
                if sh < 0 or sh >= grid.Hs or hi < lo:
                    lo = hi = 0
                memset(strip, 0, lo * grid.Cs * sizeof(real))
                if hi > lo:
                    memcpy(strip + lo * grid.Cs, src + ((n * grid.Hs + sh) * grid.Ws + sw0 + lo) * grid.Cs,
                           (hi - lo) * grid.Cs * sizeof(real))
                memset(strip + hi * grid.Cs, 0, (width - hi) * grid.Cs * sizeof(real))
                aptr[(p * nu + u) * MR] = strip
        else:
            runs[p] = False
            index_tile_rows(src, dst, grid, tap_h, tap_w, ntaps, run, g, m, mc - p * MR if mc - p * MR < MR else MR,
                            MR, zeros, aptr + p * nu * MR, crow + p * MR,
                            edge + p * MR * nu * run * grid.cin if edge != NULL else NULL)
            continue
        c0 = dst + ((n * grid.Hd + grid.dst_h0 + qh * grid.dstep_h) * grid.Wd + grid.dst_w0 + qw0 * grid.dstep_w) \
            * grid.Cd + g * grid.cout
        for i in range(MR):
            crow[p * MR + i] = c0 + i * grid.dstep_w * grid.Cd
    prefetch_block_rows(src, grid, tap_h, tap_w, ntaps, m0 + mc, mc)     # the next block's, while this one runs


# The forward reading the filter in place (plan.pxi, filters_in_place) walks a column panel's rows K values
# apart. From 1 KB apart (K >= 256 float32 channels) the rows of one panel fall into few cache sets and evict
# each other before the next row tile reads them again, and memory sees one or two lines of every 1 KB. Where
# one row block is all a task reads the filter for (a late layer at batch 1-2), each tap's slice of the
# task's column panels is packed first, each source row read once along its length: numpy API, 2-CPU Zen 5,
# filters rotating through memory, two threads: 3x3 1x7x7x512 1.14 -> 0.91 ms, 2x7x7x512 1.75 -> 1.34, 1x1
# 1x7x7x2048 -> 512 0.47 -> 0.37 (one thread 2.4 -> 1.55 ms: the tiles now run at 240 GFLOP/s, the packing
# waits on memory; since then packed in pieces, below). Where several blocks read the
# filter (then in cache) that packing costs 4-5 % (8x14x14x256 -> 1024, 8x28x28x128 -> 512): from 4 KB apart
# (K >= 1024) only each tap's slice of one panel is copied together, for its sets (a 1x1 512 -> 2048 layer
# at 7x7, batch 1, ran at 49 GFLOP/s on one core reading it in place).
cdef enum:
    COPY_FILTER_STRIDE = 1024
    COPY_PANEL_STRIDE = 4096


cdef inline void pack_slice_panels(const real* b, Py_ssize_t ldb, Py_ssize_t rows, Py_ssize_t npanels, int NR,
                                   real* out) noexcept nogil:
    """rows x (npanels x NR) values, rows ldb apart, into npanels panels of rows x NR (panel j at out + j *
    rows * NR): each row read once, left to right."""
    cdef Py_ssize_t r, j, v, nbytes = NR * sizeof(real)
    cdef char* dst
    cdef const char* src
    for r in range(rows):
        src = <const char*> (b + r * ldb)
        for j in range(npanels):
            dst = <char*> (out + (j * rows + r) * NR)
            v = 0
            while v < nbytes:       # whole vectors: a copy of unknown size compiles to a slow rep movs
                memcpy(dst + v, src + j * nbytes + v, KC_VEC_BYTES)
                v += KC_VEC_BYTES


# The slices are packed in pieces of at most COPY_PIECE_ROWS rows of the task's column range (at most
# copy_piece_bytes() a piece: 2 KB of each row on AVX-512), and while one piece's row tiles run, the next
# piece's rows are asked for, a few after each tile. Whole slices of a task's whole range (4 KB of each row
# for a 1x1 512 -> 2048 layer) outgrew L2 before the tiles read them back. `python benchmarks/pass_timing.py
# 1,7,512,512,3 1,7,2048,512,1 1,7,512,2048,1 2,7,512,512,3 --passes fwd --algorithm direct --threads 1,2`,
# 2-CPU Zen 5, the commit before and this one alternating: 1x1 1x7x7x512 -> 2048 0.77-0.80 -> 0.59-0.60 ms on
# one thread, 0.46 -> 0.36-0.40 on two; 3x3 2x7x7x512 1.30-1.31 -> 1.17-1.18 on two (1.30-1.32 in pieces
# without the prefetch); 3x3 1x7x7x512 0.81-0.82 -> 0.79 on two; one-thread 3x3 and 1x1 2048 -> 512 level
# (the prefetch does not hide memory on one thread, whatever its locality hint).
# The rows of a piece depend on the layer alone, never on the thread count: a tile adds its piece's sum to
# what C holds, so where the pieces end sets the order of the additions.
cdef enum:
    COPY_PIECE_ROWS = 128
    COPY_PIECE_BYTES_PER_VEC_BYTE = 4096


cdef inline Py_ssize_t copy_piece_bytes() noexcept nogil:
    return KC_VEC_BYTES * COPY_PIECE_BYTES_PER_VEC_BYTE


cdef struct SlicePiece:
    Py_ssize_t q, u, jb, je          # reduction chunk q, tap (or merged run) u, column panels jb .. je-1
    Py_ssize_t c0, r0, r1            # the chunk's first channel; rows r0 .. r1 of the tap's kc


cdef inline SlicePiece slice_piece(Py_ssize_t k, Py_ssize_t nsub, Py_ssize_t nu, Py_ssize_t nranges,
                                   Py_ssize_t nchunks, Py_ssize_t cin, Py_ssize_t run, Py_ssize_t j0, Py_ssize_t j1,
                                   Py_ssize_t bpanels) noexcept nogil:
    """Piece k of a task's packed slices, in the order they run: chunks, column ranges, taps, pieces of rows."""
    cdef SlicePiece pc
    cdef Py_ssize_t sub = k % nsub, jr, kc
    k = k // nsub
    pc.u = k % nu
    k = k // nu
    jr = k % nranges
    pc.q = k // nranges
    pc.jb = j0 + jr * bpanels
    pc.je = pc.jb + bpanels if pc.jb + bpanels < j1 else j1
    pc.c0 = chunk_start(pc.q, nchunks, cin)
    kc = (chunk_start(pc.q + 1, nchunks, cin) - pc.c0) * run
    pc.r0 = sub * kc // nsub
    pc.r1 = (sub + 1) * kc // nsub
    return pc


cdef void packed_slice_tiles(const real* w, const Py_ssize_t* tap_off, const ConvGrid* grid, Py_ssize_t g,
                             Py_ssize_t ntaps, Py_ssize_t run, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t bpanels,
                             Py_ssize_t npan, Py_ssize_t mc, int MR, int NR, const real** aptr, real** crow,
                             const bint* runs, Py_ssize_t rs, real* bcopy, const real* bias, int clamp) noexcept nogil:
    """igemm_rows's rows m0 .. m0+mc (npan row panels) x column panels j0 .. j1-1, the filter w packed piece
    by piece into bcopy (room for COPY_PIECE_ROWS rows of bpanels panels), every reduction step, bias and clamp
    with the last."""
    cdef Py_ssize_t nchunks = reduction_chunks(ntaps, grid.cin), nu = ntaps // run
    cdef Py_ssize_t kcmax = run * (grid.cin // nchunks + 1)
    cdef Py_ssize_t nsub = (kcmax + COPY_PIECE_ROWS - 1) // COPY_PIECE_ROWS
    cdef Py_ssize_t nranges = (j1 - j0 + bpanels - 1) // bpanels
    cdef Py_ssize_t npieces = nchunks * nranges * nu * nsub, k, kc, j, p, r, ntile, ntiles, nrows = 0, nbytes = 0
    cdef SlicePiece pc = slice_piece(0, nsub, nu, nranges, nchunks, grid.cin, run, j0, j1, bpanels), nx
    cdef const real* nxt
    cdef bint last
    for k in range(npieces):
        kc = pc.r1 - pc.r0
        pack_slice_panels(w + tap_off[pc.u * run] + (pc.c0 + pc.r0) * grid.Cd + g * grid.cout + pc.jb * NR, grid.Cd,
                          kc, pc.je - pc.jb, NR, bcopy)
        nxt = NULL
        if k + 1 < npieces:
            nx = slice_piece(k + 1, nsub, nu, nranges, nchunks, grid.cin, run, j0, j1, bpanels)
            nxt = w + tap_off[nx.u * run] + (nx.c0 + nx.r0) * grid.Cd + g * grid.cout + nx.jb * NR
            nrows = nx.r1 - nx.r0
            nbytes = (nx.je - nx.jb) * NR * sizeof(real)
        last = pc.q == nchunks - 1 and pc.u == nu - 1 and k % nsub == nsub - 1
        ntile = 0
        ntiles = (pc.je - pc.jb) * npan
        for j in range(pc.jb, pc.je):
            for p in range(npan):
                if nxt != NULL:     # the next piece's rows, a share after each tile
                    for r in range(ntile * nrows // ntiles, (ntile + 1) * nrows // ntiles):
                        kc_prefetch_l2(nxt + r * grid.Cd, nbytes)
                ntile = ntile + 1
                filter_row_tile(runs[p], <int> kc, &aptr[(p * nu + pc.u) * MR], pc.c0 + pc.r0, rs,
                                bcopy + (j - pc.jb) * kc * NR, NR, &crow[p * MR], j * NR,
                                <int> (mc - p * MR if mc - p * MR < MR else MR), NR,
                                pc.q > 0 or pc.u > 0 or pc.r0 > 0, bias + j * NR if last and bias != NULL else NULL,
                                clamp if last else 0, grid.narrow)
        if nxt != NULL:
            pc = nx


cdef inline void filter_row_tile(bint run_tile, int kc, const real** a, Py_ssize_t c0, Py_ssize_t rs,
                                 const real* b, Py_ssize_t ldb, real** c, Py_ssize_t col, int mr, int NR,
                                 bint accumulate, const real* bias, int clamp, bint narrow) noexcept nogil:
    """One row tile of igemm_rows's in-place-filter path: the run tile (rows one run of pixels) or the
    pointer-table tile, B's rows ldb apart."""
    if run_tile:
        igemm_tile_run(1, kc, a, c0, rs, b, ldb, c, col, mr, NR, accumulate, bias, clamp, narrow)
    else:
        igemm_tile_final(1, kc, a, c0, 1, b, ldb, c, col, mr, NR, accumulate, bias, clamp, narrow)


cdef inline void transpose_tail(const real* bq, int NR, Py_ssize_t red, int nr, real* wtail) noexcept nogil:
    """A panel's first nr filters (red reduction rows of NR values) transposed into wtail, for fwd_tail."""
    cdef Py_ssize_t i, t
    for i in range(red):
        for t in range(nr):
            wtail[t * red + i] = bq[i * NR + t]


cdef inline void packed_tile(const real** aptr, real** crow, bint run_tile, int nu, int kc, Py_ssize_t c0,
                             Py_ssize_t rs, const real* bq, int NR, Py_ssize_t j, int mr, int nr, bint accumulate,
                             const real* bias, int clamp, bint narrow, const real* wtail,
                             Py_ssize_t ldw) noexcept nogil:
    """One row panel x column panel j of igemm_rows's packed-filter path, one reduction chunk: the run tile,
    the pointer-table tile, or (wtail not NULL) the transposed tail."""
    if wtail != NULL:
        fwd_tail(nu, kc, aptr, c0, rs, run_tile, wtail, ldw, crow, j * NR, mr, nr, accumulate, bias, clamp)
    elif run_tile:
        igemm_tile_run(nu, kc, aptr, c0, rs, bq, NR, crow, j * NR, mr, nr, accumulate, bias, clamp, narrow)
    else:
        igemm_tile_final(nu, kc, aptr, c0, 1, bq, NR, crow, j * NR, mr, nr, accumulate, bias, clamp, narrow)


cdef inline void in_place_tile(const real** aptr, real** crow, bint run_tile, int nu, int MR, Py_ssize_t run, int kc,
                               Py_ssize_t c0, Py_ssize_t rs, const real* w, const Py_ssize_t* tap_off,
                               Py_ssize_t col0, Py_ssize_t Cd, Py_ssize_t j, int NR, int mr, bint accumulate,
                               bint last_chunk, const real* bias, int clamp, bint narrow) noexcept nogil:
    """One row panel x column panel j of igemm_rows's in-place-filter path, one reduction chunk (its
    channels c0 .. c0 + kc / run): the taps one after another, bias and clamp with the last chunk's last."""
    cdef Py_ssize_t u
    cdef bint last
    for u in range(nu):     # filter rows of tap u*run on: run x cin rows, Cd apart
        last = last_chunk and u == nu - 1
        filter_row_tile(run_tile, kc, &aptr[u * MR], c0, rs,
                        w + tap_off[u * run] + c0 * Cd + col0 + j * NR, Cd, crow, j * NR, mr, NR,
                        accumulate or u > 0, bias + j * NR if last and bias != NULL else NULL,
                        clamp if last else 0, narrow)


cdef inline void prefetch_next_panel(real** crow, Py_ssize_t p, Py_ssize_t npan, int MR, Py_ssize_t mc,
                                     Py_ssize_t col, Py_ssize_t ncols) noexcept nogil:
    """Asks for the output rows of row panel p + 1 (columns col .. col + ncols), to be written next: with the
    row panels outer their stores otherwise wait on reads for ownership once the output outgrows the cache
    (one core, Zen 4, numpy API: 1x1 48x48 16 -> 96 batch 16 1.7-2.1 -> 1.4-1.8 ms)."""
    cdef Py_ssize_t r, end = (p + 2) * MR if (p + 2) * MR < mc else mc
    if p + 1 < npan:
        for r in range((p + 1) * MR, end):
            kc_prefetch_write_l2(crow[r] + col, ncols * sizeof(real))


cdef void igemm_rows(const real* src, real* dst, const ConvGrid* grid, const Py_ssize_t* tap_h,
                     const Py_ssize_t* tap_w, Py_ssize_t ntaps, const real* panels, const real* zeros,
                     const Epilogue* ep, Py_ssize_t g, Py_ssize_t m0, Py_ssize_t mc, Py_ssize_t MC,
                     const real** aptr, real** crow, real* apack, const real** prow,
                     const real* w, const Py_ssize_t* tap_off, Py_ssize_t run, real* edge,
                     Py_ssize_t j0, Py_ssize_t j1, real* bcopy, Py_ssize_t bpanels, real* wtail, real* rows,
                     Py_ssize_t rows_len) noexcept nogil:
    """GEMM rows m0 .. m0+mc (mc <= MC) of group g, column panels j0 .. j1-1: every reduction chunk, then
    the epilogue. apack / prow are the few-channel path's buffers (MC x taps*cin, MR), NULL to not use it.
    With w (not NULL), B is the forward filter read in place (tap t, channel c: the row at w + tap_off[t]
    + c * Cd, whole panels of output channels), one micro-kernel call per tap; panels is then unused.
    Bias with relu / relu6 / no activation is applied in registers on the last chunk; any other activation
    after the rows are stored. run: taps merged into one pointer (merged_run; 1: none), edge: room for
    index_tile_rows's zero-padded copies (NULL when run is 1). bcopy (w only, or NULL): room for a piece
    (COPY_PIECE_ROWS rows) of a tap's slice of bpanels column panels, packed there before the row tiles read
    it (COPY_FILTER_STRIDE, packed_slice_tiles). wtail (packed panels only, or NULL): room for the last panel's
    filters transposed (TAIL_COLS x one chunk's reduction), where a last panel of at most TAIL_COLS filters
    runs on fwd_tail. rows / rows_len: room for the block's padded source rows (row_cache_values), or NULL."""
    cdef int MR = shape_rows(dst, grid.narrow)
    cdef int NR = shape_cols(dst, grid.narrow)
    cdef Py_ssize_t ncolp = (grid.cout + NR - 1) // NR
    cdef Py_ssize_t nchunks = reduction_chunks(ntaps, grid.cin)
    cdef bint packed = apack != NULL
    cdef Py_ssize_t red = ntaps * grid.cin
    cdef Py_ssize_t npan = (mc + MR - 1) // MR
    cdef Py_ssize_t q, c0, kc, j, p, i, t, u, nu, jb, je
    cdef int mr, nr
    cdef bint last, use_tail, rows_outer
    cdef Py_ssize_t jo
    cdef const real* bq
    cdef bint in_tile = ep != NULL and ep.z0 == NULL and (ep.act == ACT_LINEAR or ep.act == ACT_RELU or
                                                          ep.act == ACT_RELU6)
    cdef const real* bias = (<const real*> ep.bias + g * grid.cout if ep.bias != NULL else NULL) if in_tile else NULL
    cdef int clamp = (1 if ep.act == ACT_RELU else 2 if ep.act == ACT_RELU6 else 0) if in_tile else 0
    # one reduction chunk, every tile's rows final when stored: an output larger than the caches is streamed
    cdef int stream = KC_CLAMP_STREAM if (nchunks == 1 and (ep == NULL or in_tile) and grid.N * grid.Qh * grid.Qw
                                          * grid.groups * grid.cout * sizeof(real) >= STREAM_OUTPUT_BYTES) else 0
    cdef Py_ssize_t rs = grid.step_w * grid.Cs     # source values between consecutive pixels of a row
    cdef bint runs[PANELS_PER_BLOCK]               # panel p takes the run tile (index_panels)
    if packed:      # A^T packed along pixels (pack_taps_by_pixels), read by the tile with a stride of MC
        pack_taps_by_pixels(src, grid, tap_h, tap_w, ntaps, g, m0, mc, MC, apack)
        dst_rows(dst, grid, g, m0, mc, crow)
        for p in range(npan):
            mr = <int> (mc - p * MR if mc - p * MR < MR else MR)
            for i in range(MR):         # rows past the block's end repeat its first row, never stored
                prow[i] = apack + p * MR + (i if i < mr else 0)
            for j in range(j0, j1):
                nr = <int> (grid.cout - j * NR if grid.cout - j * NR < NR else NR)
                igemm_tile_final(1, <int> red, prow, 0, MC, panels + (g * ncolp + j) * red * NR, NR,
                                 &crow[p * MR], j * NR, mr, nr, 0, bias + j * NR if bias != NULL else NULL,
                                 clamp, grid.narrow)
    elif w != NULL and bcopy != NULL and npan > 1:      # the filter packed slice by slice, then every row tile
        index_panels(src, dst, grid, tap_h, tap_w, ntaps, run, g, m0, mc, MR, zeros, aptr, crow, edge, runs,
                     rows, rows_len)
        packed_slice_tiles(w, tap_off, grid, g, ntaps, run, j0, j1, bpanels, npan, mc, MR, NR, aptr, crow, runs, rs,
                           bcopy, bias, clamp)
    elif w != NULL:
        index_panels(src, dst, grid, tap_h, tap_w, ntaps, run, g, m0, mc, MR, zeros, aptr, crow, edge, runs,
                     rows, rows_len)
        nu = ntaps // run
        for q in range(nchunks):
            c0 = chunk_start(q, nchunks, grid.cin)
            kc = (chunk_start(q + 1, nchunks, grid.cin) - c0) * run
            if nchunks == 1:
                # row panels outer, as the packed path below, while the filter rows fit L1
                rows_outer = (j1 - j0) * nu * kc * NR * sizeof(real) <= ROW_PANELS_OUTER_BYTES
                for jo in range(1 if rows_outer else j1 - j0):
                    jb = j0 if rows_outer else j0 + jo     # this pass's column panels jb .. je-1
                    je = j1 if rows_outer else jb + 1
                    for p in range(npan):
                        if not stream:      # (lines about to be streamed are not read first)
                            prefetch_next_panel(crow, p, npan, MR, mc, jb * NR, (je * NR if je * NR < grid.cout
                                                                                 else grid.cout) - jb * NR)
                        for j in range(jb, je):
                            in_place_tile(&aptr[p * nu * MR], &crow[p * MR], runs[p], <int> nu, MR, run, <int> kc,
                                          c0, rs, w, tap_off, g * grid.cout, grid.Cd, j, NR,
                                          <int> (mc - p * MR if mc - p * MR < MR else MR), False, True, bias,
                                          clamp | stream, grid.narrow)
                continue
            for j in range(j0, j1):                 # a row tile's taps one after another (its C tile hot)
                for p in range(npan):
                    in_place_tile(&aptr[p * nu * MR], &crow[p * MR], runs[p], <int> nu, MR, run, <int> kc, c0, rs,
                                  w, tap_off, g * grid.cout, grid.Cd, j, NR,
                                  <int> (mc - p * MR if mc - p * MR < MR else MR), q > 0, q == nchunks - 1, bias,
                                  clamp, grid.narrow)
    else:
        index_panels(src, dst, grid, tap_h, tap_w, ntaps, run, g, m0, mc, MR, zeros, aptr, crow, edge, runs,
                     rows, rows_len)
        nu = ntaps // run
        for q in range(nchunks):
            c0 = chunk_start(q, nchunks, grid.cin)
            kc = chunk_start(q + 1, nchunks, grid.cin) - c0
            last = q == nchunks - 1
            # (the transposed tail takes every panel of at most TAIL_COLS filters: only the last, except on
            # the narrowest vectors, where whole panels qualify and keep the order below)
            if nchunks == 1 and not (wtail != NULL and NR <= TAIL_COLS):
                # One reduction chunk: each row panel's pixels get all their columns one after another, so
                # the output is written in order, whole pixels at a time (a 1x1 16 -> 96 layer writes 6x
                # what it reads; column panels outer wrote it in 128-byte pieces of each pixel, three passes)
                nr = <int> (grid.cout - (j1 - 1) * NR if grid.cout - (j1 - 1) * NR < NR else NR)
                use_tail = wtail != NULL and nr <= TAIL_COLS
                if use_tail:
                    transpose_tail(panels + ((g * ncolp + j1 - 1) * grid.cin + c0) * ntaps * NR, NR,
                                   ntaps * kc, nr, wtail)
                rows_outer = (j1 - j0) * ntaps * kc * NR * sizeof(real) <= ROW_PANELS_OUTER_BYTES
                for jo in range(1 if rows_outer else j1 - j0):
                    jb = j0 if rows_outer else j0 + jo     # this pass's column panels jb .. je-1
                    je = j1 if rows_outer else jb + 1
                    for p in range(npan):
                        if not stream:      # (lines about to be streamed are not read first)
                            prefetch_next_panel(crow, p, npan, MR, mc, jb * NR, (je * NR if je * NR < grid.cout
                                                                                 else grid.cout) - jb * NR)
                        for j in range(jb, je):
                            packed_tile(&aptr[p * nu * MR], &crow[p * MR], runs[p], <int> nu, <int> (kc * run), c0,
                                        rs, panels + ((g * ncolp + j) * grid.cin + c0) * ntaps * NR, NR, j,
                                        <int> (mc - p * MR if mc - p * MR < MR else MR),
                                        <int> (grid.cout - j * NR if grid.cout - j * NR < NR else NR), False,
                                        bias + j * NR if bias != NULL else NULL,
                                        clamp if use_tail and j == j1 - 1 else clamp | stream, grid.narrow,
                                        wtail if use_tail and j == j1 - 1 else NULL, ntaps * kc)
                continue
            for j in range(j0, j1):
                nr = <int> (grid.cout - j * NR if grid.cout - j * NR < NR else NR)
                use_tail = wtail != NULL and nr <= TAIL_COLS
                if use_tail:
                    transpose_tail(panels + ((g * ncolp + j) * grid.cin + c0) * ntaps * NR, NR, ntaps * kc, nr,
                                   wtail)
                for p in range(npan):
                    packed_tile(&aptr[p * nu * MR], &crow[p * MR], runs[p], <int> nu, <int> (kc * run), c0,
                                rs, panels + ((g * ncolp + j) * grid.cin + c0) * ntaps * NR, NR, j,
                                <int> (mc - p * MR if mc - p * MR < MR else MR), nr, q > 0,
                                bias + j * NR if last and bias != NULL else NULL, clamp if last else 0,
                                grid.narrow, wtail if use_tail else NULL, ntaps * kc)
    if ep != NULL and not in_tile:
        c0 = j0 * NR
        kc = (j1 * NR if j1 * NR < grid.cout else grid.cout) - c0      # the columns this call computed
        for p in range(mc):
            apply_epilogue(crow[p] + c0, kc,
                           <const real*> ep.bias + g * grid.cout + c0 if ep.bias != NULL else NULL, ep)


cdef inline bint few_channels(Py_ssize_t ntaps, Py_ssize_t cin) noexcept nogil:
    """One channel per tap (a grey first layer): the taps are copied along pixels, so the micro-kernel runs
    one long reduction instead of a 1-long one per tap. From 2 channels up the pointer tables win now that
    they are cheap (measured, one core: C = 3 -> 16 3x3 23 -> 37 GFLOP/s, C = 8 -> 32 47 -> 102, RGB 7x7/2
    58 -> 101; C = 1 5x5 51 packed against 37); at C = 1 3x3 the two tie. Where merged_run merges the taps
    of a kernel row it beats this copy too (one core, AVX-512: C = 1 3x3 29 -> 37 GFLOP/s, 5x5 49 -> 55,
    7x7 level), so callers take this path only where no run merges (dilated kernels)."""
    return reduction_chunks(ntaps, cin) == 1 and ntaps > 1 and cin == 1


# Row blocks are the GEMM's tasks. A layer of few output pixels (a late layer at batch 1-8: 7x7 at batch 1 is
# 49 rows, one block) has fewer blocks than threads; then each block's column panels are cut into ranges,
# each a task of its own, so every thread works and each reads only its slice of the filter. A task of a
# block computes every reduction step of its columns, so results do not depend on the cut. Four ranges a
# thread balance the threads when calls overlap; where a task packs its filter slices from memory (one block,
# rows >= 1 KB apart) one range a thread streams longer pieces of each row: numpy API, 2-CPU Zen 5, two
# threads, filters in memory, three alternating runs: 1x1 1x7x7x2048 -> 512 0.44-0.46 -> 0.40-0.42 ms, 3x3
# 1x7x7x512 0.92-0.95 -> 0.88-0.89.
# A one-chunk GEMM (igemm_rows) whose output is at least this large stores its final tiles with streaming
# stores (microkernel.h, KC_CLAMP_STREAM): a line written whole need not be read for ownership first, a third
# of such a layer's memory traffic. In graph, 2-CPU Zen 5, two alternating runs each: 1x1 8x56x56x64 -> 256
# forward (25.7 MB out) 2.72 / 2.84 -> 2.36 / 2.52 ms. Smaller outputs may still be in L3 for the next op.
cdef enum:
    STREAM_OUTPUT_BYTES = 16 << 20
# A one-chunk GEMM's row panels take all their column panels one after another (whole pixels written in
# order) only while those panels' filter rows fit L1 together; past that, each column panel takes every row
# panel of the block in turn, its filter rows kept in L1 (Zen 4/5: 48 KB, Zen 3: 32 KB). Row panels outer
# re-read every panel from L2 for each row tile: 1x1 8x56x56 input gradient 256 -> 64 (two 32 KB panels),
# numpy API, 2-CPU Zen 5, inputs from memory: 4.5 -> 3.5 ms on one thread, 2.44 -> 1.96 on two.
cdef enum:
    ROW_PANELS_OUTER_BYTES = 24 << 10

cdef enum:
    COLUMN_SPLIT_TASKS_PER_THREAD = 4
    COLUMN_SPLIT_TASKS_PACKED = 1


cdef enum:
    BALANCED_BLOCKS_PER_THREAD = 8


cdef inline Py_ssize_t balanced_blocks(Py_ssize_t npanels, Py_ssize_t groups, int n_threads) noexcept nogil:
    """Row blocks of at most PANELS_PER_BLOCK row panels, as many as a whole number of rounds of tasks when
    there are few: 4 blocks of 16, 16, 16 and 1 panels (14x14 at batch 2) kept one thread on twice the other's
    rows; cut into 4 of 13, 12, 12 and 12 the two threads get 25 and 24. Blocks only divide the rows (each
    row's reduction runs the same), so they may follow the thread count."""
    cdef Py_ssize_t nblocks = (npanels + PANELS_PER_BLOCK - 1) // PANELS_PER_BLOCK, tasks
    tasks = groups * nblocks
    if n_threads > 1 and nblocks > 1 and tasks < BALANCED_BLOCKS_PER_THREAD * n_threads and tasks % n_threads:
        tasks = (tasks + n_threads - 1) // n_threads * n_threads
        nblocks = (tasks + groups - 1) // groups
        nblocks = npanels if nblocks > npanels else nblocks
    return nblocks


cdef inline Py_ssize_t column_ranges(Py_ssize_t row_tasks, Py_ssize_t ncolp, int n_threads,
                                     int per_thread) noexcept nogil:
    """Column ranges per row block: 1 when the blocks alone give every thread two tasks, else enough for
    per_thread tasks per thread, at most one per column panel."""
    cdef Py_ssize_t want
    if n_threads <= 1 or row_tasks >= 2 * n_threads:
        return 1
    want = (per_thread * n_threads + row_tasks - 1) // row_tasks
    return want if want < ncolp else ncolp


cdef int igemm_conv(const real* src, real* dst, ConvGrid grid,
                    const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, Py_ssize_t ntaps,
                    const real* panels, const real* zeros, const Epilogue* ep, int n_threads,
                    const real* w=NULL, const Py_ssize_t* tap_off=NULL) noexcept nogil:
    """Returns 0, or -1 when the per-thread pointer tables cannot be allocated. With an epilogue, each
    task's rows get bias and activation as soon as they are complete, while still in cache. w / tap_off:
    the filter read in place instead of panels (igemm_rows)."""
    cdef int MR = shape_rows(dst, grid.narrow)
    cdef Py_ssize_t M = grid.N * grid.Qh * grid.Qw
    cdef Py_ssize_t npanels = (M + MR - 1) // MR
    cdef Py_ssize_t nblocks = balanced_blocks(npanels, grid.groups, n_threads)
    cdef Py_ssize_t MC = (npanels + nblocks - 1) // nblocks * MR      # the largest block's rows
    cdef Py_ssize_t a_len = MC * (ntaps if ntaps > 0 else 1)
    cdef Py_ssize_t run = merged_run(&grid, tap_h, tap_w, ntaps)
    cdef bint packed = run == 1 and few_channels(ntaps, grid.cin)
    cdef Py_ssize_t red = ntaps * grid.cin
    cdef Py_ssize_t task, g, m0, mc, tid, b, cs
    cdef Py_ssize_t ncolp = (grid.cout + shape_cols(dst, grid.narrow) - 1) // shape_cols(dst, grid.narrow)
    cdef bint slices = w != NULL and nblocks == 1 and grid.Cd * sizeof(real) >= COPY_FILTER_STRIDE
    cdef Py_ssize_t nsplit = column_ranges(grid.groups * nblocks, ncolp, n_threads,
                                           COLUMN_SPLIT_TASKS_PACKED if slices else COLUMN_SPLIT_TASKS_PER_THREAD)
    cdef Py_ssize_t ntasks = grid.groups * nblocks * nsplit
    n_threads = loop_threads(ntasks, SERIAL_PHASE_VALUES, n_threads)   # no helper without a task
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, a_len, sizeof(real*))
    cdef real** crow_all = <real**> thread_arrays(n_threads, MC, sizeof(real*))
    cdef Py_ssize_t mred_stride = thread_stride(MC * red, sizeof(real))     # apack's and edge's
    cdef real* apack_all = <real*> scratch_calloc(n_threads * mred_stride * sizeof(real)) if packed else NULL
    cdef const real** prow_all = <const real**> thread_arrays(n_threads, MR, sizeof(real*)) if packed else NULL
    cdef real* edge_all = <real*> scratch_alloc(n_threads * mred_stride * sizeof(real)) if run > 1 else NULL
    # one block: a task's column range per slice, within a piece's bytes; blocks that share the filter: a panel
    cdef Py_ssize_t bpanels = ncolp // nsplit + 1 if nblocks == 1 else 1
    if bpanels * COPY_PIECE_ROWS * shape_cols(dst, grid.narrow) * sizeof(real) > copy_piece_bytes():
        bpanels = copy_piece_bytes() // (COPY_PIECE_ROWS * shape_cols(dst, grid.narrow) * sizeof(real))
    cdef Py_ssize_t bcopy_len = COPY_PIECE_ROWS * bpanels * shape_cols(dst, grid.narrow) \
        if w != NULL and grid.Cd * sizeof(real) >= (
            COPY_FILTER_STRIDE if nblocks == 1 else COPY_PANEL_STRIDE) else 0
    cdef real* bcopy_all = <real*> scratch_alloc(n_threads * thread_stride(bcopy_len, sizeof(real)) * sizeof(real)) \
        if bcopy_len > 0 else NULL
    # the last panel's few filters transposed, one chunk's reduction (fwd_tail; packed panels, wide tile)
    cdef Py_ssize_t last_cols = grid.cout - (ncolp - 1) * shape_cols(dst, grid.narrow)
    cdef Py_ssize_t wtail_len = TAIL_COLS * ntaps * (grid.cin // reduction_chunks(ntaps, grid.cin) + 1) \
        if real is float and w == NULL and not packed and not grid.narrow and last_cols <= TAIL_COLS else 0
    cdef real* wtail_all = <real*> scratch_alloc(n_threads * thread_stride(wtail_len, sizeof(real)) * sizeof(real)) \
        if wtail_len > 0 else NULL
    cdef Py_ssize_t rows_len = row_cache_values(&grid, ntaps, run, MR) if real is float else 0
    cdef real* rows_all = <real*> scratch_alloc(n_threads * thread_stride(rows_len, sizeof(real)) * sizeof(real)) \
        if rows_len > 0 else NULL
    if (aptr_all == NULL or crow_all == NULL or (packed and (apack_all == NULL or prow_all == NULL))
            or (run > 1 and edge_all == NULL) or (bcopy_len > 0 and bcopy_all == NULL)
            or (wtail_len > 0 and wtail_all == NULL) or (rows_len > 0 and rows_all == NULL)):
        scratch_free(rows_all)
        scratch_free(wtail_all)
        scratch_free(bcopy_all)
        free(aptr_all)
        free(crow_all)
        scratch_free(apack_all)
        free(prow_all)
        scratch_free(edge_all)
        return -1
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    with parallel(num_threads=n_threads):
        tid = threadid()
        while True:
            task = next_task(&next_t, ntasks, tid, n_threads)
            if task >= ntasks:
                break
            b = task // nsplit                  # a row block of one group ...
            cs = task - b * nsplit              # ... and one of its column ranges
            g = b // nblocks
            m0 = (b - g * nblocks) * npanels // nblocks * MR        # block b: panels b * npanels // nblocks ..
            mc = ((b - g * nblocks + 1) * npanels // nblocks) * MR - m0
            mc = M - m0 if M - m0 < mc else mc
            igemm_rows(src, dst, &grid, tap_h, tap_w, ntaps, panels, zeros, ep, g, m0, mc, MC,
                       aptr_all + tid * thread_stride(a_len, sizeof(real*)),
                       crow_all + tid * thread_stride(MC, sizeof(real*)),
                       apack_all + tid * mred_stride if packed else NULL,
                       prow_all + tid * thread_stride(MR, sizeof(real*)) if packed else NULL, w, tap_off, run,
                       edge_all + tid * mred_stride if run > 1 else NULL,
                       ncolp * cs // nsplit, ncolp * (cs + 1) // nsplit,
                       bcopy_all + tid * thread_stride(bcopy_len, sizeof(real)) if bcopy_len > 0 else NULL,
                       bpanels, wtail_all + tid * thread_stride(wtail_len, sizeof(real)) if wtail_len > 0 else NULL,
                       rows_all + tid * thread_stride(rows_len, sizeof(real)) if rows_len > 0 else NULL, rows_len)
        kc_store_fence()        # streamed rows reach memory before the team's end
    scratch_free(rows_all)
    free(aptr_all)
    free(crow_all)
    scratch_free(apack_all)
    free(prow_all)
    scratch_free(edge_all)
    scratch_free(bcopy_all)
    scratch_free(wtail_all)
    return 0


cdef struct Phase:
    Py_ssize_t rh, rw, qh, qw      # input pixels rh + qh*stride_h (and w): a grid of qh x qw
    Py_ssize_t t0, nt              # its taps: phase_taps[t0 .. t0 + nt)


cdef int igemm_conv_phases(const real* src, real* dst, ConvGrid grid, const Phase* phases, Py_ssize_t nphases,
                           const Py_ssize_t* tap_h, const Py_ssize_t* tap_w, const real* panels,
                           const Py_ssize_t* panel_off, const real* zeros, const Epilogue* ep,
                           int n_threads) noexcept nogil:
    """The input gradient of a strided convolution: igemm_conv over every stride phase (phase ph reads taps
    t0 .. t0+nt of tap_h / tap_w and panels + panel_off[ph]), in one parallel loop whose task is a band of
    destination rows in every phase. So each task owns its pixels of dst (phases interleave pixel by pixel:
    run one after another they would pass cache lines between the cores) and one team runs the whole pass.
    Returns 0, or -1 when the per-thread tables cannot be allocated."""
    cdef int MR = shape_rows(dst, grid.narrow)
    cdef Py_ssize_t MC = MR * PANELS_PER_BLOCK
    cdef Py_ssize_t ph, max_qh = 0, max_qw = 0, max_nt = 1, max_red = 0, max_merged = 0, wtail_len = 0
    cdef Py_ssize_t rows_len = 0
    cdef Py_ssize_t ncw, bands, task, g, rest, n, q, cw, m0, mc, tid, t0, nt
    cdef Py_ssize_t ncolp = (grid.cout + shape_cols(dst, grid.narrow) - 1) // shape_cols(dst, grid.narrow)
    cdef bint tail = (real is float and not grid.narrow
                      and grid.cout - (ncolp - 1) * shape_cols(dst, grid.narrow) <= TAIL_COLS)
    cdef ConvGrid pg
    cdef Py_ssize_t* runs = <Py_ssize_t*> malloc((nphases + 1) * sizeof(Py_ssize_t))
    if runs == NULL:
        return -1
    for ph in range(nphases):
        max_qh = phases[ph].qh if phases[ph].qh > max_qh else max_qh
        max_qw = phases[ph].qw if phases[ph].qw > max_qw else max_qw
        max_nt = phases[ph].nt if phases[ph].nt > max_nt else max_nt
        runs[ph] = merged_run(&grid, tap_h + phases[ph].t0, tap_w + phases[ph].t0, phases[ph].nt) \
            if phases[ph].nt > 0 else 1
        if runs[ph] > 1 and phases[ph].nt * grid.cin > max_merged:
            max_merged = phases[ph].nt * grid.cin
        if runs[ph] == 1 and few_channels(phases[ph].nt, grid.cin) and phases[ph].nt * grid.cin > max_red:
            max_red = phases[ph].nt * grid.cin
        if real is float and runs[ph] > 1:   # padded rows for the largest phase's blocks
            pg = grid
            pg.Qh, pg.Qw = phases[ph].qh, phases[ph].qw
            nt = row_cache_values(&pg, phases[ph].nt, runs[ph], MR)
            rows_len = nt if nt > rows_len else rows_len
        if tail and phases[ph].nt > 0:     # the last panel transposed, one chunk's reduction (as igemm_conv)
            nt = TAIL_COLS * phases[ph].nt * (grid.cin // reduction_chunks(phases[ph].nt, grid.cin) + 1)
            wtail_len = nt if nt > wtail_len else wtail_len
    # A band is rows q0 .. q0 + nrow of every phase's grid (nrow > 1 where a row is shorter than a block, so a
    # band's panels run across rows: 28-pixel rows were panels of 8, 8, 8 and 4 pixels, a seventh of the
    # tile idle), or a piece of one long row; at least 4 bands per thread where the rows allow.
    ncw = (max_qw + MC - 1) // MC
    cdef Py_ssize_t nrow = MC // max_qw if max_qw > 0 and max_qw <= MC else 1
    cdef Py_ssize_t nrow_cap = grid.N * max_qh // (4 * n_threads)
    nrow = nrow_cap if nrow_cap < nrow else nrow
    nrow = 1 if nrow < 1 else nrow
    cdef Py_ssize_t bands_per_image = (max_qh + nrow - 1) // nrow
    bands = grid.N * bands_per_image * ncw
    n_threads = loop_threads(grid.groups * bands, SERIAL_PHASE_VALUES, n_threads)   # no helper without a task
    cdef Py_ssize_t a_stride = thread_stride(MC * max_nt, sizeof(real*)), c_stride = thread_stride(MC, sizeof(real*))
    cdef Py_ssize_t pack_stride = thread_stride(MC * max_red, sizeof(real))
    cdef Py_ssize_t edge_stride = thread_stride(MC * max_merged, sizeof(real))
    cdef Py_ssize_t tail_stride = thread_stride(wtail_len, sizeof(real)), rows_stride = thread_stride(rows_len,
                                                                                                     sizeof(real))
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, MC * max_nt, sizeof(real*))
    cdef real** crow_all = <real**> thread_arrays(n_threads, MC, sizeof(real*))
    cdef real* apack_all = <real*> scratch_calloc(n_threads * pack_stride * sizeof(real))
    cdef const real** prow_all = <const real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef real* edge_all = <real*> scratch_alloc(n_threads * edge_stride * sizeof(real))
    cdef real* wtail_all = <real*> scratch_alloc(n_threads * tail_stride * sizeof(real)) if wtail_len > 0 else NULL
    cdef real* rows_all = <real*> scratch_alloc(n_threads * rows_stride * sizeof(real)) if rows_len > 0 else NULL
    if (aptr_all == NULL or crow_all == NULL or apack_all == NULL or prow_all == NULL or edge_all == NULL
            or (wtail_len > 0 and wtail_all == NULL) or (rows_len > 0 and rows_all == NULL)):
        scratch_free(rows_all)
        scratch_free(wtail_all)
        free(aptr_all)
        free(crow_all)
        scratch_free(apack_all)
        free(prow_all)
        scratch_free(edge_all)
        free(runs)
        return -1
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    with parallel(num_threads=n_threads):
        tid = threadid()
        pg = grid
        while True:
            task = next_task(&next_t, grid.groups * bands, tid, n_threads)
            if task >= grid.groups * bands:
                break
            g = task // bands
            rest = task - g * bands
            n = rest // (bands_per_image * ncw)
            rest = rest - n * (bands_per_image * ncw)
            q = (rest // ncw) * nrow
            cw = rest - (rest // ncw) * ncw
            for ph in range(nphases):
                if q >= phases[ph].qh or cw * MC >= phases[ph].qw:
                    continue
                pg.Qh, pg.Qw = phases[ph].qh, phases[ph].qw
                pg.dst_h0, pg.dst_w0 = phases[ph].rh, phases[ph].rw
                t0, nt = phases[ph].t0, phases[ph].nt
                m0 = (n * pg.Qh + q) * pg.Qw + cw * MC
                if nrow > 1:                    # whole rows q .. q + nrow of this phase (ncw is 1)
                    mc = ((q + nrow if q + nrow < pg.Qh else pg.Qh) - q) * pg.Qw
                else:
                    mc = pg.Qw - cw * MC if pg.Qw - cw * MC < MC else MC
                igemm_rows(src, dst, &pg, tap_h + t0, tap_w + t0, nt, panels + panel_off[ph], zeros, ep, g,
                           m0, mc, MC, aptr_all + tid * a_stride, crow_all + tid * c_stride,
                           apack_all + tid * pack_stride if runs[ph] == 1 and few_channels(nt, grid.cin)
                           else NULL,
                           prow_all + tid * thread_stride(MR, sizeof(real*)), NULL, NULL, runs[ph],
                           edge_all + tid * edge_stride, 0, ncolp, NULL, 1,
                           wtail_all + tid * tail_stride if wtail_len > 0 else NULL,
                           rows_all + tid * rows_stride if rows_len > 0 else NULL, rows_len)
        kc_store_fence()
    scratch_free(rows_all)
    scratch_free(wtail_all)
    free(aptr_all)
    free(crow_all)
    scratch_free(apack_all)
    free(prow_all)
    scratch_free(edge_all)
    free(runs)
    return 0

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
# A tile's transforms (input, output, filter and the filter gradient's dY; F(2x2), F(4x4), F(6x6) and their
# 1-D forms) run in registers, one vector of channels at a time, with the matrices as compiled constants
# (microkernel.h, kc_wino_*; an edge tile's padding made there as zeros). They replaced one generic routine
# that applied a matrix read at run time along one axis (73 % of an F(4x4) 16 -> 16 forward, perf, one core).
# The matrices come from kconv._winograd (exact Toom-Cook); tests check the compiled copies against it, and
# each transform against numpy (core.winograd_tile_transform).

# Tiles ahead whose input rows a block asks into L2 while it transforms the current one (prefetch_tile_input).
cdef enum:
    TILE_PREFETCH_AHEAD = 2


cdef inline Py_ssize_t plane_values(Py_ssize_t rows, Py_ssize_t n, Py_ssize_t itemsize) noexcept nogil:
    """Values from one xi plane of transformed tiles (rows of n values) to the next: one cache line more than
    the plane holds. A tile's transform writes (or reads) alpha^2 rows a plane apart; unpadded, from 32
    channels on that stride is a multiple of 4 KB and all alpha^2 rows fall in one L1 set."""
    return rows * n + 64 // itemsize


cdef inline Py_ssize_t panel_plane_values(Py_ssize_t C, Py_ssize_t K, int NR, Py_ssize_t itemsize) noexcept nogil:
    """Values from one xi's packed filter panels (C x K in NR-wide panels) to the next, padded as plane_values:
    the filter transform writes a filter's alpha^2 values a plane apart."""
    return (K + NR - 1) // NR * C * NR + 64 // itemsize


cdef struct WinoGrid:
    Py_ssize_t N, H, W, C           # input (NHWC)
    Py_ssize_t Ho, Wo, K            # output (NHWC)
    Py_ssize_t pad_top, pad_left
    int mh, mw, ah, aw              # output tile and input tile (alpha) per axis
    Py_ssize_t th, tw               # tiles per image along H and W
    Py_ssize_t dw, rw               # dilation along W (1-D kernels; 1 for 2-D) and its residues in use


# A dilated 1-D convolution (dilation d) is d undilated ones, each on every d-th pixel: output w reads
# inputs w - pad + j*d, so the outputs of one residue w mod d read only inputs of one residue. A tile then
# holds mw outputs d apart, its alpha inputs d apart (pixel strides d*C and d*K), and the grid interleaves
# the residues: tile column q covers outputs w0 + i*d with w0 = (q // r) * mw * d + q % r, r = min(d, Wo)
# residues that hold outputs, so neighbouring tiles read neighbouring pixels. Each residue has
# ceil(ceil(Wo / d) / mw) tile columns; near the end of a row some columns hold fewer outputs, or none.

cdef inline Py_ssize_t tile_origin(const WinoGrid* grid, Py_ssize_t tile, Py_ssize_t* h0,
                                   Py_ssize_t* w0) noexcept nogil:
    """The image of `tile`; its first output pixel in (h0, w0)."""
    cdef Py_ssize_t plane = grid.th * grid.tw
    cdef Py_ssize_t n = tile // plane, rem = tile - n * plane
    cdef Py_ssize_t q = rem % grid.tw
    h0[0] = (rem // grid.tw) * grid.mh
    w0[0] = (q // grid.rw) * grid.mw * grid.dw + q % grid.rw
    return n


cdef inline int outputs_across(const WinoGrid* grid, Py_ssize_t w0) noexcept nogil:
    """How many of the tile's mw outputs from column w0 (dw apart) lie inside the output map."""
    cdef Py_ssize_t inside
    if w0 >= grid.Wo:
        return 0
    inside = (grid.Wo - w0 + grid.dw - 1) // grid.dw
    return <int> (inside if inside < grid.mw else grid.mw)


cdef inline int taps_before(Py_ssize_t w0, Py_ssize_t d, int alpha) noexcept nogil:
    """How many of a tile's input pixels w0, w0 + d, ..., w0 + (alpha - 1) d fall left of the image."""
    cdef Py_ssize_t n = (-w0 + d - 1) // d if w0 < 0 else 0
    return <int> (n if n < alpha else alpha)


cdef inline int taps_inside(Py_ssize_t w0, Py_ssize_t d, Py_ssize_t W, int alpha) noexcept nogil:
    """How many of the pixels w0, w0 + d, ..., w0 + (alpha - 1) d lie left of W (the end of the image)."""
    cdef Py_ssize_t n
    if w0 >= W:
        return 0
    n = (W - w0 + d - 1) // d
    return <int> (n if n < alpha else alpha)


cdef inline void transform_filter(const real* src, Py_ssize_t ts, int ah, int aw, int r, real* dst,
                                  Py_ssize_t ds, Py_ssize_t n) noexcept nogil:
    """G g G^T of n r x r filters (r = 3, 5; 1-D: 1 x r, r = 3 .. 7), their taps ts apart and the filters contiguous,
    into dst (values ds apart): microkernel.h, kc_wino_filter*."""
    if real is float:
        if ah == 1:
            if aw == 4:
                kc_wino_filter1_f32_a4(src, ts, dst, ds, n)
            elif aw == 6:
                if r == 4:
                    kc_wino_filter1_f32_a6_m3(src, ts, dst, ds, n)
                elif r == 5:
                    kc_wino_filter1_f32_a6_m2(src, ts, dst, ds, n)
                else:
                    kc_wino_filter1_f32_a6(src, ts, dst, ds, n)
            elif r == 4:
                kc_wino_filter1_f32_a8_m5(src, ts, dst, ds, n)
            elif r == 5:
                kc_wino_filter1_f32_a8_m4(src, ts, dst, ds, n)
            elif r == 6:
                kc_wino_filter1_f32_a8_m3(src, ts, dst, ds, n)
            elif r == 7:
                kc_wino_filter1_f32_a8_m2(src, ts, dst, ds, n)
            else:
                kc_wino_filter1_f32_a8(src, ts, dst, ds, n)
        elif aw == 4:
            kc_wino_filter_f32_a4(src, ts, dst, ds, n)
        elif aw == 6:
            if r == 5:
                kc_wino_filter_f32_a6_m2(src, ts, dst, ds, n)
            else:
                kc_wino_filter_f32_a6(src, ts, dst, ds, n)
        elif r == 5:
            kc_wino_filter_f32_a8_m4(src, ts, dst, ds, n)
        else:
            kc_wino_filter_f32_a8(src, ts, dst, ds, n)
    else:
        if ah == 1:
            if aw == 4:
                kc_wino_filter1_f64_a4(src, ts, dst, ds, n)
            elif aw == 6:
                if r == 4:
                    kc_wino_filter1_f64_a6_m3(src, ts, dst, ds, n)
                elif r == 5:
                    kc_wino_filter1_f64_a6_m2(src, ts, dst, ds, n)
                else:
                    kc_wino_filter1_f64_a6(src, ts, dst, ds, n)
            elif r == 4:
                kc_wino_filter1_f64_a8_m5(src, ts, dst, ds, n)
            elif r == 5:
                kc_wino_filter1_f64_a8_m4(src, ts, dst, ds, n)
            elif r == 6:
                kc_wino_filter1_f64_a8_m3(src, ts, dst, ds, n)
            elif r == 7:
                kc_wino_filter1_f64_a8_m2(src, ts, dst, ds, n)
            else:
                kc_wino_filter1_f64_a8(src, ts, dst, ds, n)
        elif aw == 4:
            kc_wino_filter_f64_a4(src, ts, dst, ds, n)
        elif aw == 6:
            if r == 5:
                kc_wino_filter_f64_a6_m2(src, ts, dst, ds, n)
            else:
                kc_wino_filter_f64_a6(src, ts, dst, ds, n)
        elif r == 5:
            kc_wino_filter_f64_a8_m4(src, ts, dst, ds, n)
        else:
            kc_wino_filter_f64_a8(src, ts, dst, ds, n)


cdef inline Py_ssize_t filter_block_channels(bint rotate, Py_ssize_t itemsize) noexcept nogil:
    """Input channels of one filter-transform task (filter_panels_block): a block of KC_TRANSPOSE_LANES when the
    filter is turned (float32), else one."""
    return KC_TRANSPOSE_LANES if (rotate and itemsize == 4) else 1


cdef inline Py_ssize_t filter_gather_values(bint rotate, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t K,
                                            Py_ssize_t itemsize) noexcept nogil:
    """A thread's room for filter_panels_block's gathered channels (none unless the filter is turned)."""
    return filter_block_channels(rotate, itemsize) * kh * kw * K if rotate else 0


cdef void filter_panels_block(const real* g, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t C, Py_ssize_t K, int ah,
                              int aw, bint rotate, real* panels, Py_ssize_t b, real* gathered) noexcept nogil:
    """Block b of filter_transform_panels (input channels b*CB .. b*CB+CB-1, CB = filter_block_channels):
    their transformed filters into their places in `panels`; gathered: this thread's filter_gather_values."""
    cdef int NR = tile_cols(panels)
    # Rotated, a channel's filters sit C values apart in g: gathered one by one they took 82-93 us of Kim k6's
    # input gradient (6 x 128 x 100, Zen 5), a serial phase of a 2.3 ms pass on two threads. A block of
    # KC_TRANSPOSE_LANES channels is gathered by register transposes, reading g a vector at a time.
    cdef Py_ssize_t CB = filter_block_channels(rotate, sizeof(real))
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR, A2 = ah * aw, taps = kh * kw
    cdef Py_ssize_t cn = C - b * CB if C - b * CB < CB else CB
    cdef Py_ssize_t r, j, c, t, v, xi, n, ds = panel_plane_values(C, K, NR, sizeof(real))
    cdef const real* src
    cdef const real* row
    cdef real* dst
    if rotate:      # tap t of the turned filter is tap kh*kw-1-t of g, whose channels are (K, C)
        for t in range(taps):
            row = g + (taps - 1 - t) * K * C + b * CB       # row[v * C + r] = channel b*CB + r, filter v
            v = 0
            if real is float and cn == KC_TRANSPOSE_LANES:
                while v + CB <= K:      # gathered[r * taps*K + t*K + v + i] = row[(v + i) * C + r]
                    kc_transpose_block_f32(row + v * C, C, gathered + t * K + v, taps * K)
                    v = v + CB
            while v < K:
                for r in range(cn):
                    gathered[r * taps * K + t * K + v] = row[v * C + r]
                v = v + 1
    for r in range(cn):
        c = b * CB + r
        src = gathered + r * taps * K if rotate else g + c * K
        for j in range(ncolp):
            n = K - j * NR if K - j * NR < NR else NR
            dst = panels + (j * C + c) * NR
            transform_filter(src + j * NR, K if rotate else C * K, ah, aw, <int> kw, dst, ds, n)
            for xi in range(A2):        # the last panel's columns past K are zeros
                for v in range(n, NR):
                    dst[xi * ds + v] = 0


cdef int filter_transform_panels(const real* g, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t C, Py_ssize_t K,
                                 int ah, int aw, bint rotate, real* panels, int n_threads) noexcept nogil:
    """panels[xi * ds + (j * C + c) * NR + v] = (G g G^T)[xi, c, j*NR + v], ds = panel_plane_values(...), for
    the (kh, kw, C, K) filter g (3x3, 5x5, 1 x 3..5), or with rotate for the input gradient's filter, g's
    (kh, kw, K, C) turned by 180 degrees and its channels swapped: the rotation, the transform and the
    micro-kernel's packing in one pass. Returns 0, or -1 when its scratch cannot be allocated. A block of
    input channels at a time, in parallel: each channel's K filters at a tap are contiguous (gathered so first
    when rotated), so the transform runs one vector of filters at a time and stores each panel's NR columns in
    place. (winograd_conv does the same in its own parallel region, before its tiles.)"""
    cdef Py_ssize_t CB = filter_block_channels(rotate, sizeof(real))
    cdef Py_ssize_t nblocks = (C + CB - 1) // CB
    cdef Py_ssize_t per_thread = thread_stride(filter_gather_values(rotate, kh, kw, K, sizeof(real)), sizeof(real))
    cdef Py_ssize_t b
    cdef real* scratch = <real*> scratch_alloc(n_threads * per_thread * sizeof(real))
    cdef real* gathered
    if scratch == NULL:
        return -1
    n_threads = phase_threads(nblocks, C * ah * aw * K, n_threads)
    with parallel(num_threads=n_threads):
        gathered = scratch + threadid() * per_thread
        for b in prange(nblocks, schedule='static'):
            filter_panels_block(g, kh, kw, C, K, ah, aw, rotate, panels, b, gathered)
    scratch_free(scratch)
    return 0


cdef inline void transform_input(const real* src, Py_ssize_t rs, Py_ssize_t cs, int i0, int i1, int j0, int j1,
                                 const WinoGrid* grid, real* dst, Py_ssize_t ds, Py_ssize_t n) noexcept nogil:
    """B^T d B of the patch whose pixel (i0, j0) is at src (rows rs apart, pixels cs apart; read in rows
    i0..i1 and columns j0..j1, zeros elsewhere) into dst (values ds apart), n channels. The tile is alpha x alpha (2-D) or 1 x alpha
    (1-D), alpha = 4, 6, 8: F(2x2), F(4x4), F(6x6) and their 1-D forms, all a 3-wide kernel allows."""
    if real is float:
        if grid.ah == 1:
            if grid.aw == 4:
                kc_wino_in1_f32_a4(src, cs, j0, j1, dst, ds, n)
            elif grid.aw == 6:
                kc_wino_in1_f32_a6(src, cs, j0, j1, dst, ds, n)
            else:
                kc_wino_in1_f32_a8(src, cs, j0, j1, dst, ds, n)
        elif grid.aw == 4:
            kc_wino_in_f32_a4(src, rs, cs, i0, i1, j0, j1, dst, ds, n)
        elif grid.aw == 6:
            kc_wino_in_f32_a6(src, rs, cs, i0, i1, j0, j1, dst, ds, n)
        else:
            kc_wino_in_f32_a8(src, rs, cs, i0, i1, j0, j1, dst, ds, n)
    else:
        if grid.ah == 1:
            if grid.aw == 4:
                kc_wino_in1_f64_a4(src, cs, j0, j1, dst, ds, n)
            elif grid.aw == 6:
                kc_wino_in1_f64_a6(src, cs, j0, j1, dst, ds, n)
            else:
                kc_wino_in1_f64_a8(src, cs, j0, j1, dst, ds, n)
        elif grid.aw == 4:
            kc_wino_in_f64_a4(src, rs, cs, i0, i1, j0, j1, dst, ds, n)
        elif grid.aw == 6:
            kc_wino_in_f64_a6(src, rs, cs, i0, i1, j0, j1, dst, ds, n)
        else:
            kc_wino_in_f64_a8(src, rs, cs, i0, i1, j0, j1, dst, ds, n)


cdef inline int transform_output(const real* src, Py_ssize_t ss, const WinoGrid* grid, real* y, Py_ssize_t yrs,
                                 Py_ssize_t ycs, int rows, int cols, Py_ssize_t n, const real* bias,
                                 int clamp) noexcept nogil:
    """A^T M A of the products at src (values ss apart) into the first rows x cols pixels of y, + bias (or
    NULL) and relu / relu6 (clamp 1 / 2); 1 when one is not finite."""
    if real is float:
        if grid.ah == 1:
            if grid.aw == 4:
                return kc_wino_out1_f32_a4(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.aw == 6:
                if grid.mw == 3:
                    return kc_wino_out1_f32_a6_m3(src, ss, y, ycs, cols, n, bias, clamp)
                if grid.mw == 2:
                    return kc_wino_out1_f32_a6_m2(src, ss, y, ycs, cols, n, bias, clamp)
                return kc_wino_out1_f32_a6(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 5:
                return kc_wino_out1_f32_a8_m5(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 4:
                return kc_wino_out1_f32_a8_m4(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 3:
                return kc_wino_out1_f32_a8_m3(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 2:
                return kc_wino_out1_f32_a8_m2(src, ss, y, ycs, cols, n, bias, clamp)
            return kc_wino_out1_f32_a8(src, ss, y, ycs, cols, n, bias, clamp)
        if grid.aw == 4:
            return kc_wino_out_f32_a4(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
        if grid.aw == 6:
            if grid.mw == 2:        # F(2x2, 5x5)
                return kc_wino_out_f32_a6_m2(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
            return kc_wino_out_f32_a6(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
        if grid.mw == 4:            # F(4x4, 5x5)
            return kc_wino_out_f32_a8_m4(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
        return kc_wino_out_f32_a8(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
    else:
        if grid.ah == 1:
            if grid.aw == 4:
                return kc_wino_out1_f64_a4(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.aw == 6:
                if grid.mw == 3:
                    return kc_wino_out1_f64_a6_m3(src, ss, y, ycs, cols, n, bias, clamp)
                if grid.mw == 2:
                    return kc_wino_out1_f64_a6_m2(src, ss, y, ycs, cols, n, bias, clamp)
                return kc_wino_out1_f64_a6(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 5:
                return kc_wino_out1_f64_a8_m5(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 4:
                return kc_wino_out1_f64_a8_m4(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 3:
                return kc_wino_out1_f64_a8_m3(src, ss, y, ycs, cols, n, bias, clamp)
            if grid.mw == 2:
                return kc_wino_out1_f64_a8_m2(src, ss, y, ycs, cols, n, bias, clamp)
            return kc_wino_out1_f64_a8(src, ss, y, ycs, cols, n, bias, clamp)
        if grid.aw == 4:
            return kc_wino_out_f64_a4(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
        if grid.aw == 6:
            if grid.mw == 2:        # F(2x2, 5x5)
                return kc_wino_out_f64_a6_m2(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
            return kc_wino_out_f64_a6(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
        if grid.mw == 4:            # F(4x4, 5x5)
            return kc_wino_out_f64_a8_m4(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)
        return kc_wino_out_f64_a8(src, ss, y, yrs, ycs, rows, cols, n, bias, clamp)


cdef void input_tile_transform(const real* x, const WinoGrid* grid, Py_ssize_t tile, real* v, Py_ssize_t slot,
                               Py_ssize_t plane) noexcept nogil:
    """v[(a*aw + b) * plane + slot * C + c] = (B^T d B)[a, b, c] for the input patch under `tile`, read in place
    (rows W*C values apart), the padding's zeros made in registers."""
    cdef Py_ssize_t C = grid.C, d = grid.dw, h0, w0
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    h0 -= grid.pad_top
    w0 -= grid.pad_left             # the input pixel under the tile's first tap
    cdef int i0 = <int> (0 if h0 >= 0 else -h0), i1 = <int> (grid.ah if h0 + grid.ah <= grid.H else grid.H - h0)
    cdef int j0 = taps_before(w0, d, grid.aw), j1 = taps_inside(w0, d, grid.W, grid.aw)
    cdef const real* src = x        # never read when no pixel is inside (an empty image padded: x may be NULL)
    if i1 > i0 and j1 > j0:
        src = x + ((n * grid.H + h0 + i0) * grid.W + w0 + j0 * d) * C
    else:
        i0 = i1 = j0 = j1 = 0
    transform_input(src, grid.W * C, d * C, i0, i1, j0, j1, grid, v + slot * C, plane, C)


cdef inline int any_nonfinite(const real* v, Py_ssize_t n) noexcept nogil:
    """1 when v[0:n] holds a NaN or an infinity (x - x is NaN exactly then)."""
    cdef int bad = 0
    cdef Py_ssize_t c
    cdef real t
    for c in range(n):
        t = v[c] - v[c]
        bad |= t != t
    return bad


cdef int output_tile_transform(const real* mprod, const WinoGrid* grid, Py_ssize_t tile, real* y, Py_ssize_t slot,
                               Py_ssize_t plane, const real* bias, int clamp) noexcept nogil:
    """y[tile] = A^T M A, M[a, b, k] = mprod[(a*aw + b) * plane + slot * K + k]; edges cropped; + bias (or NULL)
    and relu / relu6 (clamp 1 / 2) (fused_epilogue).

    Returns 1 when the tile holds a non-finite value: Winograd spreads one over its whole tile, so the
    caller recomputes such a call by direct convolution, which keeps it to the windows that read it."""
    cdef Py_ssize_t K = grid.K, h0, w0
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    cdef Py_ssize_t rows = grid.Ho - h0 if grid.Ho - h0 < grid.mh else grid.mh
    cdef int cols = outputs_across(grid, w0)
    if cols == 0:                   # a dilated row's last residues can have fewer tile columns
        return 0
    return transform_output(mprod + slot * K, plane, grid, y + ((n * grid.Ho + h0) * grid.Wo + w0) * K,
                            grid.Wo * K, grid.dw * K, <int> rows, cols, K, bias, clamp)


cdef inline bint fused_epilogue(const Epilogue* ep) noexcept nogil:
    """Whether the output transform applies the epilogue itself: bias and relu / relu6 (or none); the rest
    takes epilogue_tile after it."""
    return ep == NULL or (ep.z0 == NULL and (ep.act == ACT_LINEAR or ep.act == ACT_RELU or ep.act == ACT_RELU6))


cdef inline void prefetch_tile_input(const real* x, const WinoGrid* grid, Py_ssize_t tile) noexcept nogil:
    """Asks for the image rows under `tile`'s input patch to be brought into L2: a block's input is read for
    the first time tile by tile, and each tile otherwise waits on memory for its patch (16 channels: one
    cache line a pixel)."""
    cdef Py_ssize_t h0, w0, h, d = grid.dw
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    h0 -= grid.pad_top
    w0 -= grid.pad_left
    cdef int j, j0 = taps_before(w0, d, grid.aw), j1 = taps_inside(w0, d, grid.W, grid.aw)
    if n >= grid.N or j1 <= j0:
        return
    for h in range(h0 if h0 > 0 else 0, h0 + grid.ah if h0 + grid.ah < grid.H else grid.H):
        if d == 1:
            kc_prefetch_l2(x + ((n * grid.H + h) * grid.W + w0 + j0) * grid.C, (j1 - j0) * grid.C * sizeof(real))
        else:
            for j in range(j0, j1):
                kc_prefetch_l2(x + ((n * grid.H + h) * grid.W + w0 + j * d) * grid.C, grid.C * sizeof(real))


cdef inline void prefetch_tile_output(real* y, const WinoGrid* grid, Py_ssize_t tile) noexcept nogil:
    """Asks for `tile`'s output rows to be brought into L2 for writing (prefetchw), so that its stores do not
    each wait on a read for ownership. With the input rows two tiles ahead (prefetch_tile_input), same-process
    A/B, caches evicted between calls, one core, Zen 4, F(4x4) forward + bias + relu, ms: 32x32 16 -> 16
    batch 32 1.75 -> 1.50, 16x16 32 -> 32 0.94 -> 0.79, 8x8 64 -> 64 0.83 -> 0.73, 28x28 32 -> 32 batch 64
    5.04 -> 4.64; two threads 1.04 -> 0.90, 0.64 -> 0.57, 0.69 -> 0.62, 2.77 -> 2.63. Prefetching the next
    block's input instead added nothing."""
    cdef Py_ssize_t h0, w0, u, v
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    cdef Py_ssize_t rows = grid.Ho - h0 if grid.Ho - h0 < grid.mh else grid.mh
    cdef int cols = outputs_across(grid, w0)
    for u in range(rows):
        if grid.dw == 1:
            kc_prefetch_write_l2(y + ((n * grid.Ho + h0 + u) * grid.Wo + w0) * grid.K, cols * grid.K * sizeof(real))
        else:
            for v in range(cols):
                kc_prefetch_write_l2(y + ((n * grid.Ho + h0 + u) * grid.Wo + w0 + v * grid.dw) * grid.K,
                                     grid.K * sizeof(real))


cdef void epilogue_tile(real* y, const WinoGrid* grid, Py_ssize_t tile, const Epilogue* ep) noexcept nogil:
    """Bias and activation on the outputs of one tile (its rows' cols pixels, dw pixels apart)."""
    cdef Py_ssize_t h0, w0, u, v
    cdef Py_ssize_t n = tile_origin(grid, tile, &h0, &w0)
    cdef Py_ssize_t rows = grid.Ho - h0 if grid.Ho - h0 < grid.mh else grid.mh
    cdef int cols = outputs_across(grid, w0)
    cdef real* dst
    for u in range(rows):
        dst = y + ((n * grid.Ho + h0 + u) * grid.Wo + w0) * grid.K
        for v in range(cols):
            apply_epilogue(dst + v * grid.dw * grid.K, grid.K, <const real*> ep.bias, ep)


cdef int winograd_conv(const real* x, real* y, WinoGrid grid, real* panels, Py_ssize_t block,
                       const Epilogue* ep, const real* g, Py_ssize_t kh, Py_ssize_t kw, bint rotate,
                       int n_threads) noexcept nogil:
    """y = x * filters (stride 1) with the filters transformed and packed in `panels` (one set of NR-wide
    panels of U[xi] (C x K) per xi). With g (not NULL) the region first writes them there from the filter g
    (kh x kw, turned with rotate: filter_transform_panels), a channel block a task, then runs the tiles once
    every block is done. Returns 0; 1 when y holds a non-finite value; -1 when scratch cannot be allocated."""
    cdef int NR = tile_cols(y)
    # at most one vector of output channels (16 -> 16 layers): the narrow tile, twice the rows, no idle lanes
    cdef bint narrow = 2 * grid.K <= NR
    cdef int MR = shape_rows(y, narrow)
    cdef bint fused = fused_epilogue(ep)
    cdef const real* fbias = <const real*> ep.bias if ep != NULL and fused else NULL
    cdef int clamp = ep.act if ep != NULL and fused else ACT_LINEAR    # relu = 1, relu6 = 2: the clamp codes
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw
    cdef Py_ssize_t tiles = grid.N * grid.th * grid.tw
    # blocks of whole row panels, at most `block` tiles (block // MR panels), as many as a multiple of the
    # threads below
    if block < MR:
        block = MR
    cdef Py_ssize_t rpanels = (tiles + MR - 1) // MR
    cdef Py_ssize_t nblocks = (rpanels + block // MR - 1) // (block // MR)
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR
    cdef Py_ssize_t nchunks = product_chunks(C)
    cdef Py_ssize_t vplane = plane_values(block, C, sizeof(real)), mplane = plane_values(block, K, sizeof(real))
    cdef Py_ssize_t pplane = panel_plane_values(C, K, NR, sizeof(real))
    cdef Py_ssize_t per_thread = A2 * vplane + A2 * mplane       # the block's transformed tiles, products
    cdef Py_ssize_t rows_stride = thread_stride(MR, sizeof(real*)), stride
    cdef Py_ssize_t task, t0, tb, slot, xi, q, c0, kc, j, p, i, row, mr, nr, npan, tid
    # a last column panel of at most TAIL_COLS filters that the half tile would run (100 = 3 x 32 + 4) runs
    # on the transposed tail: Kim k6 forward (F(3,6)), one thread, 4.98 -> 4.67 ms (Zen 5, numpy API)
    cdef Py_ssize_t tail_nr = K - (ncolp - 1) * NR
    cdef bint use_tail = real is float and not narrow and tail_nr <= TAIL_COLS and 2 * tail_nr <= NR
    cdef Py_ssize_t wtail_len = TAIL_COLS * C if use_tail else 0
    cdef real* wtail
    cdef int nonfinite_seen[1]
    cdef real* scratch
    n_threads = loop_threads(nblocks, SERIAL_PHASE_VALUES, n_threads)    # no idle helper woken for nothing
    # As many blocks as a multiple of the threads: Kim k6's input gradient had 67 blocks of 8 panels, and one
    # of its two threads ran one block (~66 us) more than the other (uprobes on the region: the threads left
    # it 54 us apart, median). Which block a tile falls in never changes its result.
    if n_threads > 1 and nblocks % n_threads:
        nblocks += n_threads - nblocks % n_threads
        if nblocks > rpanels:
            nblocks = rpanels
    # The filters' transform in the tiles' region: in a region of its own (a static loop, its barrier, the
    # join) the sleeping helper woke late for its share (~24 us from a fork, 2-CPU Zen 5 VM whose idle CPUs
    # halt, OMP_WAIT_POLICY=PASSIVE), and again for the tiles' fork. Kim k6 in tf.function, both ways in one
    # process, two threads: forward 2.61 -> 2.57 ms, input gradient 2.29 -> 2.26 (one thread: no change).
    cdef bint transform_filters = g != NULL
    cdef Py_ssize_t CB = filter_block_channels(rotate, sizeof(real))
    cdef Py_ssize_t nfblocks = (C + CB - 1) // CB if transform_filters else 0, fb
    cdef Py_ssize_t gather_len = filter_gather_values(rotate, kh, kw, K, sizeof(real)) if transform_filters else 0
    cdef real* gathered
    cdef long filter_next = 0
    cdef int filters_left = <int> nfblocks      # blocks not yet transformed
    cdef int team
    stride = thread_stride(per_thread + wtail_len + gather_len, sizeof(real))
    scratch = <real*> scratch_alloc(n_threads * stride * sizeof(real))
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef real** crow_all = <real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef real* v
    cdef real* mprod
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
        v = scratch + tid * stride
        mprod = v + A2 * vplane
        wtail = mprod + A2 * mplane
        aptr = aptr_all + tid * rows_stride
        crow = crow_all + tid * rows_stride
        gathered = wtail + wtail_len
        if transform_filters:
            # Every thread waits for the blocks, not for the other threads (kc_phase_wait). A helper whose CPU
            # another call's caller needs (calls overlapping: a training step's two gradients) takes no block
            # and sleeps until they are done; the tiles' loop below then stands it down until the CPUs free up
            # (next_task), when it rejoins. Which thread transforms a block never changes a value.
            team = kc_region_threads()
            while not kc_should_leave(tid, team, g_cpus):
                fb = kc_take_task(&filter_next)
                if fb >= nfblocks:
                    break
                filter_panels_block(g, kh, kw, C, K, grid.ah, grid.aw, rotate, panels, fb, gathered)
                kc_phase_task_done(&filters_left)
            kc_phase_wait(&filters_left, tid < kc_share(team, g_cpus))
        while True:
            task = next_task(&next_t, nblocks, tid, n_threads)
            if task >= nblocks:
                break
            t0 = task * rpanels // nblocks * MR             # blocks of rpanels / nblocks panels, to a panel
            tb = (task + 1) * rpanels // nblocks * MR
            tb = (tiles if tb > tiles else tb) - t0
            npan = (tb + MR - 1) // MR
            for slot in range(tb):
                if slot + TILE_PREFETCH_AHEAD < tb:
                    prefetch_tile_input(x, &grid, t0 + slot + TILE_PREFETCH_AHEAD)
                input_tile_transform(x, &grid, t0 + slot, v, slot, vplane)
            for slot in range(tb):      # the block's output rows, owned by the time its products are done
                prefetch_tile_output(y, &grid, t0 + slot)
            for xi in range(A2):
                for q in range(nchunks):
                    c0 = chunk_start(q, nchunks, C)
                    kc = chunk_start(q + 1, nchunks, C) - c0
                    for j in range(ncolp):
                        nr = K - j * NR if K - j * NR < NR else NR
                        bq = panels + xi * pplane + (j * C + c0) * NR
                        if use_tail and j == ncolp - 1:
                            transpose_tail(bq, NR, kc, <int> nr, wtail)
                        for p in range(npan):
                            mr = tb - p * MR if tb - p * MR < MR else MR
                            for i in range(MR):     # rows past the block's end repeat its first row
                                row = p * MR + (i if i < mr else 0)
                                aptr[i] = v + xi * vplane + row * C
                                crow[i] = mprod + xi * mplane + row * K
                            if use_tail and j == ncolp - 1:
                                fwd_tail(1, <int> kc, aptr, c0, 0, False, wtail, kc, crow, j * NR, <int> mr, <int> nr,
                                         q > 0, NULL, 0)
                            else:
                                igemm_tile_final(1, <int> kc, aptr, c0, 1, bq, NR, crow, j * NR, mr, nr, q > 0, NULL,
                                                 0, narrow)
            for slot in range(tb):
                if output_tile_transform(mprod, &grid, t0 + slot, y, slot, mplane, fbias, clamp):
                    nonfinite_seen[0] = 1      # any thread may set it; none clears it
                if ep != NULL and not fused:
                    epilogue_tile(y, &grid, t0 + slot, ep)
    scratch_free(scratch)
    free(aptr_all)
    free(crow_all)
    return 1 if nonfinite_seen[0] else 0


cdef int winograd_conv_staged(const real* x, real* y, WinoGrid grid, const real* panels, real* work,
                              const Epilogue* ep, int n_threads) noexcept nogil:
    """The same convolution in three stages over all tiles at once, for layers with few tiles and many
    channels: there the fused blocks would each stream all alpha^2 x C x K transformed filters, while here
    each xi's filters are read by one task. `work` holds alpha^2 x (plane_values(tiles, C) + plane_values(tiles, K))
    values.
    Returns as winograd_conv."""
    cdef int NR = tile_cols(y)
    cdef bint narrow = 2 * grid.K <= NR       # as winograd_conv
    cdef int MR = shape_rows(y, narrow)
    cdef bint fused = fused_epilogue(ep)
    cdef const real* fbias = <const real*> ep.bias if ep != NULL and fused else NULL
    cdef int clamp = ep.act if ep != NULL and fused else ACT_LINEAR
    cdef Py_ssize_t C = grid.C, K = grid.K, A2 = grid.ah * grid.aw
    cdef Py_ssize_t T = grid.N * grid.th * grid.tw
    cdef Py_ssize_t ncolp = (K + NR - 1) // NR
    cdef Py_ssize_t ncb = (ncolp + COL_PANELS_PER_TASK - 1) // COL_PANELS_PER_TASK
    cdef Py_ssize_t nchunks = product_chunks(C)
    cdef Py_ssize_t npan = (T + MR - 1) // MR
    cdef Py_ssize_t t, task, xi, jb, q, c0, kc, j, p, i, row, mr, nr, tid
    cdef int nonfinite = 0
    cdef Py_ssize_t vplane = plane_values(T, C, sizeof(real)), mplane = plane_values(T, K, sizeof(real))
    cdef Py_ssize_t pplane = panel_plane_values(C, K, NR, sizeof(real))
    cdef real* v = work
    cdef real* mprod = work + A2 * vplane
    cdef Py_ssize_t rows_stride = thread_stride(MR, sizeof(real*))
    cdef const real** aptr_all = <const real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef real** crow_all = <real**> thread_arrays(n_threads, MR, sizeof(real*))
    cdef const real** aptr
    cdef real** crow
    cdef const real* bq
    if aptr_all == NULL or crow_all == NULL:
        free(aptr_all)
        free(crow_all)
        return -1
    with parallel(num_threads=phase_threads(T, T * A2 * C, n_threads)):   # stage 1: every tile's input transform
        for t in prange(T, schedule='static'):
            if t + TILE_PREFETCH_AHEAD < T:
                prefetch_tile_input(x, &grid, t + TILE_PREFETCH_AHEAD)
            input_tile_transform(x, &grid, t, v, t, vplane)
    cdef long next_t = 0          # the task loop's counter (tile.pxi, next_task)
    with parallel(num_threads=n_threads):          # stage 2: the alpha^2 products, by column block
        tid = threadid()
        aptr = aptr_all + tid * rows_stride
        crow = crow_all + tid * rows_stride
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
                    bq = panels + xi * pplane + (j * C + c0) * NR
                    for p in range(npan):
                        mr = T - p * MR if T - p * MR < MR else MR
                        for i in range(MR):
                            row = p * MR + (i if i < mr else 0)
                            aptr[i] = v + xi * vplane + row * C
                            crow[i] = mprod + xi * mplane + row * K
                        igemm_tile_final(1, <int> kc, aptr, c0, 1, bq, NR, crow, j * NR, mr, nr, q > 0, NULL, 0,
                                         narrow)
    with parallel(num_threads=phase_threads(T, T * A2 * K, n_threads)):   # stage 3: every tile's output transform
        for t in prange(T, schedule='static'):
            nonfinite |= output_tile_transform(mprod, &grid, t, y, t, mplane, fbias, clamp)
            if ep != NULL and not fused:
                epilogue_tile(y, &grid, t, ep)
    free(aptr_all)
    free(crow_all)
    return 1 if nonfinite else 0

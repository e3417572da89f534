# The micro-kernel's tile for each precision, and one call that dispatches on it.
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset
from microkernel cimport *
from cython.parallel cimport prange, parallel, threadid

ctypedef fused real:
    float
    double

# Largest reduction one micro-kernel call runs before its tile is stored: keeps the B panel (KC x NR) near L1
# and bounds the pointer tables. KC_MAX for Winograd's product stage (channels); KC_MAX_DIRECT for direct
# convolutions (taps x channels), where a reduction in one chunk also lets a kernel row's taps merge into one
# pointer (igemm_conv.pxi, merged_run): at 1024 instead of 512, one core, Zen 4, numpy API, three interleaved
# rounds: 5x5 14x14 32 -> 64 forward 7.0 -> 6.2 ms and input gradient 6.9 -> 6.2, 3x3/2 56x56 64 -> 128
# forward 10.6 -> 9.6, Kim k5 128 -> 100 forward 17.1 -> 15.3 (B panels of up to 128 KB stay in L2).
cdef enum:
    KC_MAX = 512
    KC_MAX_DIRECT = 1024
# Rows of output pixels one task owns, in micro-kernel panels.
cdef enum:
    PANELS_PER_BLOCK = 16
# Column panels one task of a Winograd product stage owns.
cdef enum:
    COL_PANELS_PER_TASK = 16


# A parallel region wakes the team and waits for it: on a 2-CPU VM each region cost a small call ~70-110 us
# in futex wake-ups (3x3 32x32 16 -> 16, batch 1: 0.136 ms on 2 threads with a filter-packing region beside
# the product, 0.070 ms with the packing on one thread). Phases touching fewer values run on one thread.
cdef enum:
    SERIAL_PHASE_VALUES = 1 << 18


# The CPUs this process may use (set by plan.pxi's set_thread_config).
cdef int g_cpus = 1


cdef inline int loop_threads(Py_ssize_t tasks, Py_ssize_t values, int n_threads) noexcept nogil:
    """Threads for a call's task loop (next_task): 1 under SERIAL_PHASE_VALUES values or with one task, else
    at most one per task. Its helpers stand down while calls overlap and rejoin when the others finish
    (microkernel.h, kc_next_task). Loops only split work whose every piece is computed the same way on any
    thread."""
    if values < SERIAL_PHASE_VALUES or tasks < 2:
        return 1
    return n_threads if tasks >= n_threads else <int> tasks


cdef inline int phase_threads(Py_ssize_t tasks, Py_ssize_t values, int n_threads) noexcept nogil:
    """Threads for a phase split statically (prange): loop_threads', and while overlapping calls hold more
    threads than there are CPUs, no more than this call's share of them (kc_share). A static phase ends when
    its last thread does: a helper sharing a CPU with another call's caller keeps this call's caller waiting
    at the phase's end while its own CPU idles."""
    cdef int n = loop_threads(tasks, values, n_threads)
    cdef int share = kc_share(n_threads, g_cpus)
    return share if share < n else n


cdef inline Py_ssize_t next_task(long* counter, Py_ssize_t total, Py_ssize_t tid, int team) noexcept nogil:
    """The next task of a task loop whose tasks 0 .. total-1 are handed out from *counter (>= total: none
    left). A helper thread stands down while overlapping calls hold more threads than there are CPUs
    (microkernel.h, kc_next_task)."""
    return kc_next_task(counter, total, tid, team, g_cpus)


cdef inline int tile_rows(real* dummy) noexcept nogil:
    if real is float:
        return KC_MR_F32
    else:
        return KC_MR_F64


cdef inline int tile_cols(real* dummy) noexcept nogil:
    if real is float:
        return KC_NR_F32
    else:
        return KC_NR_F64


cdef inline void igemm_tile(int ntaps, int kc, const real* const* a, long a_off, const real* b,
                            real* const* c, long c_off, int mr, int nr, int accumulate) noexcept nogil:
    """The micro-kernel with contiguous A rows and a packed B panel (rows NR apart)."""
    igemm_tile_strided(ntaps, kc, a, a_off, 1, b, tile_cols(<real*> b), c, c_off, mr, nr, accumulate)


cdef inline int shape_rows(real* dummy, bint narrow) noexcept nogil:
    """MR of the tile: the narrow tile (one vector of columns) has twice the rows."""
    return tile_rows(dummy) * 2 if narrow else tile_rows(dummy)


cdef inline int shape_cols(real* dummy, bint narrow) noexcept nogil:
    return tile_cols(dummy) // 2 if narrow else tile_cols(dummy)


cdef inline void igemm_tile_strided(int ntaps, int kc, const real* const* a, long a_off, long lda,
                                    const real* b, long ldb, real* const* c, long c_off, int mr, int nr,
                                    int accumulate) noexcept nogil:
    """The micro-kernel reading both operands in place: A's reduction index lda apart, B's rows ldb apart."""
    if real is float:
        kc_igemm_f32(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, NULL, 0)
    else:
        kc_igemm_f64(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, NULL, 0)


cdef inline void igemm_tile_final(int ntaps, int kc, const real* const* a, long a_off, long lda,
                                  const real* b, long ldb, real* const* c, long c_off, int mr, int nr,
                                  int accumulate, const real* bias, int clamp, bint narrow) noexcept nogil:
    """The micro-kernel (the narrow tile when narrow) with + bias (or NULL), relu (clamp 1) or relu6 (2)
    applied in registers before the store; bias NULL and clamp 0 on every call but a tile's last. A wide
    tile with at most half its columns live runs as the half tile (same rows, one vector of columns)."""
    if real is float:
        if narrow:
            kc_igemm_narrow_f32(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)
        elif 2 * nr <= KC_NR_F32:
            kc_igemm_half_f32(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)
        else:
            kc_igemm_f32(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)
    else:
        if narrow:
            kc_igemm_narrow_f64(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)
        elif 2 * nr <= KC_NR_F64:
            kc_igemm_half_f64(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)
        else:
            kc_igemm_f64(ntaps, kc, a, a_off, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)


cdef inline void igemm_tile_run(int ntaps, int kc, const real* const* a, long a_off, long rs,
                                const real* b, long ldb, real* const* c, long c_off, int mr, int nr,
                                int accumulate, const real* bias, int clamp, bint narrow) noexcept nogil:
    """The tile (the narrow one when narrow; the wide one runs as its half on a panel of at most one vector of
    columns) on rows that are one run of pixels rs values apart: row i of tap t at a[t*MR] + i*rs
    (igemm_conv.pxi, index_panels; float only, callers check): microkernel.h, KC_DEFINE_IGEMM_RUN."""
    if real is float:
        if narrow:
            kc_igemm_run_f32(1, ntaps, kc, a, a_off, rs, 1, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)
        else:
            kc_igemm_run_wide_f32(ntaps, kc, a, a_off, rs, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp)


cdef inline void igemm_tile_channels(int ntaps, int kc, const real* const* a, long a_off, long lda,
                                     const real* b, long ldb, real* const* c, long c_off, int mr, int nr,
                                     int accumulate, bint narrow) noexcept nogil:
    """The tile on MR consecutive channels of one tap (row i at a[t*MR] + i, the reduction lda apart): the
    filter gradient's row panels (filter_grad.pxi). Float only: callers check."""
    if real is float:
        kc_igemm_run_f32(narrow, ntaps, kc, a, a_off, 1, lda, b, ldb, c, c_off, mr, nr, accumulate, NULL, 0)


# A last column panel of at most this many output channels (100 = 3 x 32 + 4) runs on the tails below
# (microkernel.h: kc_fwd_tail, kc_grad_tail) instead of the half tile, which leaves most of its lanes idle.
cdef enum:
    TAIL_COLS = 8


cdef inline void fwd_tail(int ntaps, int kc, const real* const* a, long a_off, long rs, bint run, const real* wt,
                          long ldw, real* const* c, long c_off, int mr, int nr, int accumulate, const real* bias,
                          int clamp) noexcept nogil:
    """The forward's transposed tail (microkernel.h, kc_fwd_tail): float only, callers check."""
    if real is float:
        kc_fwd_tail_f32(ntaps, kc, a, a_off, rs, run, wt, ldw, c, c_off, mr, nr, accumulate, bias, clamp)


cdef inline void grad_tail(int nrows, int npix, int rows, const real* dy, long ldr, long ldd, const real* x,
                           long xr, long ldx, int nvec, real* out, long ldo) noexcept nogil:
    """The filter gradient's transposed tail (microkernel.h, kc_grad_tail): float only, callers check."""
    if real is float:
        kc_grad_tail_f32(nrows, npix, rows, dy, ldr, ldd, x, xr, ldx, nvec, out, ldo)


cdef inline Py_ssize_t chunks_within(Py_ssize_t red, Py_ssize_t cin, Py_ssize_t kmax) noexcept nogil:
    """Chunks of at most kmax values of a reduction of red values, at most one per channel."""
    cdef Py_ssize_t n = (red + kmax - 1) // kmax
    if n < 1:
        n = 1
    if n > cin and cin > 0:
        n = cin
    return n


cdef inline Py_ssize_t reduction_chunks(Py_ssize_t ntaps, Py_ssize_t cin) noexcept nogil:
    """How many channel chunks split a direct convolution's reduction of ntaps x cin so each stays within
    KC_MAX_DIRECT."""
    return chunks_within(ntaps * cin, cin, KC_MAX_DIRECT)


cdef inline Py_ssize_t product_chunks(Py_ssize_t C) noexcept nogil:
    """How many channel chunks split Winograd's product stage reduction over C channels (KC_MAX)."""
    return chunks_within(C, C, KC_MAX)


cdef inline Py_ssize_t chunk_start(Py_ssize_t q, Py_ssize_t nchunks, Py_ssize_t cin) noexcept nogil:
    """Channel where chunk q starts: chunks differ in size by at most one channel."""
    return q * cin // nchunks

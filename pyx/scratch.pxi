# Big scratch buffers, kept between calls.
#
# A pass needs buffers of the same sizes on every call (Winograd tiles, partial sums, packed filters). Fresh
# from malloc, buffers this large are new pages from the OS (glibc maps them, or trims them off its heap when
# freed), and touching them costs page faults: 15 % of a 28x28x128 Winograd filter gradient (perf, 2-core
# AVX-512 Xeon). So scratch_free keeps up to SCRATCH_SLOTS buffers (SCRATCH_KEEP_BYTES in all) and
# scratch_alloc hands one back when it fits (n to 2n bytes). Buffers under SCRATCH_MIN_BYTES go straight to
# malloc, whose free lists serve them well. release_scratch() (ops.clear_cache) gives everything back.

cdef extern from "<stdlib.h>" nogil:
    void* aligned_alloc(size_t alignment, size_t size)

cdef enum:
    SCRATCH_MIN_BYTES = 1 << 18
    SCRATCH_SLOTS = 8
    SCRATCH_HEADER = 128           # the buffer's size, kept in front of it (the buffer starts a 128-byte block)
cdef size_t SCRATCH_KEEP_BYTES = 256 << 20

cdef struct ScratchSlot:
    char* base
    size_t size

cdef ScratchSlot g_scratch[SCRATCH_SLOTS]
cdef size_t g_scratch_bytes = 0
cdef int g_scratch_lock = 0


cdef void* scratch_alloc(size_t n) noexcept nogil:
    """At least n bytes (NULL when out of memory), to be given back with scratch_free."""
    global g_scratch_bytes
    cdef size_t total = n + SCRATCH_HEADER
    cdef char* base = NULL
    cdef int i, best = -1
    if total >= SCRATCH_MIN_BYTES:
        kc_lock(&g_scratch_lock)
        for i in range(SCRATCH_SLOTS):      # the smallest kept buffer that fits without wasting half
            if (g_scratch[i].base != NULL and total <= g_scratch[i].size <= 2 * total
                    and (best < 0 or g_scratch[i].size < g_scratch[best].size)):
                best = i
        if best >= 0:
            base = g_scratch[best].base
            total = g_scratch[best].size
            g_scratch_bytes -= total
            g_scratch[best].base = NULL
        kc_unlock(&g_scratch_lock)
    if base == NULL:
        total = (total + THREAD_ARRAY_ALIGN - 1) // THREAD_ARRAY_ALIGN * THREAD_ARRAY_ALIGN
        base = <char*> aligned_alloc(THREAD_ARRAY_ALIGN, total)
        if base == NULL:
            return NULL
    (<size_t*> base)[0] = total
    return base + SCRATCH_HEADER


cdef void* scratch_calloc(size_t n) noexcept nogil:
    cdef void* p = scratch_alloc(n)
    if p != NULL:
        memset(p, 0, n)
    return p


cdef void scratch_free(void* p) noexcept nogil:
    global g_scratch_bytes
    cdef char* base
    cdef size_t size
    cdef int i
    if p == NULL:
        return
    base = <char*> p - SCRATCH_HEADER
    size = (<size_t*> base)[0]
    if size >= SCRATCH_MIN_BYTES:
        kc_lock(&g_scratch_lock)
        if g_scratch_bytes + size <= SCRATCH_KEEP_BYTES:
            for i in range(SCRATCH_SLOTS):
                if g_scratch[i].base == NULL:
                    g_scratch[i].base, g_scratch[i].size = base, size
                    g_scratch_bytes += size
                    base = NULL
                    break
        kc_unlock(&g_scratch_lock)
    free(base)


def release_scratch():
    """Frees the kept scratch buffers; returns how many bytes they held."""
    global g_scratch_bytes
    cdef size_t released = 0
    cdef int i
    with nogil:
        kc_lock(&g_scratch_lock)
        for i in range(SCRATCH_SLOTS):
            if g_scratch[i].base != NULL:
                released += g_scratch[i].size
                free(g_scratch[i].base)
                g_scratch[i].base = NULL
        g_scratch_bytes = 0
        kc_unlock(&g_scratch_lock)
    return released


def scratch_bytes():
    """Bytes of scratch buffers kept between calls now."""
    return g_scratch_bytes


# Each thread's part of a buffer the threads share (a tile's row pointers, a partial tile, a block's transformed
# tiles) starts on a 128-byte block of its own: two threads writing into one cache line, or into the pair of
# lines the adjacent-line prefetcher fetches together, make each write move the line between their cores
# (false sharing). The micro-kernel's row-pointer arrays (8 pointers a thread) shared lines: Kim k6's input
# gradient (F(3,6), 2-CPU Zen 5, perf) spent 14 % more CPU time a call in its products on two threads than on
# one (two one-thread processes side by side: none); apart, the products cost the same on one and two.
cdef enum:
    THREAD_ARRAY_ALIGN = 128


cdef inline Py_ssize_t thread_stride(Py_ssize_t count, size_t itemsize) noexcept nogil:
    """Items from one thread's array of count items to the next one's: whole THREAD_ARRAY_ALIGN blocks."""
    cdef Py_ssize_t nbytes = (count if count > 0 else 1) * itemsize
    return (nbytes + THREAD_ARRAY_ALIGN - 1) // THREAD_ARRAY_ALIGN * THREAD_ARRAY_ALIGN // itemsize


cdef inline void* thread_arrays(int n_threads, Py_ssize_t count, size_t itemsize) noexcept nogil:
    """n_threads arrays of count items, thread_stride(count, itemsize) apart, each on cache lines of its own
    (give back with free; NULL when out of memory)."""
    return aligned_alloc(THREAD_ARRAY_ALIGN, n_threads * thread_stride(count, itemsize) * itemsize)

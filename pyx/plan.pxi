# Plans: everything about a convolution that depends only on its shapes and arguments, decided once.
#
# plan_create checks the geometry, resolves the padding, sizes the output, chooses the algorithm and tile
# of each pass, lists the taps (and the input gradient's stride phases) and the filter gradient's split.
# A call on a plan binds pointers and runs (XNNPACK's create/setup/run, NNPACK's one driver per pass).
# The numpy API (ConvPlan below) and the TensorFlow op library (through the kc_api table) share them.
# Everything here runs without the GIL; a plan may run on several threads at once: its only mutable
# state, the inference cache of transformed filters, sits behind a mutex.
from libc.string cimport memcpy, memcmp, memset
from libc.stdio cimport snprintf

cdef extern from "<unistd.h>" nogil:
    long sysconf(int name)
    int _SC_PHYS_PAGES
    int _SC_PAGESIZE

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* mutex, const void* attr)
    int pthread_mutex_destroy(pthread_mutex_t* mutex)
    int pthread_mutex_lock(pthread_mutex_t* mutex)
    int pthread_mutex_unlock(pthread_mutex_t* mutex)

cdef extern from "kconv_api.h" nogil:
    enum:
        KC_API_VERSION
        KC_OK
        KC_ERR_ARGUMENT
        KC_ERR_MEMORY
        KC_FLOAT32
        KC_FLOAT64
        KC_PAD_VALID
        KC_PAD_SAME
        KC_PAD_CAUSAL
        KC_PAD_EXPLICIT
        KC_ALGO_AUTO
        KC_ALGO_DIRECT
        KC_ALGO_WINOGRAD
    ctypedef struct kc_conv_desc:
        long N, H, W, C, kh, kw, cg, K
        long stride_h, stride_w, dilation_h, dilation_w
        int padding
        long pad_top, pad_bottom, pad_left, pad_right
        int algorithm, dtype, activation, threads
    ctypedef struct kc_plan:
        pass
    ctypedef struct kc_api:
        int version
        const char* isa
        int (*output_size)(const kc_conv_desc*, long*, long*, char*, int) noexcept nogil
        kc_plan* (*plan_create)(const kc_conv_desc*, char*, int) noexcept nogil
        void (*plan_destroy)(kc_plan*) noexcept nogil
        int (*forward)(const kc_plan*, const void*, const void*, const void*, void*, void*, char*, int) noexcept nogil
        int (*backprop_input)(const kc_plan*, const void*, const void*, const void*, void*, void*, char*,
                              int) noexcept nogil
        int (*backprop_filter)(const kc_plan*, const void*, const void*, void*, char*, int) noexcept nogil
        int (*activation_grad)(int, int, long, long, const void*, const void*, const void*, void*, void*, int,
                               char*, int) noexcept nogil
        int (*batch_norm)(int, long, long, const void*, const void*, const void*, const void*, const void*,
                          double, int, void*, void*, void*, void*, int, char*, int) noexcept nogil
        int (*batch_norm_grad)(int, long, long, const void*, const void*, const void*, const void*, const void*,
                               int, void*, void*, void*, int, char*, int) noexcept nogil

# auto's rules, measured (README): Winograd needs this many channels in and out; tiles per thread block.
cdef enum:
    # forward and input gradient: 2-D F(4x4) wins from 16 channels in and out since its transforms run in
    # registers (microkernel.h, kc_wino_*): C = K = 16..64 on maps 8x8..56x56, 1.2-2.3x direct on one and two
    # threads (`python benchmarks/algorithm_sweep.py --maps 8,14,16,28,32,56 --channels 16,32,64 --passes
    # fwd,dx --threads 1|2`, 2-CPU Zen 4 AVX-512), while 12 -> 12, 8 -> 16 and 16 -> 8 lose one pass or both
    # (0.5-0.8x). 1-D F(4, 3) saves half the multiplications, not three quarters: it loses at 16 and is
    # level at 32 (L = 200 and 512), wins at 48 and 64.
    AUTO_MIN_CHANNELS_2D = 16
    AUTO_MIN_CHANNELS_1D = 64
    # filter gradient (choose_algorithms): 1-D F(4, 3) from 64 channels in and out; 2-D F(4x4) from 32
    AUTO_MIN_GRAD_CHANNELS = 64
    AUTO_MIN_GRAD_CHANNELS_2D = 32
    WINOGRAD_WIDE_KERNEL_ALPHA = 8   # 1-D kernels of 4 to 7 taps: F(5, 4), F(4, 5), F(3, 6), F(2, 7)
    # 5x5 forward and input gradient by F(4x4, 5x5) up to this many input channels: its float32 error, 4e-6
    # of max|y| at C = 16, 1.1e-5 at 256, reaches 1.9e-5 at 512 (README, accuracy)
    AUTO_MAX_CHANNELS_5X5 = 256
    DEPTHWISE_MAX_MULTIPLIER = 8   # more filters per channel than this fill the GEMM tile: igemm_conv
    DEPTHWISE_SPLITS = 32          # row chunks of the depthwise filter gradient (fixed: no thread dependence)
    # A fused Winograd block (winograd_conv) takes 4 to 8 row panels of tiles, as many as keep its transformed
    # tiles and products within BLOCK_VALUES: each block streams every transformed filter once, so light
    # tiles want more of them. Kim k6 (F(3,6): 8 x 228 values a tile), one / two threads: 32 tiles 4.68 /
    # 2.58 ms, 64 4.40-4.55 / 2.36, 128 4.40 / 2.47 (Zen 5, numpy API).
    BLOCK_PANELS = 4
    BLOCK_PANELS_MAX = 8
    BLOCK_VALUES = 1 << 17
# Filter gradient (direct, filter_grad.pxi): output pixels per chunk, the tasks its blocks and splits aim at,
# the fewest pixels a split is given, the L2 bytes of one block's partial sums, tasks per thread the blocks may
# be cut smaller for (channel_block), the cap on all partial sums.
cdef enum:
    FILTER_GRAD_CHUNK_PIXELS = 384
    FILTER_GRAD_TARGET_TASKS = 16
    FILTER_GRAD_SPLIT_PIXELS = 512
    FILTER_GRAD_BLOCK_BYTES = 262144
    FILTER_GRAD_TASKS_PER_THREAD = 4
    # Winograd filter gradient: transformed values (both operands) per chunk of tiles, 4 MB in float32
    # (winograd_filter_grad.pxi): 56x56 and 28x28, C = K = 64..128, batch 8, two threads, as fast as 16 MB and
    # 1-2 ms faster than 256 kB, whose chunks are too small to transform on both threads.
    WINOGRAD_GRAD_CHUNK_VALUES = 1 << 20
    # Winograd filter gradient by lanes (winograd_filter_grad_lanes): at most WINOGRAD_GRAD_LANES, their
    # float64 sums within WINOGRAD_GRAD_LANE_BYTES, each lane transforming at least WINOGRAD_GRAD_LANE_WORK
    # values per sum it keeps, a thread transforming about WINOGRAD_GRAD_SUB_VALUES values at once. Two
    # threads, numpy API, inputs rotating (`python benchmarks/pass_timing.py ... --passes dw --sets 4`),
    # 2-CPU Zen 5, phases / two lanes in ms, lanes forced by a scratch hook. On CPUs sharing an L3: Kim k6
    # 2.55-2.70 / 2.52-2.64, 32x28x28x32 3x3 0.71-0.73 / 0.64-0.72, 8x56x56x64 3x3 2.22 / 2.11-2.18; with less
    # work per sum the lanes lose (8x28x28x64 3x3 0.53 / 0.64-0.67, 32x14x14 5x5 32 -> 64 0.72-0.75 /
    # 0.77-0.82, 32x8x8x64 3x3 0.24-0.25 / 0.32, 8x28x28x128 3x3 1.84-1.87 / 2.06-2.57). On CPUs on different
    # L3s the phases took 1.6-1.9x as long (Kim k6 4.5-4.7, 32x28x28x32 1.36, 8x56x56x64 3.64, 8x28x28x64
    # 1.00) and the lanes 1.0-1.1x. 64 tiles at a time at 3x3 32 -> 32: 1.13 ms on one thread, 1.99 with 256.
    WINOGRAD_GRAD_LANES = 8
    WINOGRAD_GRAD_LANE_BYTES = 8 << 20
    WINOGRAD_GRAD_LANE_WORK = 16
    WINOGRAD_GRAD_SUB_VALUES = 1 << 18
cdef Py_ssize_t FILTER_GRAD_PARTIAL_BYTES = 256 << 20
# auto runs a dilated 1-D kernel by Winograd only while its tiles pad the output by at most 25 %: with a
# dilation near the row's length each residue holds a few outputs, and most of every tile is padding.
cdef double AUTO_MAX_TILE_WASTE_DILATED = 1.25
# The largest tensor a plan accepts, in elements: well inside Py_ssize_t once multiplied by 8 bytes.
cdef Py_ssize_t MAX_ELEMENTS = (<Py_ssize_t> 1) << 58
cdef long INT32_LIMIT = 2147483647

# Threads: kconv.set_num_threads (0: unset) and the CPUs this process may use (affinity and cgroup quota),
# pushed here by kconv._threads (g_cpus lives in tile.pxi, beside next_task); unset, OpenMP's setting is asked at each call, capped at the CPUs. Below FLOPS_PER_THREAD of work per thread,
# another thread costs more to wake than it saves.
cdef int g_thread_setting = 0
cdef double FLOPS_PER_THREAD = 2e6


def set_thread_config(int setting, int cpus):
    """Called by kconv._threads whenever the thread setting changes."""
    global g_thread_setting, g_cpus
    g_thread_setting, g_cpus = setting, max(cpus, 1)


def pass_counts():
    """Kernel calls of each pass since import: {'forward': n, 'input': n, 'filter': n}."""
    return dict(forward=kc_pass_count(0), input=kc_pass_count(1), filter=kc_pass_count(2))


def threads_held():
    """Threads held by kernel calls running now (0 when idle)."""
    return kc_threads_held()


def cpu_share(int team, int cpus, long held):
    """Threads a call of `team` keeps working while calls hold `held` threads on `cpus` CPUs (microkernel.h,
    kc_share): its team when they fit or it runs alone, else team x cpus / held, at least its caller."""
    return kc_share_of(team, cpus, held)


def stand_downs():
    """Times a helper thread stood down because overlapping calls held more threads than CPUs (since
    import): a diagnostic for benchmarks/callers.py and the tests."""
    return kc_stand_down_count()


# A child forked after this process ran an OpenMP team must stay on its own thread: GCC's OpenMP runtime is
# not fork-safe, and the child's first team would wait forever for the parent's threads.
cdef int g_ran_team = 0
cdef int g_serial_child = 0


def after_fork_in_child():
    """os.register_at_fork hook (kconv._threads): kernels in a forked child run serially when the parent
    had started OpenMP threads."""
    global g_serial_child
    if g_ran_team:
        g_serial_child = 1


def serial_after_fork():
    return bool(g_serial_child)


cdef inline int resolve_threads(int requested) noexcept nogil:
    cdef int n
    if not kc_openmp_enabled() or g_serial_child:
        return 1
    if requested > 0:
        return requested
    if g_thread_setting > 0:
        return g_thread_setting
    # OpenMP's own setting, asked at each call: OMP_NUM_THREADS, or threadpoolctl's threadpool_limits
    n = kc_omp_max_threads()
    return n if n < g_cpus else g_cpus


cdef int claim_threads(double flops, int requested) noexcept nogil:
    """Threads for one call of `flops`: resolve_threads, fewer for small work; held until kc_release_threads
    (overlapping calls stand their helpers down: microkernel.h, kc_next_task)."""
    cdef int n = resolve_threads(requested)
    cdef double by_work = flops / FLOPS_PER_THREAD
    global g_ran_team
    if by_work < n:
        n = <int> by_work if by_work >= 1 else 1
    n = kc_claim_threads(n)
    if n > 1 and not g_ran_team:
        g_ran_team = 1
    return n


cdef struct Plan:
    Py_ssize_t N, H, W, C, kh, kw, cg, K, groups, kg
    Py_ssize_t sh, sw, dh, dw, pt, pb, pl, pr, Ho, Wo
    int itemsize, act, threads
    int fwd_m, bwd_m, grad_m       # Winograd output tile per pass; 0: direct
    bint depthwise                 # one input channel per group: depthwise.pxi's kernels, every pass
    bint fwd_staged, bwd_staged
    Py_ssize_t fg_chunk, fg_splits, fg_cblock, wg_chunk, wg_lanes, wg_sub
    double flops
    Py_ssize_t ntaps
    int slow[3]                    # per pass: pinning's trial state (team_binding.pxi, BIND_TRIAL_CALLS)
    Py_ssize_t* tap_h              # forward taps: source offset from q * stride, and filter offset
    Py_ssize_t* tap_w
    Py_ssize_t* tap_off
    Py_ssize_t nphases
    Phase* phases
    Py_ssize_t* ph_tap_h           # the input gradient's taps, phase after phase
    Py_ssize_t* ph_tap_w
    Py_ssize_t* ph_tap_off
    pthread_mutex_t lock           # guards the three fields below
    void* cache_w                  # weights whose transform is kept (inference), or NULL
    void* cache_panels
    double sample[16]              # a few values of the last weights seen, to notice repeats
    bint have_sample


cdef int fail(char* err, int errlen, int code, const char* message) noexcept nogil:
    if err != NULL and errlen > 0:
        snprintf(err, errlen, "%s", message)
    return code


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """a / b rounded up, for a >= 0, b > 0, without forming a + b (no overflow for huge b)."""
    return (a - 1) // b + 1 if a > 0 else 0


cdef int out_size(Py_ssize_t n, Py_ssize_t k, Py_ssize_t s, Py_ssize_t d, Py_ssize_t lo, Py_ssize_t hi,
                  const char* axis, Py_ssize_t* out, char* err, int errlen) noexcept nogil:
    cdef Py_ssize_t span
    if k - 1 > (MAX_ELEMENTS * 8) // d:          # the dilated kernel is larger than any input could be
        span = MAX_ELEMENTS * 8
    else:
        span = (k - 1) * d + 1
    if n + lo + hi < span:
        if n == 0:          # an empty sequence or image is not an error: its output is empty
            out[0] = 0
            return KC_OK
        if err != NULL and errlen > 0:
            snprintf(err, errlen, "the filter (size %ld, dilation %ld, spanning %ld) is larger than the padded "
                     "input along %s (size %ld + padding %ld+%ld = %ld)", <long> k, <long> d, <long> span, axis,
                     <long> n, <long> lo, <long> hi, <long> (n + lo + hi))
        return KC_ERR_ARGUMENT
    out[0] = (n + lo + hi - span) // s + 1
    return KC_OK


cdef void same_padding(Py_ssize_t n, Py_ssize_t k, Py_ssize_t s, Py_ssize_t d, Py_ssize_t* lo,
                       Py_ssize_t* hi) noexcept nogil:
    """TensorFlow's SAME: output ceil(n / s); the odd pixel of padding goes after (bottom / right)."""
    cdef Py_ssize_t total = (ceil_div(n, s) - 1) * s + (k - 1) * d + 1 - n
    if total < 0:
        total = 0
    lo[0] = total // 2
    hi[0] = total - total // 2


cdef double physical_memory() noexcept nogil:
    cdef double pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE)
    return pages * size if pages > 0 and size > 0 else 1e300


cdef int describe(const kc_conv_desc* d, Plan* p, char* err, int errlen) noexcept nogil:
    """Checks desc and fills p's geometry (sizes, padding, output). Returns a kc_status."""
    cdef int status
    if d.N < 0 or d.H < 0 or d.W < 0 or d.C < 0 or d.K < 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "sizes must be >= 0")
    if d.kh < 1 or d.kw < 1:
        return fail(err, errlen, KC_ERR_ARGUMENT, "the kernel size must be >= 1")
    if d.cg < 1 or d.C < 1 or d.C % d.cg:
        if err != NULL and errlen > 0:
            snprintf(err, errlen, "the input's channels (%ld) must be a positive multiple of the filters' "
                     "in-channels (%ld)", d.C, d.cg)
        return KC_ERR_ARGUMENT
    if d.K % (d.C // d.cg):
        if err != NULL and errlen > 0:
            snprintf(err, errlen, "the filter count (%ld) must be divisible by groups = %ld (input channels %ld "
                     "/ filter in-channels %ld)", d.K, d.C // d.cg, d.C, d.cg)
        return KC_ERR_ARGUMENT
    if d.stride_h < 1 or d.stride_w < 1 or d.stride_h > INT32_LIMIT or d.stride_w > INT32_LIMIT:
        return fail(err, errlen, KC_ERR_ARGUMENT, "strides must be in [1, 2**31 - 1]")
    if d.dilation_h < 1 or d.dilation_w < 1 or d.dilation_h > INT32_LIMIT or d.dilation_w > INT32_LIMIT:
        return fail(err, errlen, KC_ERR_ARGUMENT, "dilations must be in [1, 2**31 - 1]")
    if <double> d.stride_w * d.C > MAX_ELEMENTS:       # a row of the image read with this stride
        return fail(err, errlen, KC_ERR_MEMORY, "strides x channels are too large to index")
    if d.dtype != KC_FLOAT32 and d.dtype != KC_FLOAT64:
        return fail(err, errlen, KC_ERR_ARGUMENT, "dtype must be float32 or float64")
    if d.activation < 0 or d.activation >= ACT_COUNT:
        return fail(err, errlen, KC_ERR_ARGUMENT, "unknown activation")
    # every size within MAX_ELEMENTS, each factor first so the products cannot overflow
    if (d.N > MAX_ELEMENTS or d.H > MAX_ELEMENTS or d.W > MAX_ELEMENTS or d.C > MAX_ELEMENTS or d.K > MAX_ELEMENTS
            or d.kh > MAX_ELEMENTS or d.kw > MAX_ELEMENTS
            or <double> d.N * d.H * d.W * d.C > MAX_ELEMENTS
            or <double> d.kh * d.kw * d.cg * d.K > MAX_ELEMENTS):
        return fail(err, errlen, KC_ERR_MEMORY, "the convolution is too large to allocate")
    p.N, p.H, p.W, p.C, p.kh, p.kw, p.cg, p.K = d.N, d.H, d.W, d.C, d.kh, d.kw, d.cg, d.K
    p.groups = d.C // d.cg
    p.kg = d.K // p.groups
    p.sh, p.sw, p.dh, p.dw = d.stride_h, d.stride_w, d.dilation_h, d.dilation_w
    if d.padding == KC_PAD_VALID:
        p.pt = p.pb = p.pl = p.pr = 0
    elif (d.padding == KC_PAD_SAME or d.padding == KC_PAD_CAUSAL) and (
            p.kh - 1 > MAX_ELEMENTS // p.dh or p.kw - 1 > MAX_ELEMENTS // p.dw):
        return fail(err, errlen, KC_ERR_MEMORY, "the padding this dilated kernel needs is too large to allocate")
    elif d.padding == KC_PAD_SAME:
        same_padding(p.H, p.kh, p.sh, p.dh, &p.pt, &p.pb)
        same_padding(p.W, p.kw, p.sw, p.dw, &p.pl, &p.pr)
    elif d.padding == KC_PAD_CAUSAL:
        p.pt, p.pb, p.pl, p.pr = (p.kh - 1) * p.dh, 0, (p.kw - 1) * p.dw, 0
    elif d.padding == KC_PAD_EXPLICIT:
        if d.pad_top < 0 or d.pad_bottom < 0 or d.pad_left < 0 or d.pad_right < 0:
            return fail(err, errlen, KC_ERR_ARGUMENT, "padding values must be >= 0")
        if d.pad_top > MAX_ELEMENTS or d.pad_bottom > MAX_ELEMENTS or d.pad_left > MAX_ELEMENTS or d.pad_right > MAX_ELEMENTS:
            return fail(err, errlen, KC_ERR_MEMORY, "the padding is too large to allocate")
        p.pt, p.pb, p.pl, p.pr = d.pad_top, d.pad_bottom, d.pad_left, d.pad_right
    else:
        return fail(err, errlen, KC_ERR_ARGUMENT, "unknown padding")
    status = out_size(p.H, p.kh, p.sh, p.dh, p.pt, p.pb, "the height", &p.Ho, err, errlen)
    if status == KC_OK:
        status = out_size(p.W, p.kw, p.sw, p.dw, p.pl, p.pr, "the width", &p.Wo, err, errlen)
    if status == KC_OK and (<double> p.N * p.Ho * p.Wo > MAX_ELEMENTS or <double> p.N * p.Ho * p.Wo * p.K > MAX_ELEMENTS):
        return fail(err, errlen, KC_ERR_MEMORY, "the convolution's output is too large to allocate")
    if status == KC_OK and <double> p.N * p.Ho * p.Wo * p.K * d.dtype > physical_memory():
        # refused at once: an allocator asked for it would fail, or (TensorFlow's) wait and retry first
        if err != NULL and errlen > 0:
            snprintf(err, errlen, "the convolution's output (%ld x %ld x %ld x %ld) needs %.3g GB, more than "
                     "this machine's memory (%.3g GB)", <long> p.N, <long> p.Ho, <long> p.Wo, <long> p.K,
                     <double> p.N * p.Ho * p.Wo * p.K * d.dtype / 1e9, physical_memory() / 1e9)
        return KC_ERR_MEMORY
    p.itemsize = d.dtype
    p.act = d.activation
    p.threads = d.threads
    p.flops = 2.0 * p.N * p.Ho * p.Wo * p.kh * p.kw * p.cg * p.K
    return status


cdef int winograd_reason(const Plan* p, char* err, int errlen) noexcept nogil:
    """0 when Winograd F(m, r) can run p (3x3, 5x5, or 1x3 .. 1x7 in 1-D; stride 1, no groups, no dilation
    but a 1-D kernel's: winograd.pxi, tile_origin), else 1 with the reason in err."""
    if not ((p.kh == p.kw and (p.kw == 3 or p.kw == 5)) or (p.kh == 1 and 3 <= p.kw <= 7)):
        if err != NULL:
            snprintf(err, errlen, "the kernel is %ldx%ld, Winograd needs 3x3 or 5x5 (1-D: 3 to 7)",
                     <long> p.kh, <long> p.kw)
        return 1
    if p.sh != 1 or p.sw != 1:
        if err != NULL:
            snprintf(err, errlen, "strides are (%ld, %ld), Winograd needs 1", <long> p.sh, <long> p.sw)
        return 1
    if p.kh != 1 and (p.dh != 1 or p.dw != 1):
        if err != NULL:
            snprintf(err, errlen, "dilations are (%ld, %ld), Winograd needs 1 for 2-D kernels", <long> p.dh,
                     <long> p.dw)
        return 1
    if p.groups != 1:
        if err != NULL:
            snprintf(err, errlen, "groups = %ld, Winograd needs 1", <long> p.groups)
        return 1
    return 0


cdef inline Py_ssize_t tile_columns(const Plan* p, Py_ssize_t m, Py_ssize_t wo) noexcept nogil:
    """Tiles across a row of wo outputs: ceil(wo / m), or with a 1-D kernel's dilation d, min(d, wo) residues
    of ceil(ceil(wo / d) / m) (winograd.pxi, tile_origin)."""
    cdef Py_ssize_t d = p.dw if p.kh == 1 else 1
    return (d if d < wo else wo) * ceil_div(ceil_div(wo, d), m)


cdef double tile_waste(const Plan* p, Py_ssize_t m) noexcept nogil:
    """How much m-wide tiles pad the output map (1.0: not at all), over the axes the kernel spans."""
    cdef double waste = <double> (tile_columns(p, m, p.Wo) * m) / p.Wo
    if p.kh != 1:
        waste *= <double> (ceil_div(p.Ho, m) * m) / p.Ho
    return waste


cdef int winograd_tile(const Plan* p) noexcept nogil:
    """F(4x4, 3x3) (F(4, 3) in 1-D); F(2x2, 3x3) where 4-wide tiles would pad the map by over 25 % and
    2-wide tiles by less (a 14x14 map: 31 % against none; measured, README)."""
    if p.kh == 5:        # 5x5: F(4x4, 5x5) (alpha 8); F(2x2, 5x5) was barely faster than direct
        return 4
    if p.kw != 3:        # 1-D 4 to 7 taps: alpha 8, F(5, 4), F(4, 5), F(3, 6) and F(2, 7)
        return WINOGRAD_WIDE_KERNEL_ALPHA - <int> p.kw + 1
    if p.Ho == 0 or p.Wo == 0:
        return 4
    if tile_waste(p, 4) > 1.25 and tile_waste(p, 2) < tile_waste(p, 4):
        return 2
    # Fewer F(4x4) tiles than a micro-kernel tile has rows (7x7 at batch 1: 4) leave the product stage's tiles
    # half empty while it reads 36 planes of transformed filter; F(2x2), as wasteful here, has 16 tiles
    # and 16 planes: 3x3 1x7x7x512 -> 512 forward 1.06 -> 0.75 ms with the filter transform kept, 1.12 ->
    # 0.93 ms without (numpy API, two threads, Zen 5). From 8 tiles F(4x4) wins (8x4x4x128: 0.12 / 0.14 ms).
    if winograd_tiles(p, 4, p.Ho, p.Wo) < KC_MR_F32 and tile_waste(p, 2) <= tile_waste(p, 4):
        return 2
    return 4


cdef Py_ssize_t winograd_tiles(const Plan* p, Py_ssize_t m, Py_ssize_t ho, Py_ssize_t wo) noexcept nogil:
    return p.N * (ceil_div(ho, m) if p.kh != 1 else ho) * tile_columns(p, m, wo)


cdef int choose_algorithms(const kc_conv_desc* d, Plan* p, char* err, int errlen) noexcept nogil:
    """The Winograd tile of each pass (0: direct). auto takes Winograd where it is faster and its float32
    error stays within 2e-5 of max|y| (README): enough channels, tiles no larger than F(4x4), and enough
    tiles for the filter gradient."""
    cdef char reason[200]
    cdef int m, algo = d.algorithm
    cdef Py_ssize_t tiles
    cdef bint unsupported = winograd_reason(p, reason, sizeof(reason))
    p.fwd_m = p.bwd_m = p.grad_m = 0
    p.depthwise = p.cg == 1 and p.groups > 1 and p.kg <= DEPTHWISE_MAX_MULTIPLIER
    if algo == KC_ALGO_DIRECT:
        return KC_OK
    if algo == KC_ALGO_AUTO:
        m = AUTO_MIN_CHANNELS_2D if p.kh != 1 else AUTO_MIN_CHANNELS_1D
        if unsupported or p.cg < m or p.kg < m:
            return KC_OK
        if p.kh == 5 and p.cg > AUTO_MAX_CHANNELS_5X5:     # F(4x4, 5x5)'s float32 error grows with C
            return KC_OK
        m = winograd_tile(p)
        if p.kh == 1 and p.dw > 1 and tile_waste(p, m) > AUTO_MAX_TILE_WASTE_DILATED:
            return KC_OK        # a dilation near the row's length leaves each residue a few outputs
    elif algo == KC_ALGO_WINOGRAD or algo == 2 or algo == 4 or algo == 6:
        if unsupported:
            if err != NULL and errlen > 0:
                snprintf(err, errlen, "the Winograd algorithm cannot run this convolution: %s; use 'auto' or "
                         "'direct'", reason)
            return KC_ERR_ARGUMENT
        m = winograd_tile(p) if algo == KC_ALGO_WINOGRAD else algo
        if m + p.kw - 1 != 4 and m + p.kw - 1 != 6 and m + p.kw - 1 != 8:
            if err != NULL and errlen > 0:
                snprintf(err, errlen, "the Winograd tile F(%d, %ld) does not exist here (alpha %ld; kconv has 4, 6 "
                         "and 8): for %ld taps use 'winograd'%s", m, <long> p.kw, <long> (m + p.kw - 1),
                         <long> p.kw, " or 'winograd2' (F(2, 5)) / 'winograd4' (F(4, 5))" if p.kw == 5 else "")
            return KC_ERR_ARGUMENT
    else:
        return fail(err, errlen, KC_ERR_ARGUMENT, "unknown algorithm")
    p.fwd_m = m
    # the input gradient is a forward pass over dy padded by (k - 1) d - pad: impossible when a pad is wider
    if (p.pt <= (p.kh - 1) * p.dh and p.pb <= (p.kh - 1) * p.dh and p.pl <= (p.kw - 1) * p.dw
            and p.pr <= (p.kw - 1) * p.dw):
        p.bwd_m = m
    p.grad_m = m
    if algo == KC_ALGO_AUTO:
        # the filter gradient sums every tile of the batch in float64 over runs of 64 (winograd_filter_grad.pxi),
        # which keeps F(4x4)'s error near 3e-6 of max|dW|; F(4x4) beats F(2x2) on every 2-D map that
        # Winograd wins at all. Against direct it wins from 64 channels in and out (1.2-2.1x on 8x8..56x56,
        # batch 8-64) and loses at 16 (0.6-0.8x): `python benchmarks/algorithm_sweep.py --passes dw --threads 2
        # --maps 8,14,16,28,32 --channels 16,32,64,128` and `--batch 8 --maps 56,28,14,8 --channels
        # 16,32,64,128,256`, 2-CPU Zen 4 AVX-512. At 32 Zen 4 had it 1.1-1.2x on maps of 28x28 and up and 0.9x
        # at 14x14 and 16x16 (batch 64); Zen 5 (full-width AVX-512) 1.3-1.7x on every map 8x8..56x56 on one
        # thread and two (`--maps 8,14,16,28 --channels 16,24,32,48 --threads 1`: 14x14 1.31 -> 0.89 ms, 16x16
        # 1.66 -> 1.01), level at 16 and 24: so from 32 on every map. 1-D F(4, 3) is level with direct at 64
        # channels (L = 200 and 512) and wins at 128.
        # 5x5: F(4x4, 5x5) from 32 channels too. It had won and lost against direct by 10-30 %; since the
        # transformed planes stop aliasing in L1 (9982e83) it wins 1.1-2.0x on every map 7x7..56x56 at 32-128
        # channels and loses at 16 (0.8x, but 7x7): `python benchmarks/algorithm_sweep.py --kernel 5 --maps
        # 7,14,28,56 --channels 16,32,64,128 --passes dw --threads 2`, 2-CPU Zen 5 AVX-512; its error, 5-7e-6 of
        # max|dW| (float64 reference), is the forward's.
        if p.kh == 3 or p.kh == 5:
            p.grad_m = 4
        if p.kh != 1:
            if p.cg < AUTO_MIN_GRAD_CHANNELS_2D or p.kg < AUTO_MIN_GRAD_CHANNELS_2D:
                p.grad_m = 0
        elif p.cg < AUTO_MIN_GRAD_CHANNELS or p.kg < AUTO_MIN_GRAD_CHANNELS:
            p.grad_m = 0
        # the transformed gradient (alpha^2 x C x K) outweighs few tiles: direct while tiles x (C + K) < 2 C K.
        # Direct: 1.6x faster on 16x7x7x512, 1.5x on 8x8x8x128 (tiles x (C + K) = C K / 4, C K / 2), 9.4-10.0
        # against 10.3-11.2 ms on 8x14x14x256 (= C K). At 2 C K F(4x4) wins (numpy API, 2-CPU Zen 4 AVX-512,
        # two threads / one: 32x8x8x128 2.26 / 3.94 against 3.80 / 6.88 ms, 8x16x16x128 2.25 / 3.46 against
        # 3.46 / 6.42, 16x8x8x64 0.37 / 0.48 against 0.53 / 0.83, 8x14x14x128 2.22 / 3.83 against 2.69 / 5.00)
        # or ties (16x14x14x256 19.6 / 36.7 against 19.2 / 39.0). F(2x2), with more tiles, won only on
        # 8x14x14x256 (8-16 %) and lost on 8x8x8x128, 16x7x7x256, 32x7x7x512: not a fallback.
        if p.grad_m and winograd_tiles(p, p.grad_m, p.Ho, p.Wo) * (p.cg + p.kg) < 2 * p.cg * p.kg:
            p.grad_m = 0
    tiles = winograd_tiles(p, m, p.Ho, p.Wo)
    p.fwd_staged = tiles * (p.C + p.K) < p.C * p.K
    tiles = winograd_tiles(p, m, p.H, p.W)
    p.bwd_staged = tiles * (p.C + p.K) < p.C * p.K
    return KC_OK


cdef inline Py_ssize_t block_unit(const Plan* p) noexcept nogil:
    """Input channels a filter-gradient block is a multiple of: whole tile rows (MR), or whole vectors where
    the last panel's few filters run transposed, channels across the lanes (filter_grad.pxi, grad_tail)."""
    cdef Py_ssize_t mr = KC_MR_F32 if p.itemsize == 4 else KC_MR_F64
    cdef Py_ssize_t lanes = KC_VEC_BYTES // p.itemsize
    if p.itemsize == 4 and lanes % mr == 0 and p.cg >= lanes and 0 < p.kg % KC_NR_F32 <= TAIL_COLS:
        return lanes
    return mr


cdef inline Py_ssize_t winograd_tile_area(const Plan* p, int m) noexcept nogil:
    """Values in one transformed tile of F(m, k): alpha x alpha in 2-D, alpha in 1-D (kh = 1 keeps rows whole)."""
    return (m + p.kh - 1 if p.kh != 1 else 1) * (m + p.kw - 1)


cdef inline Py_ssize_t winograd_block(Py_ssize_t A2, Py_ssize_t C, Py_ssize_t K) noexcept nogil:
    """Tiles a block of winograd_conv takes (BLOCK_PANELS .. BLOCK_PANELS_MAX row panels, from the shape)."""
    cdef Py_ssize_t panels = BLOCK_VALUES // (A2 * (C + K) * KC_MR_F32)
    panels = BLOCK_PANELS if panels < BLOCK_PANELS else (BLOCK_PANELS_MAX if panels > BLOCK_PANELS_MAX else panels)
    return panels * KC_MR_F32


cdef void choose_splits(Plan* p) noexcept nogil:
    """The filter gradient's pixel chunk, split and channel block (direct) and tile chunk (Winograd): from the
    shape only, never the thread count, so results are the same on any number of threads (only the split
    changes the order of the sums; blocks and chunks do not)."""
    cdef Py_ssize_t taps = p.kh * p.kw, pixels = p.N * p.Ho * p.Wo
    cdef Py_ssize_t cmin = smallest_block(p), cb, nblocks, splits, plane_bytes, alpha2, chunk, unit, runs, lanes
    cdef Py_ssize_t tiles
    # channel blocks: whole micro-kernel panels (or vectors: block_unit), at least 32 rows, sums within L2
    cb = FILTER_GRAD_BLOCK_BYTES // (taps * (p.kg if p.kg > 0 else 1) * p.itemsize)
    unit = block_unit(p)
    cb = (cb // unit) * unit if cb >= unit else unit
    cb = cmin if cb < cmin else cb
    cb = p.cg if cb > p.cg else cb
    nblocks = ceil_div(p.cg, cb) if cb > 0 else 1
    # splits for the tasks blocks cannot give, each at least FILTER_GRAD_SPLIT_PIXELS, all within the cap
    splits = ceil_div(FILTER_GRAD_TARGET_TASKS, p.groups * nblocks)
    if pixels // FILTER_GRAD_SPLIT_PIXELS < splits:
        splits = pixels // FILTER_GRAD_SPLIT_PIXELS
    plane_bytes = p.groups * p.kg * taps * p.cg * p.itemsize
    if plane_bytes > 0 and FILTER_GRAD_PARTIAL_BYTES // plane_bytes < splits:
        splits = FILTER_GRAD_PARTIAL_BYTES // plane_bytes
    splits = splits if splits > 1 else 1
    p.fg_chunk = FILTER_GRAD_CHUNK_PIXELS
    p.fg_splits = splits
    p.fg_cblock = cb if cb > 0 else 1
    alpha2 = winograd_tile_area(p, p.grad_m)
    chunk = WINOGRAD_GRAD_CHUNK_VALUES // (alpha2 * (p.C + p.K)) if p.grad_m else 16
    p.wg_chunk = 16 if chunk < 16 else (1024 if chunk > 1024 else chunk)
    p.wg_lanes, p.wg_sub = 0, 0
    if p.grad_m:
        # lanes: one a CPU of this process's (2 to WINOGRAD_GRAD_LANES; never the thread setting), each at
        # least a run, all within the bytes, each transforming at least WINOGRAD_GRAD_LANE_WORK values per
        # float64 sum it keeps; else the phases
        tiles = winograd_tiles(p, p.grad_m, p.Ho, p.Wo)
        runs = ceil_div(tiles, WINOGRAD_GRAD_SUM_TILES)
        lanes = g_cpus if g_cpus > 2 else 2
        lanes = WINOGRAD_GRAD_LANES if lanes > WINOGRAD_GRAD_LANES else lanes
        if lanes * alpha2 * p.K * p.C * 8 > WINOGRAD_GRAD_LANE_BYTES:
            lanes = WINOGRAD_GRAD_LANE_BYTES // (alpha2 * p.K * p.C * 8)
        lanes = runs if lanes > runs else lanes
        while lanes >= 2 and tiles // lanes * (p.C + p.K) < WINOGRAD_GRAD_LANE_WORK * p.K * p.C:
            lanes -= 1
        if lanes >= 2:
            p.wg_lanes = lanes
            # a thread's transformed values at once: whole runs, about WINOGRAD_GRAD_SUB_VALUES
            unit = WINOGRAD_GRAD_SUB_VALUES // (alpha2 * (p.C + p.K) * WINOGRAD_GRAD_SUM_TILES)
            p.wg_sub = (unit if unit > 1 else 1) * WINOGRAD_GRAD_SUM_TILES


cdef int build_taps(Plan* p) noexcept nogil:
    """The forward taps and the input gradient's phases. Returns 0, or -1 when memory runs out."""
    cdef Py_ssize_t ntaps = p.kh * p.kw, i, j, t, rh, rw, ph, nh, nw
    cdef Py_ssize_t nphases = (p.sh if p.sh < p.H else p.H) * (p.sw if p.sw < p.W else p.W)
    p.ntaps = ntaps
    p.nphases = nphases
    p.tap_h = <Py_ssize_t*> malloc(6 * ntaps * sizeof(Py_ssize_t))
    p.phases = <Phase*> malloc((nphases if nphases > 0 else 1) * sizeof(Phase))
    if p.tap_h == NULL or p.phases == NULL:
        return -1
    p.tap_w, p.tap_off = p.tap_h + ntaps, p.tap_h + 2 * ntaps
    p.ph_tap_h, p.ph_tap_w, p.ph_tap_off = p.tap_h + 3 * ntaps, p.tap_h + 4 * ntaps, p.tap_h + 5 * ntaps
    for i in range(p.kh):
        for j in range(p.kw):
            t = i * p.kw + j
            p.tap_h[t] = i * p.dh - p.pt
            p.tap_w[t] = j * p.dw - p.pl
            p.tap_off[t] = t * p.cg * p.K
    # Input pixels rh + qh * sh see the taps i with (rh + pt - i * dh) divisible by sh, each reading output
    # row qh + (rh + pt - i * dh) / sh: one phase per residue, so strided layers do no zero-stuffed work.
    t = 0
    ph = 0
    for rh in range(p.sh if p.sh < p.H else p.H):
        for rw in range(p.sw if p.sw < p.W else p.W):
            p.phases[ph].rh, p.phases[ph].rw = rh, rw
            p.phases[ph].qh, p.phases[ph].qw = ceil_div(p.H - rh, p.sh), ceil_div(p.W - rw, p.sw)
            p.phases[ph].t0 = t
            for i in range(p.kh - 1, -1, -1):        # flipped, so a phase's taps read dy left to right
                nh = rh + p.pt - i * p.dh                 # (merged_run merges a row of them)
                if nh % p.sh:
                    continue
                for j in range(p.kw - 1, -1, -1):
                    nw = rw + p.pl - j * p.dw
                    if nw % p.sw:
                        continue
                    p.ph_tap_h[t] = nh // p.sh
                    p.ph_tap_w[t] = nw // p.sw
                    p.ph_tap_off[t] = (i * p.kw + j) * p.cg * p.K
                    t += 1
            p.phases[ph].nt = t - p.phases[ph].t0
            ph += 1
    return 0


cdef void plan_free(Plan* p) noexcept nogil:
    if p == NULL:
        return
    free(p.tap_h)
    free(p.phases)
    free(p.cache_w)
    free(p.cache_panels)
    pthread_mutex_destroy(&p.lock)
    free(p)


cdef Plan* plan_new(const kc_conv_desc* d, char* err, int errlen) noexcept nogil:
    cdef Plan* p = <Plan*> calloc(1, sizeof(Plan))
    if p == NULL:
        fail(err, errlen, KC_ERR_MEMORY, "out of memory for a convolution plan")
        return NULL
    pthread_mutex_init(&p.lock, NULL)
    if describe(d, p, err, errlen) != KC_OK or choose_algorithms(d, p, err, errlen) != KC_OK:
        plan_free(p)
        return NULL
    choose_splits(p)
    if build_taps(p):
        plan_free(p)
        fail(err, errlen, KC_ERR_MEMORY, "out of memory for the convolution's taps")
        return NULL
    return p


# ---- the Winograd matrices of a plan's tile, per axis (the H axis of a 1-D convolution is the identity)

cdef struct AxisMatrices:
    int m, alpha
    const double* AT
    const double* G
    const double* BT
    const double* A


cdef AxisMatrices axis_matrices(int m, int r, bint spans) noexcept nogil:
    """The matrices of F(m, r) along one axis (r = 3; 1-D also 4 to 7), or the identity of an axis the
    kernel does not span. A^T, G and B^T of r = 4, 5 are microkernel.h's (A: none, only r = 3 has one)."""
    cdef AxisMatrices out
    if spans and r != 3:
        out.m = m
        out.alpha = m + r - 1
        out.A = NULL
        if out.alpha == 6:
            out.BT = &kc_wino_bt6[0]
            if r == 4:
                out.AT, out.G = &kc_wino_at6_m3[0], &kc_wino_g6_r4[0]
            else:
                out.AT, out.G = &kc_wino_at6_m2[0], &kc_wino_g6_r5[0]
        else:
            out.BT = &kc_wino_bt8[0]
            if r == 4:
                out.AT, out.G = &kc_wino_at8_m5[0], &kc_wino_g8_r4[0]
            elif r == 5:
                out.AT, out.G = &kc_wino_at8_m4[0], &kc_wino_g8_r5[0]
            elif r == 6:
                out.AT, out.G = &kc_wino_at8_m3[0], &kc_wino_g8_r6[0]
            else:
                out.AT, out.G = &kc_wino_at8_m2[0], &kc_wino_g8_r7[0]
        return out
    if not spans:
        out.m, out.alpha, out.AT, out.G, out.BT, out.A = 1, 1, WINO_ONE, WINO_ONE, WINO_ONE, WINO_ONE
    elif m == 2:
        out.m, out.alpha, out.AT, out.G, out.BT, out.A = 2, 4, WINO_AT2, WINO_G2, WINO_BT2, WINO_A2
    elif m == 4:
        out.m, out.alpha, out.AT, out.G, out.BT, out.A = 4, 6, WINO_AT4, WINO_G4, WINO_BT4, WINO_A4
    else:
        out.m, out.alpha, out.AT, out.G, out.BT, out.A = 6, 8, WINO_AT6, WINO_G6, WINO_BT6, WINO_A6
    return out


cdef WinoGrid wino_grid(const Plan* p, AxisMatrices* mh, AxisMatrices* mw, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t C, Py_ssize_t Ho, Py_ssize_t Wo, Py_ssize_t K, Py_ssize_t pad_top,
                        Py_ssize_t pad_left) noexcept nogil:
    cdef WinoGrid g
    g.N, g.H, g.W, g.C, g.Ho, g.Wo, g.K = p.N, H, W, C, Ho, Wo, K
    g.pad_top, g.pad_left = pad_top, pad_left
    g.mh, g.mw, g.ah, g.aw = mh.m, mw.m, mh.alpha, mw.alpha
    g.dw = p.dw if p.kh == 1 else 1
    g.rw = g.dw if g.dw < Wo else (Wo if Wo > 0 else 1)
    g.th, g.tw = ceil_div(Ho, mh.m), tile_columns(p, mw.m, Wo)
    return g


# ---- forward

# Whether plans keep the Winograd transform of weights that come twice in a row (inference). Off, every call
# transforms its weights, as in a training step: the bench's pass tables turn it off, because a node of their
# graphs sees the same weights on every call and would otherwise time inference's forward.
cdef int g_keep_filter_transforms = 1


def set_filter_cache(bint enabled):
    """Turns the kept filter transforms on or off (plans made before keep what they hold, unused while off);
    returns the previous setting."""
    global g_keep_filter_transforms
    cdef bint before = g_keep_filter_transforms
    g_keep_filter_transforms = enabled
    return before


cdef void sample_weights(const Plan* p, const real* w, double* out) noexcept nogil:
    """16 values spread over the weights: equal samples on two calls in a row mean inference."""
    cdef Py_ssize_t n = p.kh * p.kw * p.cg * p.K, step = n // 16 if n >= 16 else 1, i
    for i in range(16):
        out[i] = w[(i * step) % n] if n else 0


cdef const real* cached_panels(Plan* p, const real* w) noexcept nogil:
    """The kept transform of w, when w equals the kept weights exactly (never served stale)."""
    cdef const real* panels = NULL
    if not g_keep_filter_transforms:
        return NULL
    pthread_mutex_lock(&p.lock)
    if p.cache_w != NULL and memcmp(p.cache_w, w, p.kh * p.kw * p.cg * p.K * sizeof(real)) == 0:
        panels = <const real*> p.cache_panels
    pthread_mutex_unlock(&p.lock)
    return panels


cdef bint repeated_weights(Plan* p, const real* w) noexcept nogil:
    """Whether w looks like the weights of the previous call (their sample matches); records w's sample."""
    cdef double sample[16]
    cdef bint repeat
    if not g_keep_filter_transforms:
        return False
    sample_weights(p, w, sample)
    pthread_mutex_lock(&p.lock)
    repeat = p.have_sample and memcmp(sample, p.sample, sizeof(sample)) == 0
    memcpy(p.sample, sample, sizeof(sample))
    p.have_sample = True
    pthread_mutex_unlock(&p.lock)
    return repeat


cdef bint offer_panels(Plan* p, const real* w, real* panels) noexcept nogil:
    """Keeps panels (w's transform) when the same weights came twice in a row, as in inference; training
    changes them every step and pays only for the sample. Returns True when the plan took panels."""
    cdef double sample[16]
    cdef bint repeat
    cdef Py_ssize_t nw = p.kh * p.kw * p.cg * p.K
    cdef void* copy
    if not g_keep_filter_transforms:
        return False
    sample_weights(p, w, sample)
    pthread_mutex_lock(&p.lock)
    repeat = p.have_sample and memcmp(sample, p.sample, sizeof(sample)) == 0
    memcpy(p.sample, sample, sizeof(sample))
    p.have_sample = True
    if repeat and p.cache_w == NULL:
        copy = malloc(nw * sizeof(real))
        if copy != NULL:
            memcpy(copy, w, nw * sizeof(real))
            p.cache_w, p.cache_panels = copy, panels
    repeat = p.cache_panels == <void*> panels
    pthread_mutex_unlock(&p.lock)
    return repeat


cdef int winograd_run(const Plan* p, const real* x, const real* filters, bint rotate, real* y,
                      const Epilogue* ep, int n_threads) noexcept nogil:
    """The forward pass (rotate False: y = x * filters) or the input gradient (rotate True: x is dy and
    y is dx = dy * rot180(filters) with in/out channels swapped) by Winograd. Returns 0; 1 when the caller
    must run the pass directly (y met a non-finite value, or few tiles meet new weights); -1 when memory
    runs out."""
    cdef int m = p.bwd_m if rotate else p.fwd_m
    cdef AxisMatrices mh = axis_matrices(m, <int> p.kh, p.kh != 1), mw = axis_matrices(m, <int> p.kw, True)
    cdef Py_ssize_t C = p.K if rotate else p.C, K = p.C if rotate else p.K
    cdef Py_ssize_t NR = tile_cols(y), A2 = mh.alpha * mw.alpha
    cdef Py_ssize_t npanels = A2 * panel_plane_values(C, K, <int> NR, sizeof(real))
    cdef WinoGrid grid
    cdef const real* panels = NULL
    cdef real* own = NULL
    cdef real* work = NULL
    cdef bint staged = p.bwd_staged if rotate else p.fwd_staged
    cdef int status = 0
    if rotate:
        if staged:     # few tiles: transforming the filters every call costs more than the direct pass saves
            return 1
        grid = wino_grid(p, &mh, &mw, p.Ho, p.Wo, C, p.H, p.W, K, (p.kh - 1) * p.dh - p.pt,
                         (p.kw - 1) * p.dw - p.pl)
    else:
        grid = wino_grid(p, &mh, &mw, p.H, p.W, C, p.Ho, p.Wo, K, p.pt, p.pl)
        panels = cached_panels(<Plan*> p, filters)
        # Few tiles (batch 1, many channels): Winograd pays only once the filters' transform is kept, i.e.
        # for weights that repeat (inference). New weights (training) run direct: 7x7x512 at batch 1 took 55 ms
        # by Winograd with a fresh transform, 8.2 direct, 4.3 by Winograd with the transform kept.
        if panels == NULL and staged and not repeated_weights(<Plan*> p, filters):
            return 1
    if panels == NULL:
        own = <real*> malloc(npanels * sizeof(real))
        if own == NULL:
            return -1
        if staged:
            status = filter_transform_panels(filters, p.kh, p.kw, C, K, mh.alpha, mw.alpha, rotate, own, n_threads)
            if status:
                free(own)
                return -1
            panels = own
    if staged:
        work = <real*> scratch_alloc(A2 * (plane_values(grid.N * grid.th * grid.tw, C, sizeof(real))
                                           + plane_values(grid.N * grid.th * grid.tw, K, sizeof(real))) * sizeof(real))
        if work == NULL:
            free(own)
            return -1
        status = winograd_conv_staged(x, y, grid, panels, work, ep, n_threads)
    elif panels == NULL:        # the filters' transform in the tiles' parallel region
        status = winograd_conv(x, y, grid, own, winograd_block(A2, C, K), ep, filters, p.kh, p.kw, rotate,
                               n_threads)
    else:
        status = winograd_conv(x, y, grid, <real*> panels, winograd_block(A2, C, K), ep, NULL, 0, 0, False,
                               n_threads)
    if own != NULL and status >= 0 and not rotate and offer_panels(<Plan*> p, filters, own):
        own = NULL          # the plan keeps them
    scratch_free(work)
    free(own)
    return status


# The forward reads the filter where it lies, not a packed copy, when every column panel is whole and each
# tap's reduction is long (>= IN_PLACE_MIN_CIN channels), for 1x1 kernels (one call per tile either way), and
# for layers with few output pixels (<= IN_PLACE_MAX_ROWS), where packing the filter, a parallel region of its
# own, is a large part of the pass. Many-pixel 3x3 layers keep the packed panels: a call per tap costs them
# 6-16 % (plan level, 2-core AVX-512 Xeon: 8x8x64 batch 8 1.38x faster in place, 7x7x512 batch 1 1.15x, 1x1
# 56x56 64->128 stride 2 1.21x; 56x56x64 batch 8 0.84x).
# Except where the filter's rows lie 1 KB or more apart (256 output channels and up) and the layer has more
# than one row block (MR x PANELS_PER_BLOCK pixels): a tile's column panel then takes one or two cache lines
# every 1 KB, which fall in a sixteenth of L1's sets and L2's, so each row block read it from L3 again. There
# the packed panels win (numpy API, 2-CPU Zen 5, one thread / two: 3x3 2x14x14x256 2.45 / 1.34 ms in place,
# 1.91 / 1.12 packed; 1x14x14x256 1.26 / 0.68 against 1.01 / 0.69; 4x7x7x512 5.80 / 2.89 against 5.41 / 3.00)
# and at one block in place still does (1x7x7x512 1.89 / 0.99 against 2.72 / 1.54).
cdef enum:
    IN_PLACE_MIN_CIN = 64
    IN_PLACE_MAX_ROWS = 1024
    IN_PLACE_ALIASING_BYTES = 1024


cdef inline bint filters_in_place(const Plan* p, Py_ssize_t cin, Py_ssize_t cout, int NR) noexcept nogil:
    cdef Py_ssize_t rows = p.N * p.Ho * p.Wo
    if cout % NR or cin < IN_PLACE_MIN_CIN or few_channels(p.ntaps, cin):
        return False
    if p.ntaps == 1:
        return True
    return rows <= IN_PLACE_MAX_ROWS and (p.K * p.itemsize < IN_PLACE_ALIASING_BYTES
                                          or rows <= KC_MR_F32 * PANELS_PER_BLOCK)


cdef inline bint few_filters(real* dst, Py_ssize_t cin, Py_ssize_t cout, Py_ssize_t ntaps) noexcept nogil:
    """At most TAIL_COLS output channels over whole vectors of input channels, and a reduction (taps x input
    channels) of at least a vector per filter: the wide tile's transposed tail takes the whole layer (dot
    products, channels across the lanes) where the narrow tile would leave most of its lanes idle (one core,
    AVX-512, the input gradient of a grey 5x5 32-filter layer: 13.4 ms on the narrow tile). Each of the tail's
    outputs ends in a sum across the lanes, so a short reduction goes to the narrow tile: a U-Net's 1x1 16 -> 4
    head (8x64x64) 0.55 ms on the tail, 0.22 on the narrow tile; 1x1 32 -> 8 0.66 against 0.33; the tail wins
    from cout x lanes <= taps x cin (1x1 16 -> 1 0.14 against 0.20, 1x1 64 -> 4 0.47 against 0.51, 3x3 16 -> 3
    0.63 against 0.86; numpy API, one core, 2-CPU Zen 5)."""
    cdef Py_ssize_t lanes = tile_cols(dst) // 2
    return real is float and cout <= TAIL_COLS and cin >= lanes and cout * lanes <= ntaps * cin


cdef int direct_run(const Plan* p, const real* src, const real* w, real* dst, bint input_gradient,
                    const Epilogue* ep, int n_threads) noexcept nogil:
    """The forward pass, or the input gradient phase by phase, as an indirect GEMM. 0, or -1 (memory).
    At most half a tile of output channels per group runs on the narrow tile (none of its columns idle)."""
    cdef Py_ssize_t cin = p.kg if input_gradient else p.cg, cout = p.cg if input_gradient else p.kg
    cdef bint narrow = cout <= tile_cols(dst) // 2 and not few_filters(dst, cin, cout, p.ntaps)
    cdef int NR = shape_cols(dst, narrow)
    cdef Py_ssize_t ncolp = ceil_div(cout, NR), ph, t0, nt
    cdef Py_ssize_t* panel_off
    cdef ConvGrid grid
    cdef real* panels = <real*> scratch_alloc((p.groups * ncolp * p.ntaps * cin * NR + 1) * sizeof(real))
    cdef real* zeros = <real*> calloc(p.ntaps * cin + 1, sizeof(real))   # a merged tap reads taps x cin
    cdef int status = 0
    if panels == NULL or zeros == NULL:
        scratch_free(panels)
        free(zeros)
        return -1
    grid.groups, grid.cin, grid.cout, grid.narrow = p.groups, cin, cout, narrow
    if not input_gradient:
        grid.N, grid.Hs, grid.Ws, grid.Cs = p.N, p.H, p.W, p.C
        grid.Hd, grid.Wd, grid.Cd = p.Ho, p.Wo, p.K
        grid.Qh, grid.Qw, grid.step_h, grid.step_w = p.Ho, p.Wo, p.sh, p.sw
        grid.dst_h0 = grid.dst_w0 = 0
        grid.dstep_h = grid.dstep_w = 1
        if filters_in_place(p, cin, cout, NR):
            status = igemm_conv(src, dst, grid, p.tap_h, p.tap_w, p.ntaps, panels, zeros, ep, n_threads,
                                w, p.tap_off)
        else:
            pack_filter_panels(w, p.tap_off, p.ntaps, p.groups, p.kg, cin, p.K, cout, 1, panels, NR, n_threads)
            status = igemm_conv(src, dst, grid, p.tap_h, p.tap_w, p.ntaps, panels, zeros, ep, n_threads)
    else:
        grid.N, grid.Hs, grid.Ws, grid.Cs = p.N, p.Ho, p.Wo, p.K
        grid.Hd, grid.Wd, grid.Cd = p.H, p.W, p.C
        grid.step_h = grid.step_w = 1
        grid.dstep_h, grid.dstep_w = p.sh, p.sw
        if p.nphases == 1:
            grid.Qh, grid.Qw = p.phases[0].qh, p.phases[0].qw
            grid.dst_h0, grid.dst_w0 = p.phases[0].rh, p.phases[0].rw
            pack_filter_panels(w, p.ph_tap_off, p.phases[0].nt, p.groups, p.kg, cin, 1, cout, p.K, panels, NR,
                               n_threads)
            status = igemm_conv(src, dst, grid, p.ph_tap_h, p.ph_tap_w, p.phases[0].nt, panels, zeros, ep,
                                n_threads)
        else:       # phase ph's panels start where the taps before it end
            panel_off = <Py_ssize_t*> malloc(p.nphases * sizeof(Py_ssize_t))
            if panel_off == NULL:
                status = -1
            else:
                for ph in range(p.nphases):
                    t0, nt = p.phases[ph].t0, p.phases[ph].nt
                    panel_off[ph] = p.groups * ncolp * t0 * cin * NR
                    pack_filter_panels(w, p.ph_tap_off + t0, nt, p.groups, p.kg, cin, 1, cout, p.K,
                                       panels + panel_off[ph], NR, n_threads)
                status = igemm_conv_phases(src, dst, grid, p.phases, p.nphases, p.ph_tap_h, p.ph_tap_w, panels,
                                           panel_off, zeros, ep, n_threads)
                free(panel_off)
    scratch_free(panels)
    free(zeros)
    return status


cdef int depthwise_grid(const Plan* p, ConvGrid* grid, bint input_gradient) noexcept nogil:
    """The ConvGrid of a depthwise pass: the forward over x, or the input gradient over dy (the caller sets
    each phase's Qh, Qw, dst_h0, dst_w0). Channels are K on both sides (a multiplier's input is expanded)."""
    grid.N, grid.groups, grid.cin, grid.cout, grid.narrow = p.N, 1, 1, p.K, False
    grid.Cs = grid.Cd = p.K
    if not input_gradient:
        grid.Hs, grid.Ws, grid.Hd, grid.Wd = p.H, p.W, p.Ho, p.Wo
        grid.Qh, grid.Qw, grid.step_h, grid.step_w = p.Ho, p.Wo, p.sh, p.sw
        grid.dst_h0 = grid.dst_w0 = 0
        grid.dstep_h = grid.dstep_w = 1
    else:
        grid.Hs, grid.Ws, grid.Hd, grid.Wd = p.Ho, p.Wo, p.H, p.W
        grid.step_h = grid.step_w = 1
        grid.dstep_h, grid.dstep_w = p.sh, p.sw
    return 0


cdef real* expanded_input(const Plan* p, const real* x, int n_threads) noexcept nogil:
    """x with each channel repeated kg times (a depth multiplier's input), or NULL when out of memory."""
    cdef real* xr = <real*> scratch_alloc((p.N * p.H * p.W * p.K + 1) * sizeof(real))
    if xr != NULL:
        expand_channels(x, p.N * p.H * p.W, p.C, p.kg, xr, n_threads)
    return xr


cdef int depthwise_forward_run(const Plan* p, const real* x, const real* w, real* y, const Epilogue* ep,
                               int n_threads) noexcept nogil:
    cdef ConvGrid grid
    cdef Phase whole
    cdef real* xr = NULL
    cdef real* zeros = <real*> calloc(p.K + 1, sizeof(real))
    cdef int status = -1
    if p.kg > 1:
        xr = expanded_input(p, x, n_threads)
    if zeros != NULL and (p.kg == 1 or xr != NULL):
        depthwise_grid(p, &grid, False)
        whole.rh, whole.rw, whole.qh, whole.qw, whole.t0, whole.nt = 0, 0, p.Ho, p.Wo, 0, p.ntaps
        status = depthwise_conv(x if xr == NULL else xr, y, grid, &whole, 1, p.tap_h, p.tap_w, p.tap_off, w,
                                zeros, ep, n_threads)
    scratch_free(xr)
    free(zeros)
    return status


cdef int depthwise_input_run(const Plan* p, const real* w, const real* dy, real* dx, const Epilogue* ep,
                             int n_threads) noexcept nogil:
    """dx over every stride phase at once (depthwise_conv); with a multiplier, into an expanded dx whose
    copies are then added (and the epilogue applied after them)."""
    cdef ConvGrid grid
    cdef real* dxr = NULL
    cdef real* zeros = <real*> calloc(p.K + 1, sizeof(real))
    cdef int status = 0
    if p.kg > 1:
        dxr = <real*> scratch_alloc((p.N * p.H * p.W * p.K + 1) * sizeof(real))
    if zeros == NULL or (p.kg > 1 and dxr == NULL):
        free(zeros)
        scratch_free(dxr)
        return -1
    depthwise_grid(p, &grid, True)
    grid.dst_h0 = grid.dst_w0 = 0          # each phase's origin comes with it
    status = depthwise_conv(dy, dx if dxr == NULL else dxr, grid, p.phases, p.nphases, p.ph_tap_h, p.ph_tap_w,
                            p.ph_tap_off, w, zeros, ep if dxr == NULL else NULL, n_threads)
    if status == 0 and dxr != NULL:
        fold_channels(dxr, p.N * p.H * p.W, p.C, p.kg, dx, n_threads)
        if ep != NULL:
            epilogue_rows(dx, p.N * p.H * p.W, p.C, ep, n_threads)
    scratch_free(dxr)
    free(zeros)
    return status


cdef int depthwise_filter_run(const Plan* p, const real* x, const real* dy, real* dw, int n_threads) noexcept nogil:
    """dw (kh, kw, 1, K) from fixed row chunks of partial sums, added in order in float64."""
    cdef ConvGrid grid
    cdef Py_ssize_t rows = p.N * p.Ho, plane = p.ntaps * p.K, i
    cdef Py_ssize_t nsplit = rows if rows < DEPTHWISE_SPLITS else DEPTHWISE_SPLITS, chunk
    cdef double* total = NULL
    cdef real* xr = NULL
    cdef real* partial
    cdef real* zeros = <real*> calloc(p.K + 1, sizeof(real))
    cdef int status = -1
    if nsplit > 1 and nsplit * plane * p.itemsize > FILTER_GRAD_PARTIAL_BYTES:
        nsplit = FILTER_GRAD_PARTIAL_BYTES // (plane * p.itemsize)
        if nsplit < 1:
            nsplit = 1
    chunk = ceil_div(rows, nsplit)
    nsplit = ceil_div(rows, chunk)
    partial = <real*> scratch_alloc((nsplit * plane + 1) * sizeof(real))
    if p.kg > 1:
        xr = expanded_input(p, x, n_threads)
    if partial != NULL and zeros != NULL and (p.kg == 1 or xr != NULL):
        depthwise_grid(p, &grid, False)
        status = depthwise_filter_grad(x if xr == NULL else xr, dy, partial, grid, p.tap_h, p.tap_w, p.ntaps,
                                       nsplit, chunk, zeros, n_threads)
        if status == 0 and sum_splits(partial, nsplit, plane, &total, n_threads) == 0:
            for i in range(plane):         # (taps, K) is already dw's layout (kh, kw, 1, K)
                dw[i] = <real> total[i]
        elif status == 0:
            status = -1
    scratch_free(total)
    scratch_free(xr)
    scratch_free(partial)
    free(zeros)
    return status


cdef int run_forward(const Plan* p, const real* x, const real* w, const real* bias, real* y, real* z) noexcept nogil:
    cdef Epilogue ep
    cdef const Epilogue* use = NULL
    cdef int status = 0, n_threads
    cdef TeamBinding binding
    kc_count_pass(0)
    if p.N * p.Ho * p.Wo * p.K == 0:
        return 0
    ep.act, ep.bias, ep.y0 = p.act, bias, y
    ep.z0 = z if needs_preactivation(p.act) else NULL
    if bias != NULL or p.act != ACT_LINEAR:
        use = &ep
    n_threads = claim_threads(p.flops, p.threads)
    bind_team(&binding, n_threads, p.flops, &(<Plan*> p).slow[0])
    if p.depthwise:
        status = depthwise_forward_run(p, x, w, y, use, n_threads)
    elif p.fwd_m:
        status = winograd_run(p, x, w, False, y, use, n_threads)
    if not p.depthwise and (p.fwd_m == 0 or status == 1):     # direct, or Winograd met a NaN/Inf (it smears one over a tile)
        status = direct_run(p, x, w, y, False, use, n_threads)
    unbind_team(&binding)
    kc_release_threads(n_threads)
    return status


cdef void epilogue_rows(real* y, Py_ssize_t rows, Py_ssize_t K, const Epilogue* ep, int n_threads) noexcept nogil:
    """The epilogue over rows x K values (for outputs no kernel applied it to)."""
    cdef Py_ssize_t r
    n_threads = phase_threads(rows, rows * K, n_threads)
    for r in prange(rows, schedule='static', num_threads=n_threads):
        apply_epilogue(y + r * K, K, <const real*> ep.bias, ep)


cdef int run_backprop_input(const Plan* p, const real* w, const real* dy, const real* bias, real* dx,
                            real* z) noexcept nogil:
    """dx = act(conv^T(dy) + bias) with the plan's activation: a convolution's input gradient (a plan made
    with no activation, bias NULL), or a transposed convolution with its bias and activation fused."""
    cdef Epilogue ep
    cdef const Epilogue* use = NULL
    cdef int status = 0, n_threads
    cdef TeamBinding binding
    kc_count_pass(1)
    if p.N * p.H * p.W * p.C == 0:
        return 0
    ep.act, ep.bias, ep.y0 = p.act, bias, dx
    ep.z0 = z if needs_preactivation(p.act) else NULL
    if bias != NULL or p.act != ACT_LINEAR:
        use = &ep
    n_threads = claim_threads(p.flops, p.threads)
    bind_team(&binding, n_threads, p.flops, &(<Plan*> p).slow[1])
    if p.Ho * p.Wo * p.K == 0:
        memset(dx, 0, p.N * p.H * p.W * p.C * sizeof(real))
        if use != NULL:
            epilogue_rows(dx, p.N * p.H * p.W, p.C, use, n_threads)
    elif p.depthwise:
        status = depthwise_input_run(p, w, dy, dx, use, n_threads)
    elif p.bwd_m:
        status = winograd_run(p, dy, w, True, dx, use, n_threads)
    if p.Ho * p.Wo * p.K != 0 and not p.depthwise and (p.bwd_m == 0 or status == 1):
        status = direct_run(p, dy, w, dx, True, use, n_threads)
    unbind_team(&binding)
    kc_release_threads(n_threads)
    return status


cdef bint all_finite(const real* v, Py_ssize_t n) noexcept nogil:
    return not any_nonfinite(v, n)


cdef int winograd_filter_run(const Plan* p, const real* x, const real* dy, real* dw, int n_threads) noexcept nogil:
    """dW = G^T [sum over tiles (A dY A^T) (.) (B^T X B)] G. Returns 0, 1 (non-finite: recompute), -1."""
    cdef AxisMatrices mh = axis_matrices(p.grad_m, <int> p.kh, p.kh != 1)
    cdef AxisMatrices mw = axis_matrices(p.grad_m, <int> p.kw, True)
    cdef Py_ssize_t A2 = mh.alpha * mw.alpha, C = p.C
    cdef WinoGrid grid = wino_grid(p, &mh, &mw, p.H, p.W, p.C, p.Ho, p.Wo, p.K, p.pt, p.pl)
    cdef double* mgrad = NULL
    cdef Py_ssize_t per_thread = thread_stride((p.kh * mw.alpha + 1) * C, sizeof(double))
    cdef double* sums
    mgrad = <double*> scratch_alloc((p.wg_lanes if p.wg_lanes else 1) * A2 * p.K * C * sizeof(double))
    if mgrad == NULL:
        return -1
    if p.wg_lanes:      # the lanes add themselves and finish dW in their own region
        if winograd_filter_grad_lanes(x, dy, mgrad, grid, p.wg_lanes, p.wg_sub, mh.G, mw.G, p.kh, p.kw, dw,
                                      n_threads):
            scratch_free(mgrad)
            return -1
        scratch_free(mgrad)
        return 0 if all_finite(dw, p.kh * p.kw * C * p.K) else 1
    if winograd_filter_grad(x, dy, mgrad, grid, p.wg_chunk, n_threads):
        scratch_free(mgrad)
        return -1
    n_threads = phase_threads(p.K, A2 * p.K * C, n_threads)
    sums = <double*> scratch_alloc(n_threads * per_thread * sizeof(double))
    if sums == NULL:
        scratch_free(mgrad)
        return -1
    filter_from_winograd(mgrad, &mh, &mw, p.kh, p.kw, C, p.K, sums, per_thread, dw, n_threads)
    scratch_free(sums)
    scratch_free(mgrad)
    return 0 if all_finite(dw, p.kh * p.kw * C * p.K) else 1


cdef void filter_from_winograd(const double* mgrad, const AxisMatrices* mh, const AxisMatrices* mw, Py_ssize_t kh,
                               Py_ssize_t kw, Py_ssize_t C, Py_ssize_t K, double* sums, Py_ssize_t per_thread,
                               real* dw, int n_threads) noexcept nogil:
    """dw[i, j, c, k] = (G^T M[., ., k, c] G)[i, j] (filter_from_m_row), one k per thread at a time."""
    cdef Py_ssize_t k
    cdef double* half
    with parallel(num_threads=n_threads):
        half = sums + threadid() * per_thread
        for k in prange(K, schedule='static'):
            filter_from_m_row(mgrad + k * C, K * C, mh.G, mh.alpha, mw.G, mw.alpha, kh, kw, C, K, k, half, dw)


cdef int sum_splits(const real* partial, Py_ssize_t nsplit, Py_ssize_t plane, double** out,
                    int n_threads) noexcept nogil:
    """out[0][i] = sum over s of partial[s * plane + i], in float64, split 0 first, then 1, 2, ...: each block
    of the plane reads the splits as contiguous runs. Returns 0, or -1 when out cannot be allocated."""
    cdef Py_ssize_t nblocks = ceil_div(plane, 4096), blk, i, i0, i1, s
    cdef double* total = <double*> scratch_alloc((plane + 1) * sizeof(double))
    out[0] = total
    if total == NULL:
        return -1
    n_threads = phase_threads(nblocks, nsplit * plane, n_threads)
    for blk in prange(nblocks, schedule='static', num_threads=n_threads):
        i0 = blk * 4096
        i1 = i0 + 4096 if i0 + 4096 < plane else plane
        for i in range(i0, i1):
            total[i] = partial[i]
        for s in range(1, nsplit):
            for i in range(i0, i1):
                total[i] = total[i] + partial[s * plane + i]
    return 0


cdef inline Py_ssize_t smallest_block(const Plan* p) noexcept nogil:
    """The fewest input channels a filter-gradient block takes: whole tile rows, at least 32 rows (taps x
    channels) so a block's pass over dY is worth it."""
    cdef Py_ssize_t mr = KC_MR_F32 if p.itemsize == 4 else KC_MR_F64
    return ceil_div(ceil_div(32, p.kh * p.kw), mr) * mr


cdef Py_ssize_t channel_block(const Plan* p, int n_threads) noexcept nogil:
    """The filter gradient's channel block for this call: the plan's (sized for L2), or smaller when the
    tasks would number fewer than FILTER_GRAD_TARGET_TASKS or FILTER_GRAD_TASKS_PER_THREAD per thread.
    Blocks only divide the work (each output still sums the same chunks in the same order), so unlike the
    pixel split they may follow the thread count: on 16 threads ~16 tasks left the filter gradient at 3-8x."""
    cdef Py_ssize_t cb = p.fg_cblock, floor = smallest_block(p), blocks
    cdef Py_ssize_t want = FILTER_GRAD_TASKS_PER_THREAD * n_threads
    want = FILTER_GRAD_TARGET_TASKS if want < FILTER_GRAD_TARGET_TASKS else want
    if p.groups * ceil_div(p.cg, cb) * p.fg_splits >= want:
        return cb
    blocks = ceil_div(want, p.groups * p.fg_splits)
    cb = ceil_div(ceil_div(p.cg, blocks), block_unit(p)) * block_unit(p)
    cb = floor if cb < floor else cb
    return cb if cb < p.fg_cblock else p.fg_cblock


cdef int sum_splits_into(const real* partial, Py_ssize_t nsplit, Py_ssize_t plane, real* out,
                         int n_threads) noexcept nogil:
    """out[i] = sum over s of partial[s * plane + i] as sum_splits adds them (float64, split 0 first), but
    stored straight into out: no float64 plane in memory. Returns 0, or -1 when the buffers cannot be had."""
    cdef Py_ssize_t nblocks = ceil_div(plane, 4096), blk, i, i0, i1, s
    cdef double* acc_all = <double*> scratch_alloc(n_threads * 4096 * sizeof(double))
    cdef double* acc
    if acc_all == NULL:
        return -1
    n_threads = phase_threads(nblocks, nsplit * plane, n_threads)
    with parallel(num_threads=n_threads):
        acc = acc_all + threadid() * 4096
        for blk in prange(nblocks, schedule='static'):
            i0 = blk * 4096
            i1 = i0 + 4096 if i0 + 4096 < plane else plane
            for i in range(i0, i1):
                acc[i - i0] = partial[i]
            for s in range(1, nsplit):
                for i in range(i0, i1):
                    acc[i - i0] = acc[i - i0] + partial[s * plane + i]
            for i in range(i0, i1):
                out[i] = <real> acc[i - i0]
    scratch_free(acc_all)
    return 0


cdef inline bint tap_reads_input(Py_ssize_t first, Py_ssize_t size, Py_ssize_t stride, Py_ssize_t outs) noexcept nogil:
    """Whether a tap whose outputs read first, first + stride, ... (outs of them) reads any of 0 .. size-1."""
    cdef Py_ssize_t o = (-first + stride - 1) // stride if first < 0 else 0    # the first output inside
    return o < outs and first + o * stride < size


cdef void live_tap_range(Py_ssize_t first, Py_ssize_t step, Py_ssize_t ntaps, Py_ssize_t size, Py_ssize_t stride,
                         Py_ssize_t outs, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """The taps lo .. hi-1 (tap t at first + t * step) from the first to the last that read the input along
    one axis (lo == hi: none). The taps outside read only padding: their filter gradient is zero."""
    lo[0], hi[0] = 0, 0
    while lo[0] < ntaps and not tap_reads_input(first + lo[0] * step, size, stride, outs):
        lo[0] += 1
    hi[0] = ntaps
    while hi[0] > lo[0] and not tap_reads_input(first + (hi[0] - 1) * step, size, stride, outs):
        hi[0] -= 1


cdef int trimmed_filter_run(const Plan* p, const real* x, const real* dy, real* dw, ConvGrid grid,
                            Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t j0, Py_ssize_t j1, Py_ssize_t cblock,
                            int n_threads) noexcept nogil:
    """The filter gradient when some taps read only padding (a dilation past the input): zeros for those,
    filter_grad over the block of taps i0..i1-1 x j0..j1-1 that read the input. filter_grad's input window
    spans its taps' reach, so with every tap it could outgrow memory (d = 2**31 - 1 on a one-pixel input)."""
    cdef Py_ssize_t nh = i1 - i0, nwt = j1 - j0, nt = nh * nwt, plane = p.groups * p.kg * nt * p.cg
    cdef Py_ssize_t t, g, c, k, full, q, rows = p.N * p.Ho * p.Wo
    cdef Py_ssize_t* th = NULL
    cdef real* partial = NULL
    cdef double* total = NULL
    cdef int status = -1
    cdef real v
    memset(dw, 0, p.kh * p.kw * p.cg * p.K * sizeof(real))
    for k in range(p.K):    # a tap over padding sums 0 * dy: NaN where dy's channel holds a NaN or an infinity
        for q in range(rows):
            v = dy[q * p.K + k] - dy[q * p.K + k]
            if v != v:
                for t in range(p.kh * p.kw):
                    for c in range(p.cg):
                        dw[(t * p.cg + c) * p.K + k] = v
                break
    if nt == 0:
        return 0
    th = <Py_ssize_t*> malloc(2 * nt * sizeof(Py_ssize_t))
    partial = <real*> scratch_alloc((p.fg_splits * plane + 1) * sizeof(real))
    if th != NULL and partial != NULL:
        for t in range(nt):
            th[t] = p.tap_h[(i0 + t // nwt) * p.kw + j0 + t % nwt]
            th[nt + t] = p.tap_w[(i0 + t // nwt) * p.kw + j0 + t % nwt]
        status = filter_grad(x, dy, partial, grid, th, th + nt, nt, p.fg_splits, p.fg_chunk, cblock, n_threads)
        if status == 0:
            status = sum_splits(partial, p.fg_splits, plane, &total, n_threads)
        if status == 0:     # total (groups, nt, C/groups, K/groups) -> dw (taps, C/groups, groups, K/groups)
            for g in range(p.groups):
                for t in range(nt):
                    full = (i0 + t // nwt) * p.kw + j0 + t % nwt
                    for c in range(p.cg):
                        for k in range(p.kg):
                            dw[(full * p.cg + c) * p.K + g * p.kg + k] = <real> total[((g * nt + t) * p.cg + c) * p.kg + k]
    free(th)
    scratch_free(partial)
    scratch_free(total)
    return status


cdef int direct_filter_run(const Plan* p, const real* x, const real* dy, real* dw, int n_threads) noexcept nogil:
    """dW = im2col(X)^T dY on the micro-kernel (filter_grad.pxi), split over pixels; the splits are added in
    order, in float64. With one group the kernel's (taps, C, K) plane is dw's own layout: one split is
    written straight into dw, several are summed straight into it (a 7x7 512 -> 512 plane is 9 MB, and
    the float64 copy and transposition cost more than the products)."""
    cdef Py_ssize_t taps = p.ntaps, plane = p.groups * p.kg * taps * p.cg
    cdef Py_ssize_t g, k, t, c
    cdef double* total = NULL
    cdef ConvGrid grid
    cdef real* partial
    cdef int status
    cdef Py_ssize_t cblock = channel_block(p, n_threads)
    grid.N, grid.Hs, grid.Ws, grid.Cs = p.N, p.H, p.W, p.C
    grid.Hd, grid.Wd, grid.Cd = p.Ho, p.Wo, p.K
    grid.Qh, grid.Qw, grid.step_h, grid.step_w = p.Ho, p.Wo, p.sh, p.sw
    grid.dst_h0 = grid.dst_w0 = 0
    grid.dstep_h = grid.dstep_w = 1
    grid.groups, grid.cin, grid.cout, grid.narrow = p.groups, p.cg, p.kg, False
    cdef Py_ssize_t i0, i1, j0, j1
    live_tap_range(-p.pt, p.dh, p.kh, p.H, p.sh, p.Ho, &i0, &i1)
    live_tap_range(-p.pl, p.dw, p.kw, p.W, p.sw, p.Wo, &j0, &j1)
    if (i1 - i0) * (j1 - j0) != taps:
        return trimmed_filter_run(p, x, dy, dw, grid, i0, i1, j0, j1, cblock, n_threads)
    if p.groups == 1 and p.fg_splits == 1:
        return filter_grad(x, dy, dw, grid, p.tap_h, p.tap_w, taps, 1, p.fg_chunk, cblock, n_threads)
    partial = <real*> scratch_alloc((p.fg_splits * plane + 1) * sizeof(real))
    if partial == NULL:
        return -1
    status = filter_grad(x, dy, partial, grid, p.tap_h, p.tap_w, taps, p.fg_splits, p.fg_chunk, cblock,
                         n_threads)
    if status == 0 and p.groups == 1:
        status = sum_splits_into(partial, p.fg_splits, plane, dw, n_threads)
    elif status == 0 and sum_splits(partial, p.fg_splits, plane, &total, n_threads) == 0:
        # total (groups, taps, C/groups, K/groups) -> dw (taps, C/groups, groups, K/groups)
        n_threads = phase_threads(taps, plane, n_threads)
        for t in prange(taps, schedule='static', num_threads=n_threads):
            for c in range(p.cg):
                for g in range(p.groups):
                    for k in range(p.kg):
                        dw[(t * p.cg + c) * p.K + g * p.kg + k] = <real> total[((g * taps + t) * p.cg + c) * p.kg + k]
    if status == 0 and p.groups != 1 and total == NULL:
        status = -1
    scratch_free(total)
    scratch_free(partial)
    return status


cdef int run_backprop_filter(const Plan* p, const real* x, const real* dy, real* dw) noexcept nogil:
    cdef int status = 0, n_threads
    cdef TeamBinding binding
    cdef Py_ssize_t nw = p.kh * p.kw * p.cg * p.K
    kc_count_pass(2)
    if nw == 0:
        return 0
    if p.N * p.Ho * p.Wo == 0:
        memset(dw, 0, nw * sizeof(real))
        return 0
    n_threads = claim_threads(p.flops, p.threads)
    bind_team(&binding, n_threads, p.flops, &(<Plan*> p).slow[2])
    if p.depthwise:
        status = depthwise_filter_run(p, x, dy, dw, n_threads)
    elif p.grad_m:
        status = winograd_filter_run(p, x, dy, dw, n_threads)
    if not p.depthwise and (p.grad_m == 0 or status == 1):    # direct, or a NaN/Inf that Winograd would spread over the taps
        status = direct_filter_run(p, x, dy, dw, n_threads)
    unbind_team(&binding)
    kc_release_threads(n_threads)
    return status


# ---- the C interface (kconv_api.h): what the TensorFlow op library calls

cdef int memory_error(char* err, int errlen) noexcept nogil:
    return fail(err, errlen, KC_ERR_MEMORY, "kconv: out of memory for the convolution's scratch buffers")


cdef int api_output_size(const kc_conv_desc* d, long* ho, long* wo, char* err, int errlen) noexcept nogil:
    cdef Plan p
    cdef int status = describe(d, &p, err, errlen)
    if status == KC_OK:
        ho[0], wo[0] = p.Ho, p.Wo
    return status


cdef kc_plan* api_plan_create(const kc_conv_desc* d, char* err, int errlen) noexcept nogil:
    return <kc_plan*> plan_new(d, err, errlen)


cdef void api_plan_destroy(kc_plan* plan) noexcept nogil:
    plan_free(<Plan*> plan)


cdef int api_forward(const kc_plan* plan, const void* x, const void* w, const void* bias, void* y, void* z,
                     char* err, int errlen) noexcept nogil:
    cdef const Plan* p = <const Plan*> plan
    cdef int status
    if p.itemsize == 4:
        status = run_forward(p, <const float*> x, <const float*> w, <const float*> bias, <float*> y, <float*> z)
    else:
        status = run_forward(p, <const double*> x, <const double*> w, <const double*> bias, <double*> y,
                             <double*> z)
    return memory_error(err, errlen) if status < 0 else KC_OK


cdef int api_backprop_input(const kc_plan* plan, const void* w, const void* dy, const void* bias, void* dx,
                            void* z, char* err, int errlen) noexcept nogil:
    cdef const Plan* p = <const Plan*> plan
    cdef int status
    if p.itemsize == 4:
        status = run_backprop_input(p, <const float*> w, <const float*> dy, <const float*> bias, <float*> dx,
                                    <float*> z)
    else:
        status = run_backprop_input(p, <const double*> w, <const double*> dy, <const double*> bias,
                                    <double*> dx, <double*> z)
    return memory_error(err, errlen) if status < 0 else KC_OK


cdef int api_backprop_filter(const kc_plan* plan, const void* x, const void* dy, void* dw, char* err,
                             int errlen) noexcept nogil:
    cdef const Plan* p = <const Plan*> plan
    cdef int status
    if p.itemsize == 4:
        status = run_backprop_filter(p, <const float*> x, <const float*> dy, <float*> dw)
    else:
        status = run_backprop_filter(p, <const double*> x, <const double*> dy, <double*> dw)
    return memory_error(err, errlen) if status < 0 else KC_OK


cdef int api_activation_grad(int dtype, int act, long rows, long K, const void* dy, const void* y,
                             const void* z, void* dz, void* db, int threads, char* err, int errlen) noexcept nogil:
    cdef int status, n_threads
    cdef TeamBinding binding
    if act < 0 or act >= ACT_COUNT:
        return fail(err, errlen, KC_ERR_ARGUMENT, "unknown activation")
    if dz == NULL and (act != ACT_LINEAR or db == NULL) and rows * K > 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "dz may be omitted only for a linear activation's bias sums")
    if needs_preactivation(act) and z == NULL and rows * K > 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "this activation's gradient needs the pre-activation output")
    if rows < 0 or K < 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "sizes must be >= 0")
    # Work per value, as claim_threads counts it: a comparison or a multiply for linear / relu / relu6 /
    # leaky relu, memory-bound like batch_norm (a second thread pays from ~1.5M values on the 2-CPU Zen 5 VM,
    # numpy API, relu: 1M values 0.15 ms on one thread, 0.17 on two; 1.6M 0.36 against 0.23); exp / erf for
    # the others (elu, gelu: two threads twice as fast from 262K values up).
    cdef double work = (3.0 if act <= ACT_LEAKY_RELU else 20.0) * rows * K * (0.5 if dz == NULL else 1.0)
    n_threads = claim_threads(work, threads)
    bind_team(&binding, n_threads, work, NULL)
    if dtype == KC_FLOAT32:
        status = activation_grad_run(act, rows, K, <const float*> dy, <const float*> y, <const float*> z,
                                     <float*> dz, <float*> db, n_threads)
    elif dtype == KC_FLOAT64:
        status = activation_grad_run(act, rows, K, <const double*> dy, <const double*> y, <const double*> z,
                                     <double*> dz, <double*> db, n_threads)
    else:
        status = fail(err, errlen, KC_ERR_ARGUMENT, "dtype must be float32 or float64")
    unbind_team(&binding)
    kc_release_threads(n_threads)
    return memory_error(err, errlen) if status < 0 else status


cdef int api_batch_norm(int dtype, long rows, long C, const void* x, const void* gamma, const void* beta,
                        const void* mean_in, const void* var_in, double epsilon, int training, void* y,
                        void* mean, void* var, void* inv, int threads, char* err, int errlen) noexcept nogil:
    cdef int status, n_threads
    cdef TeamBinding binding
    if rows < 0 or C < 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "sizes must be >= 0")
    if not epsilon > 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "epsilon must be > 0")
    # memory-bound: a second thread pays from ~1M values (4 MB float32) on the 2-CPU VM (2.3 MB at C = 16:
    # 210 us on one thread, 256 on two; 5.2 MB: 567 against 435), so a value counts as 4 flops here
    n_threads = claim_threads(4.0 * rows * C, threads)
    bind_team(&binding, n_threads, 4.0 * rows * C, NULL)
    if dtype == KC_FLOAT32:
        status = batch_norm_run(rows, C, <const float*> x, <const float*> gamma, <const float*> beta,
                                <const float*> mean_in, <const float*> var_in, epsilon, training, <float*> y,
                                <float*> mean, <float*> var, <float*> inv, n_threads)
    elif dtype == KC_FLOAT64:
        status = batch_norm_run(rows, C, <const double*> x, <const double*> gamma, <const double*> beta,
                                <const double*> mean_in, <const double*> var_in, epsilon, training, <double*> y,
                                <double*> mean, <double*> var, <double*> inv, n_threads)
    else:
        status = fail(err, errlen, KC_ERR_ARGUMENT, "dtype must be float32 or float64")
    unbind_team(&binding)
    kc_release_threads(n_threads)
    return memory_error(err, errlen) if status < 0 else status


cdef int api_batch_norm_grad(int dtype, long rows, long C, const void* dy, const void* x, const void* mean,
                             const void* inv, const void* gamma, int training, void* dx, void* dgamma,
                             void* dbeta, int threads, char* err, int errlen) noexcept nogil:
    cdef int status, n_threads
    cdef TeamBinding binding
    if rows < 0 or C < 0:
        return fail(err, errlen, KC_ERR_ARGUMENT, "sizes must be >= 0")
    n_threads = claim_threads(5.0 * rows * C, threads)      # as batch_norm's
    bind_team(&binding, n_threads, 5.0 * rows * C, NULL)
    if dtype == KC_FLOAT32:
        status = batch_norm_grad_run(rows, C, <const float*> dy, <const float*> x, <const float*> mean,
                                     <const float*> inv, <const float*> gamma, training, <float*> dx,
                                     <float*> dgamma, <float*> dbeta, n_threads)
    elif dtype == KC_FLOAT64:
        status = batch_norm_grad_run(rows, C, <const double*> dy, <const double*> x, <const double*> mean,
                                     <const double*> inv, <const double*> gamma, training, <double*> dx,
                                     <double*> dgamma, <double*> dbeta, n_threads)
    else:
        status = fail(err, errlen, KC_ERR_ARGUMENT, "dtype must be float32 or float64")
    unbind_team(&binding)
    kc_release_threads(n_threads)
    return memory_error(err, errlen) if status < 0 else status


cdef kc_api API
API.version = KC_API_VERSION
API.isa = KC_ISA
API.output_size = api_output_size
API.plan_create = api_plan_create
API.plan_destroy = api_plan_destroy
API.forward = api_forward
API.backprop_input = api_backprop_input
API.backprop_filter = api_backprop_filter
API.activation_grad = api_activation_grad
API.batch_norm = api_batch_norm
API.batch_norm_grad = api_batch_norm_grad


def api_address():
    """The address of this build's kc_api table, for kconv's TensorFlow op library (kconv._oplib)."""
    return <size_t> &API


# ---- the numpy API's view of a plan

PREACTIVATION_CODES = (ACT_SILU, ACT_GELU)   # activations whose gradient needs z = conv + bias


cdef Py_ssize_t A2_of(const Plan* p) noexcept nogil:
    return winograd_tile_area(p, p.fwd_m)


cdef size_t address(array):
    """Where a contiguous numpy array's data starts (0 for None or an empty array)."""
    if array is None or array.size == 0:
        return 0
    return array.__array_interface__["data"][0]


cdef raise_status(int status, char* err):
    message = err.decode("utf-8", "replace")
    if status == KC_ERR_MEMORY:
        raise MemoryError(message)
    raise ValueError(message)


cdef class ConvPlan:
    """A plan for one convolution (kconv.ops makes and caches them): NHWC, 1-D as H = 1, explicit padding.

    The run methods take contiguous arrays of the plan's dtype and shapes, which the caller guarantees."""
    cdef Plan* p
    cdef readonly tuple out_hw
    cdef readonly tuple tiles
    cdef readonly tuple staged
    cdef readonly bint depthwise
    cdef readonly Py_ssize_t filter_lanes

    def __cinit__(self, Py_ssize_t N, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t kh, Py_ssize_t kw,
                  Py_ssize_t cg, Py_ssize_t K, strides, dilations, pads, int algorithm, int itemsize,
                  int activation=0, int threads=0):
        cdef kc_conv_desc d
        cdef char err[512]
        d.N, d.H, d.W, d.C, d.kh, d.kw, d.cg, d.K = N, H, W, C, kh, kw, cg, K
        d.stride_h, d.stride_w = strides
        d.dilation_h, d.dilation_w = dilations
        d.padding = KC_PAD_EXPLICIT
        (d.pad_top, d.pad_bottom), (d.pad_left, d.pad_right) = pads
        d.algorithm, d.dtype, d.activation, d.threads = algorithm, itemsize, activation, threads
        err[0] = 0
        self.p = plan_new(&d, err, sizeof(err))
        if self.p == NULL:
            raise_status(KC_ERR_MEMORY if b"memory" in err or b"too large" in err else KC_ERR_ARGUMENT, err)
        self.out_hw = (self.p.Ho, self.p.Wo)
        self.tiles = (self.p.fwd_m, self.p.bwd_m, self.p.grad_m)    # Winograd m per pass, 0: direct
        self.staged = (bool(self.p.fwd_staged), bool(self.p.bwd_staged))
        self.depthwise = self.p.depthwise      # every pass on depthwise.pxi's channel-vectorised kernels
        self.filter_lanes = self.p.wg_lanes    # the Winograd filter gradient's lanes (0: by phases)

    def __dealloc__(self):
        plan_free(self.p)

    def cache_bytes(self):
        """Bytes this plan keeps between calls: transformed filters (and their weights) for inference."""
        cdef Py_ssize_t n = 0
        pthread_mutex_lock(&self.p.lock)
        if self.p.cache_w != NULL:
            n = self.p.kh * self.p.kw * self.p.cg * self.p.K + A2_of(self.p) * ceil_div(self.p.K, KC_NR_F32 if
                self.p.itemsize == 4 else KC_NR_F64) * self.p.C * (KC_NR_F32 if self.p.itemsize == 4 else KC_NR_F64)
        pthread_mutex_unlock(&self.p.lock)
        return n * self.p.itemsize

    def forward(self, x, w, bias, y, z=None):
        cdef char err[256]
        cdef size_t px = address(x), pw = address(w), pb = address(bias), py = address(y), pz = address(z)
        cdef int status
        with nogil:
            status = api_forward(<kc_plan*> self.p, <void*> px, <void*> pw, <void*> pb, <void*> py, <void*> pz,
                                 err, sizeof(err))
        if status:
            raise_status(status, err)

    def backprop_input(self, w, dy, dx, bias=None, z=None):
        """dx = the input gradient; for a plan made with an activation (a transposed convolution), dx =
        act(conv^T(dy) + bias), z as forward's."""
        cdef char err[256]
        cdef size_t pw = address(w), pdy = address(dy), pdx = address(dx), pb = address(bias), pz = address(z)
        cdef int status
        with nogil:
            status = api_backprop_input(<kc_plan*> self.p, <void*> pw, <void*> pdy, <void*> pb, <void*> pdx,
                                        <void*> pz, err, sizeof(err))
        if status:
            raise_status(status, err)

    def backprop_filter(self, x, dy, dw):
        cdef char err[256]
        cdef size_t px = address(x), pdy = address(dy), pdw = address(dw)
        cdef int status
        with nogil:
            status = api_backprop_filter(<kc_plan*> self.p, <void*> px, <void*> pdy, <void*> pdw, err, sizeof(err))
        if status:
            raise_status(status, err)


def activation_grad(int activation, dy, y, z, dz, db, int threads=0):
    """dz = dy * act'(.) and db = the column sums of dz, for (rows, K) arrays (numpy API and tests)."""
    cdef char err[256]
    cdef long rows = dy.shape[0], K = dy.shape[1]
    cdef int dtype = dy.dtype.itemsize, status
    cdef size_t pdy = address(dy), py = address(y), pz = address(z), pdz = address(dz), pdb = address(db)
    with nogil:
        status = api_activation_grad(dtype, activation, rows, K, <void*> pdy, <void*> py, <void*> pz,
                                     <void*> pdz, <void*> pdb, threads, err, sizeof(err))
    if status:
        raise_status(status, err)


def batch_norm(x, gamma, beta, mean_in, var_in, double epsilon, bint training, y, mean, var, inv,
               int threads=0):
    """The batch-norm kernel on (rows, C) arrays and C-vectors (numpy API and tests; see kc_api.batch_norm).
    mean_in / var_in are read only when not training."""
    cdef char err[256]
    cdef long rows = x.shape[0], C = x.shape[1]
    cdef int dtype = x.dtype.itemsize, status
    cdef size_t px = address(x), pg = address(gamma), pb = address(beta), pmi = address(mean_in)
    cdef size_t pvi = address(var_in), py = address(y), pm = address(mean), pv = address(var), pi = address(inv)
    with nogil:
        status = api_batch_norm(dtype, rows, C, <void*> px, <void*> pg, <void*> pb, <void*> pmi, <void*> pvi,
                                epsilon, training, <void*> py, <void*> pm, <void*> pv, <void*> pi, threads, err,
                                sizeof(err))
    if status:
        raise_status(status, err)


def batch_norm_grad(dy, x, mean, inv, gamma, bint training, dx, dgamma, dbeta, int threads=0):
    """The batch-norm gradient kernel (numpy API and tests; see kc_api.batch_norm_grad)."""
    cdef char err[256]
    cdef long rows = x.shape[0], C = x.shape[1]
    cdef int dtype = x.dtype.itemsize, status
    cdef size_t pdy = address(dy), px = address(x), pm = address(mean), pi = address(inv), pg = address(gamma)
    cdef size_t pdx = address(dx), pdg = address(dgamma), pdb = address(dbeta)
    with nogil:
        status = api_batch_norm_grad(dtype, rows, C, <void*> pdy, <void*> px, <void*> pm, <void*> pi, <void*> pg,
                                     training, <void*> pdx, <void*> pdg, <void*> pdb, threads, err, sizeof(err))
    if status:
        raise_status(status, err)


cdef object matrix_array(const double* data, int rows, int cols):
    return np.array([data[i] for i in range(rows * cols)]).reshape(rows, cols)


def winograd_constants(int m):
    """The compiled matrices of F(m, 3) as numpy arrays (for the tests), and B^T, A^T and G as the register
    transforms of microkernel.h hold them (BT_registers, AT_registers, G_registers)."""
    cdef AxisMatrices a = axis_matrices(m, 3, True)
    cdef const double* rbt = &kc_wino_bt8[0]
    cdef const double* rat = &kc_wino_at8[0]
    cdef const double* rg = &kc_wino_g8[0]
    if m == 2:
        rbt, rat, rg = &kc_wino_bt4[0], &kc_wino_at4[0], &kc_wino_g4[0]
    elif m == 4:
        rbt, rat, rg = &kc_wino_bt6[0], &kc_wino_at6[0], &kc_wino_g6[0]
    return dict(AT=matrix_array(a.AT, a.m, a.alpha), G=matrix_array(a.G, a.alpha, 3),
                BT=matrix_array(a.BT, a.alpha, a.alpha), A=matrix_array(a.A, a.alpha, a.m),
                BT_registers=matrix_array(rbt, a.alpha, a.alpha), AT_registers=matrix_array(rat, a.m, a.alpha),
                G_registers=matrix_array(rg, a.alpha, 3))


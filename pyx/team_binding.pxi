# Keeping one call's OpenMP team on distinct CPUs when it takes all of them.
#
# GCC's OpenMP runtime gives every calling thread its own team, and TensorFlow calls kconv's ops from several
# inter-op threads. With passive waiting every fork and barrier is a sleep and a wake-up, and Linux places a
# woken thread near its waker: with no idle slack (a team as large as the CPUs) the worker often lands on
# the caller's CPU while the other CPU idles, and the two take turns on one core for milliseconds
# (`perf sched timehist`: a 6 ms call run on one CPU of two). So a call that holds every CPU pins its caller
# to the CPU it is on and each worker to one of the others, and gives the caller its own mask back on return.
# Workers stay pinned between calls; they move when their caller turns up on another CPU.
#
# When calls overlap (a training step runs the input and filter gradients at once, a model runs branches at
# once) each call's workers stand down (microkernel.h, kc_next_task) and the callers work alone: each caller
# takes a CPU no other running call's caller sits on (a "seat"), so two callers never share one CPU while the
# other idles, and a worker that rejoins when the other call ends finds its CPU free.
# Off with KCONV_BIND_THREADS=0, and when the user binds OpenMP's threads (OMP_PROC_BIND, OMP_PLACES).
from libc.stdlib cimport getenv

cdef extern from *:
    """
    #ifdef __linux__
    #include <sched.h>
    #include <time.h>
    #include <unistd.h>
    #include <sys/syscall.h>
    typedef cpu_set_t kc_cpu_mask;
    static inline int kc_this_cpu(void) { return sched_getcpu(); }
    static inline int kc_this_tid(void) { return (int)syscall(SYS_gettid); }
    static inline int kc_get_mask(kc_cpu_mask *m) { return sched_getaffinity(0, sizeof *m, m); }
    static inline int kc_set_mask(int tid, const kc_cpu_mask *m) { return sched_setaffinity(tid, sizeof *m, m); }
    static inline int kc_mask_has(const kc_cpu_mask *m, int cpu) { return CPU_ISSET(cpu, m); }
    static inline int kc_pin_self(int cpu) {
        cpu_set_t one; CPU_ZERO(&one); CPU_SET(cpu, &one);
        return sched_setaffinity(0, sizeof one, &one);
    }
    static inline double kc_seconds(void) {
        struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec;
    }
    #define KC_MASK_CPUS CPU_SETSIZE
    #else   /* no thread affinity here: binding stays off */
    typedef int kc_cpu_mask;
    static inline int kc_this_cpu(void) { return -1; }
    static inline int kc_this_tid(void) { return 0; }
    static inline int kc_get_mask(kc_cpu_mask *m) { (void)m; return -1; }
    static inline int kc_set_mask(int tid, const kc_cpu_mask *m) { (void)tid; (void)m; return -1; }
    static inline int kc_mask_has(const kc_cpu_mask *m, int cpu) { (void)m; (void)cpu; return 0; }
    static inline int kc_pin_self(int cpu) { (void)cpu; return -1; }
    static inline double kc_seconds(void) { return 0; }
    #define KC_MASK_CPUS 0
    #endif
    static inline int kc_take_seat(int *seat) { return __atomic_exchange_n(seat, 1, __ATOMIC_ACQ_REL) == 0; }
    static inline void kc_leave_seat(int *seat) { __atomic_store_n(seat, 0, __ATOMIC_RELEASE); }

    /* Per calling thread (each has its own OpenMP team): the CPU its workers were pinned around (-1: none),
     * the team size, the seat its running call took, and the team's thread ids (caller first). */
    #define KC_MAX_TEAM 64
    static __thread int kc_team_caller_cpu = -1;
    static __thread int kc_team_size = 0;
    static __thread int kc_team_seat = -1;
    static __thread int kc_team_tids[KC_MAX_TEAM];
    """
    ctypedef struct kc_cpu_mask:
        pass
    int KC_MASK_CPUS, KC_MAX_TEAM
    int kc_this_cpu() nogil
    int kc_this_tid() nogil
    int kc_get_mask(kc_cpu_mask* m) nogil
    int kc_set_mask(int tid, const kc_cpu_mask* m) nogil
    int kc_mask_has(const kc_cpu_mask* m, int cpu) nogil
    int kc_pin_self(int cpu) nogil
    double kc_seconds() nogil
    int kc_take_seat(int* seat) nogil
    void kc_leave_seat(int* seat) nogil
    int kc_team_caller_cpu
    int kc_team_size
    int kc_team_seat
    int kc_team_tids[64]

# Pinning costs a sub-millisecond call inside a graph ~0.2 ms (3x3 8x8x64 batch 8: 0.52 -> 0.72 ms; from numpy
# nothing), while the stacked threads it prevents cost calls of several ms up to half their speed.
cdef double BIND_MIN_FLOPS = 128e6
# ... but calls of few FLOPs can be slow (a first layer's 1-3 channels keep the micro-kernel far from its
# roof: the demo's 5x5 1 -> 32, 80 MFLOP, takes 1.8 ms in a graph unpinned, 1.2 ms pinned; a batch-1 1x1
# 2048 -> 512 reads a 4 MB filter for 103 MFLOP). So a plan's pass under BIND_MIN_FLOPS is timed unpinned for
# its first BIND_TRIAL_CALLS calls, and pins from then on if at least half took BIND_MIN_SECONDS. Inside a
# graph an unpinned call of 0.15-0.7 ms often has its worker woken onto its caller's CPU and runs at one
# thread's speed (10-15 % of the 1x1 2048 b1's calls, timed inside the op: 0.73 ms against 0.41): pinned
# from 0.3 ms, that layer's passes ran 0.61-0.67 -> 0.47-0.51 ms (forward), 0.78-0.82 -> 0.58-0.64 (input
# gradient); from 0.15 ms, calls of 0.15-0.3 ms gain too (TCN k3 input gradient 0.21 -> 0.16 ms, ResNet-20's
# 3 -> 16 forward 0.29 -> 0.24-0.27, its 1x1/2 forward 0.18-0.20 -> 0.16-0.17). A 0.12 ms call loses ~0.02 ms
# pinned (3x3 8x8 64 -> 64 forward 0.125 -> 0.14-0.15 when a single slow call pinned it): hence the majority
# of the trial calls, which a pass of that median time does not reach.
cdef double BIND_MIN_SECONDS = 1.5e-4
# A plan pass's trial state (Plan.slow[pass]): calls timed + BIND_SLOW_CALL per slow one while >= 0; then
# BIND_PINS or BIND_NEVER.
cdef enum:
    BIND_TRIAL_CALLS = 8
    BIND_SLOW_CALL = 256
    BIND_PINS = -1
    BIND_NEVER = -2

cdef int g_bind_enabled = -1            # -1: not decided yet (decided at the first call that could bind)
cdef int g_bind_cpus[64]                # the process's CPUs, ascending
cdef int g_bind_ncpus = 0
cdef kc_cpu_mask g_process_mask
cdef int g_seated[64]                   # 1 where the caller of a running call is pinned (g_bind_cpus order)
cdef long g_bound_calls = 0             # diagnostics (binding_counts)
cdef long g_worker_pinnings = 0
cdef long g_moved_callers = 0


def binding_counts():
    """Since import: (calls that pinned their team, times a team's workers were moved, calls whose caller
    moved to a CPU no other running call's caller had)."""
    return g_bound_calls, g_worker_pinnings, g_moved_callers


cdef void decide_binding() noexcept nogil:
    """On unless switched off, or OpenMP binds threads itself, or the process has 1 or more than 64 CPUs;
    reads the process's CPUs once."""
    global g_bind_enabled, g_bind_ncpus
    cdef const char* env = getenv("KCONV_BIND_THREADS")
    cdef int cpu
    g_bind_ncpus = 0
    if (env != NULL and env[0] == c'0') or getenv("OMP_PROC_BIND") != NULL or getenv("OMP_PLACES") != NULL \
            or kc_get_mask(&g_process_mask) != 0:
        g_bind_enabled = 0
        return
    for cpu in range(KC_MASK_CPUS):
        if kc_mask_has(&g_process_mask, cpu):
            if g_bind_ncpus == KC_MAX_TEAM:
                g_bind_enabled = 0
                return
            g_bind_cpus[g_bind_ncpus] = cpu
            g_bind_ncpus += 1
    g_bind_enabled = 1 if g_bind_ncpus >= 2 else 0


cdef void pin_workers(int n, int caller_cpu, int* tids) noexcept nogil:
    """Worker t of the calling thread's team (t = 1 .. n-1) onto the t-th of the process's CPUs after
    caller_cpu, wrapping around; each notes its thread id in tids[t]. OpenMP hands a team's thread numbers to
    the same pooled threads call after call. Overlapping calls keep their first helpers working
    (microkernel.h, kc_share); counted from each caller's own CPU (callers sit on distinct CPUs), those
    helpers start on different CPUs instead of all on the lowest ones."""
    cdef int t, i, at = 0
    for i in range(g_bind_ncpus):
        if g_bind_cpus[i] == caller_cpu:
            at = i
    for t in prange(n, num_threads=n, schedule='static', chunksize=1):
        if t > 0:
            tids[t] = kc_this_tid()
            kc_pin_self(g_bind_cpus[(at + t) % g_bind_ncpus])


cdef inline bint take_seat(int i) noexcept nogil:
    return kc_take_seat(&g_seated[i])


cdef struct TeamBinding:
    int bound               # 1: the caller is pinned (its mask in saved); -1: not pinned, timed for `slow`
    double t0
    int* slow               # the plan's trial state for this pass (BIND_TRIAL_CALLS), or NULL
    kc_cpu_mask saved


cdef void bind_team(TeamBinding* b, int n, double flops, int* slow) noexcept nogil:
    """Called once a call of `flops` has claimed its n threads. A team that holds every CPU, for a call of at
    least BIND_MIN_FLOPS or of a plan pass whose trial calls were slow (`slow`, kept in the plan), gets its
    caller pinned to a CPU no other running call's caller sits on (the one its workers were pinned around,
    else the one it is on, when free) and its workers to the others; the caller's own mask goes back with
    unbind_team. Calls that overlap thus sit their callers on distinct CPUs, and their workers, which stand
    down while calls overlap (microkernel.h, kc_next_task), rejoin each on a CPU of its own when the others
    finish."""
    global kc_team_caller_cpu, kc_team_size, kc_team_seat
    global g_bound_calls, g_worker_pinnings, g_moved_callers
    cdef int cpu, here, i, seat = -1
    b.bound, b.slow = 0, slow
    if g_bind_enabled < 0:
        decide_binding()
    if not g_bind_enabled or n != g_bind_ncpus:
        return
    if flops < BIND_MIN_FLOPS and (slow == NULL or slow[0] != BIND_PINS):
        if slow != NULL and slow[0] >= 0:
            b.bound, b.t0 = -1, kc_seconds()
        return
    here = kc_this_cpu()
    # back to the CPU the team's workers were pinned around, when free: moving the caller is cheaper than a
    # parallel region that moves the workers (TensorFlow's inter-op threads hop between CPUs)
    cpu = kc_team_caller_cpu if kc_team_size == n and kc_team_caller_cpu >= 0 else here
    for i in range(g_bind_ncpus):
        if g_bind_cpus[i] == cpu:
            seat = i
    if seat < 0 or not take_seat(seat):
        seat = -1
        for i in range(g_bind_ncpus):
            if take_seat(i):
                seat = i
                break
        if seat < 0:                    # more callers than CPUs: the scheduler shares them
            return
    cpu = g_bind_cpus[seat]
    if cpu != here:
        g_moved_callers += 1
    if kc_get_mask(&b.saved) != 0 or kc_pin_self(cpu) != 0:
        kc_leave_seat(&g_seated[seat])
        return
    kc_team_seat = seat
    if kc_team_caller_cpu != cpu or kc_team_size != n:
        kc_team_tids[0] = kc_this_tid()
        pin_workers(n, cpu, kc_team_tids)
        kc_team_caller_cpu, kc_team_size = cpu, n
        g_worker_pinnings += 1
    g_bound_calls += 1
    b.bound = 1


cdef void unbind_team(TeamBinding* b) noexcept nogil:
    cdef int state
    if b.bound == 1:
        kc_set_mask(0, &b.saved)
        kc_leave_seat(&g_seated[kc_team_seat])
    elif b.bound == -1:
        state = b.slow[0]
        if state < 0:                   # an overlapping call of the trial has decided it
            return
        state += 1 + (BIND_SLOW_CALL if kc_seconds() - b.t0 >= BIND_MIN_SECONDS else 0)
        if state % BIND_SLOW_CALL >= BIND_TRIAL_CALLS:
            state = BIND_PINS if 2 * (state // BIND_SLOW_CALL) >= BIND_TRIAL_CALLS else BIND_NEVER
        b.slow[0] = state               # a benign race: a count lost to an overlapping call adds a trial call

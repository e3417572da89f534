# Cython's view of the one C header: the register-blocked tile and the machine probes beside it.
cdef extern from "microkernel.h" nogil:
    const char* KC_ISA
    int KC_MR_F32, KC_NR_F32, KC_MR_F64, KC_NR_F64, KC_FMA_CHAIN_FLOPS, KC_VEC_BYTES
    void kc_igemm_f32(int ntaps, int kc, const float* const* a, long a_off, long lda, const float* b, long ldb,
                      float* const* c, long c_off, int mr, int nr, int accumulate, const float* bias, int clamp)
    void kc_igemm_narrow_f32(int ntaps, int kc, const float* const* a, long a_off, long lda, const float* b, long ldb,
                             float* const* c, long c_off, int mr, int nr, int accumulate, const float* bias, int clamp)
    void kc_igemm_run_f32(int narrow, int ntaps, int kc, const float* const* a, long a_off, long rs, long lda,
                          const float* b, long ldb, float* const* c, long c_off, int mr, int nr, int accumulate,
                          const float* bias, int clamp)
    void kc_igemm_run_wide_f32(int ntaps, int kc, const float* const* a, long a_off, long rs, const float* b, long ldb,
                               float* const* c, long c_off, int mr, int nr, int accumulate, const float* bias,
                               int clamp)
    void kc_grad_tail_f32(int nrows, int npix, int rows, const float* dy, long ldr, long ldd, const float* x,
                          long xr, long ldx, int nvec, float* out, long ldo)
    void kc_column_sums_f32(long rows, long K, const float* x, double* out)
    void kc_prefetch_l2(const void* p, long bytes)
    void kc_prefetch_write_l2(void* p, long bytes)
    void kc_fwd_tail_f32(int ntaps, int kc, const float* const* a, long a_off, long rs, int run, const float* wt,
                         long ldw, float* const* c, long c_off, int mr, int nr, int accumulate, const float* bias,
                         int clamp)
    void kc_igemm_half_f32(int ntaps, int kc, const float* const* a, long a_off, long lda, const float* b, long ldb,
                           float* const* c, long c_off, int mr, int nr, int accumulate, const float* bias, int clamp)
    void kc_igemm_half_f64(int ntaps, int kc, const double* const* a, long a_off, long lda, const double* b, long ldb,
                           double* const* c, long c_off, int mr, int nr, int accumulate, const double* bias, int clamp)
    void kc_igemm_f64(int ntaps, int kc, const double* const* a, long a_off, long lda, const double* b, long ldb,
                      double* const* c, long c_off, int mr, int nr, int accumulate, const double* bias, int clamp)
    void kc_igemm_narrow_f64(int ntaps, int kc, const double* const* a, long a_off, long lda, const double* b, long ldb,
                             double* const* c, long c_off, int mr, int nr, int accumulate, const double* bias, int clamp)
    void kc_dw_f32_nv2(int ntaps, const float* const* a, long a_off, const float* const* w, long w_off,
                       float* const* c, long c_off, int mr, const float* bias, int clamp)
    void kc_dw_f32_nv1(int ntaps, const float* const* a, long a_off, const float* const* w, long w_off,
                       float* const* c, long c_off, int mr, const float* bias, int clamp)
    void kc_dw_f64_nv2(int ntaps, const double* const* a, long a_off, const double* const* w, long w_off,
                       double* const* c, long c_off, int mr, const double* bias, int clamp)
    void kc_dw_f64_nv1(int ntaps, const double* const* a, long a_off, const double* const* w, long w_off,
                       double* const* c, long c_off, int mr, const double* bias, int clamp)
    void kc_dwgrad_f32_nv2(int npix, int rows, const float* const* a, long lda, long a_off,
                           const float* dy, long ldd, float* out, long ldo)
    void kc_dwgrad_f32_nv1(int npix, int rows, const float* const* a, long lda, long a_off,
                           const float* dy, long ldd, float* out, long ldo)
    void kc_dwgrad_f64_nv2(int npix, int rows, const double* const* a, long lda, long a_off,
                           const double* dy, long ldd, double* out, long ldo)
    void kc_dwgrad_f64_nv1(int npix, int rows, const double* const* a, long lda, long a_off,
                           const double* dy, long ldd, double* out, long ldo)
    void kc_dwrun_f32_nv2(int ntaps, const float* const* a, long xs, long a_off, const float* const* w, long w_off,
                          float* c, long cs, const float* bias, int clamp)
    void kc_dwgradrun_f32_nv2(int npix, int rows, const float* const* a, long xs, long a_off,
                              const float* dy, long ldd, float* out, long ldo)
    void kc_dwrun_f32_nv1(int ntaps, const float* const* a, long xs, long a_off, const float* const* w, long w_off,
                          float* c, long cs, const float* bias, int clamp)
    void kc_dwgradrun_f32_nv1(int npix, int rows, const float* const* a, long xs, long a_off,
                              const float* dy, long ldd, float* out, long ldo)
    void kc_dwrun_f64_nv2(int ntaps, const double* const* a, long xs, long a_off, const double* const* w, long w_off,
                          double* c, long cs, const double* bias, int clamp)
    void kc_dwgradrun_f64_nv2(int npix, int rows, const double* const* a, long xs, long a_off,
                              const double* dy, long ldd, double* out, long ldo)
    void kc_dwrun_f64_nv1(int ntaps, const double* const* a, long xs, long a_off, const double* const* w, long w_off,
                          double* c, long cs, const double* bias, int clamp)
    void kc_dwgradrun_f64_nv1(int npix, int rows, const double* const* a, long xs, long a_off,
                              const double* dy, long ldd, double* out, long ldo)
    float kc_fma_chains(long iters)
    int kc_cpu_supports_avx2()
    int kc_cpu_supports_avx512()
    int kc_claim_threads(int want)
    void kc_release_threads(int n)
    long kc_threads_held()
    long kc_next_task(long* next, long total, long tid, int team, int cpus)
    int kc_share_of(int team, int cpus, long held)
    int kc_share(int team, int cpus)
    long kc_stand_down_count()
    int kc_openmp_enabled()
    void kc_count_pass(int p)
    void kc_lock(int* lock)
    void kc_unlock(int* lock)
    long kc_pass_count(int p)
    int kc_omp_max_threads()

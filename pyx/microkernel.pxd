# Cython's view of the one C header: the register-blocked tile and the machine probes beside it.
cdef extern from "microkernel.h" nogil:
    const char* KC_ISA
    int KC_MR_F32, KC_NR_F32, KC_MR_F64, KC_NR_F64, KC_FMA_CHAIN_FLOPS, KC_VEC_BYTES, KC_DW_GRAD_ROWS, KC_CLAMP_STREAM
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
    void kc_wgrad_tile_f32(int ntiles, int run, const float* a, long lda, const float* b, long ldb, double* m,
                           long ldm, int mr, int nr, int first)
    void kc_column_sums_f32(long rows, long K, const float* x, double* out)
    void kc_prefetch_l2(const void* p, long bytes)
    void kc_store_fence()
    int KC_TRANSPOSE_LANES
    void kc_transpose_block_f32(const float* src, long lds, float* dst, long ldd)
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
    void kc_dwpixel_f32(int ntaps, const float* const* a, const float* const* w, float* c, long C,
                        const float* bias, int clamp)
    void kc_dwpixel_f64(int ntaps, const double* const* a, const double* const* w, double* c, long C,
                        const double* bias, int clamp)
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
    ctypedef struct kc_barrier:
        int done
        int gen
        int left
    void kc_barrier_init(kc_barrier* b)
    void kc_barrier_wait(kc_barrier* b, int team, int may_spin)
    void kc_barrier_leave(kc_barrier* b, int team)
    void kc_phase_task_done(int* left)
    void kc_phase_wait(int* left, int may_spin)
    int kc_should_leave(long tid, int team, int cpus)
    long kc_take_task(long* next)
    int kc_region_threads()
    int kc_openmp_enabled()
    void kc_count_pass(int p)
    void kc_lock(int* lock)
    void kc_unlock(int* lock)
    long kc_pass_count(int p)
    int kc_omp_max_threads()
    void kc_wino_in_f32_a4(const float* src, long rs, long cs, int i0, int i1, int j0, int j1, float* dst,
                              long ds, long n)
    void kc_wino_in_f32_a6(const float* src, long rs, long cs, int i0, int i1, int j0, int j1, float* dst,
                              long ds, long n)
    void kc_wino_in_f32_a8(const float* src, long rs, long cs, int i0, int i1, int j0, int j1, float* dst,
                              long ds, long n)
    void kc_wino_in_f64_a4(const double* src, long rs, long cs, int i0, int i1, int j0, int j1, double* dst,
                              long ds, long n)
    void kc_wino_in_f64_a6(const double* src, long rs, long cs, int i0, int i1, int j0, int j1, double* dst,
                              long ds, long n)
    void kc_wino_in_f64_a8(const double* src, long rs, long cs, int i0, int i1, int j0, int j1, double* dst,
                              long ds, long n)
    void kc_wino_in1_f32_a4(const float* src, long cs, int j0, int j1, float* dst, long ds, long n)
    void kc_wino_in1_f32_a6(const float* src, long cs, int j0, int j1, float* dst, long ds, long n)
    void kc_wino_in1_f32_a8(const float* src, long cs, int j0, int j1, float* dst, long ds, long n)
    void kc_wino_in1_f64_a4(const double* src, long cs, int j0, int j1, double* dst, long ds, long n)
    void kc_wino_in1_f64_a6(const double* src, long cs, int j0, int j1, double* dst, long ds, long n)
    void kc_wino_in1_f64_a8(const double* src, long cs, int j0, int j1, double* dst, long ds, long n)
    int kc_wino_out_f32_a4(const float* src, long ss, float* y, long yrs, long ycs, int rows, int cols, long n,
                           const float* bias, int clamp)
    int kc_wino_out_f32_a6(const float* src, long ss, float* y, long yrs, long ycs, int rows, int cols, long n,
                           const float* bias, int clamp)
    int kc_wino_out_f32_a8(const float* src, long ss, float* y, long yrs, long ycs, int rows, int cols, long n,
                           const float* bias, int clamp)
    int kc_wino_out_f64_a4(const double* src, long ss, double* y, long yrs, long ycs, int rows, int cols, long n,
                           const double* bias, int clamp)
    int kc_wino_out_f64_a6(const double* src, long ss, double* y, long yrs, long ycs, int rows, int cols, long n,
                           const double* bias, int clamp)
    int kc_wino_out_f64_a8(const double* src, long ss, double* y, long yrs, long ycs, int rows, int cols, long n,
                           const double* bias, int clamp)
    int kc_wino_out1_f32_a4(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias,
                            int clamp)
    int kc_wino_out1_f32_a6(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias,
                            int clamp)
    int kc_wino_out1_f32_a8(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias,
                            int clamp)
    int kc_wino_out1_f64_a4(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias,
                            int clamp)
    int kc_wino_out1_f64_a6(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias,
                            int clamp)
    int kc_wino_out1_f64_a8(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias,
                            int clamp)
    void kc_wino_dy_f32_a4(const float* src, long rs, long cs, int rows, int cols, float* dst, long ds, long n)
    void kc_wino_dy_f32_a6(const float* src, long rs, long cs, int rows, int cols, float* dst, long ds, long n)
    void kc_wino_dy_f32_a8(const float* src, long rs, long cs, int rows, int cols, float* dst, long ds, long n)
    void kc_wino_dy_f64_a4(const double* src, long rs, long cs, int rows, int cols, double* dst, long ds, long n)
    void kc_wino_dy_f64_a6(const double* src, long rs, long cs, int rows, int cols, double* dst, long ds, long n)
    void kc_wino_dy_f64_a8(const double* src, long rs, long cs, int rows, int cols, double* dst, long ds, long n)
    void kc_wino_dy1_f32_a4(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_dy1_f32_a6(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_dy1_f32_a8(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_dy1_f64_a4(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_dy1_f64_a6(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_dy1_f64_a8(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter_f32_a4(const float* src, long ts, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a4(const float* src, long ts, float* dst, long ds, long n)
    void kc_wino_filter_f32_a6(const float* src, long ts, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a6(const float* src, long ts, float* dst, long ds, long n)
    void kc_wino_filter_f32_a8(const float* src, long ts, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a8(const float* src, long ts, float* dst, long ds, long n)
    void kc_wino_filter_f64_a4(const double* src, long ts, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a4(const double* src, long ts, double* dst, long ds, long n)
    void kc_wino_filter_f64_a6(const double* src, long ts, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a6(const double* src, long ts, double* dst, long ds, long n)
    void kc_wino_filter_f64_a8(const double* src, long ts, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a8(const double* src, long ts, double* dst, long ds, long n)
    int kc_wino_out1_f32_a6_m3(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias, int clamp)
    void kc_wino_dy1_f32_a6_m3(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a6_m3(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out1_f32_a8_m5(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias, int clamp)
    void kc_wino_dy1_f32_a8_m5(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a8_m5(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out1_f32_a6_m2(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias, int clamp)
    void kc_wino_dy1_f32_a6_m2(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a6_m2(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out1_f32_a8_m4(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias, int clamp)
    void kc_wino_dy1_f32_a8_m4(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a8_m4(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out1_f64_a6_m3(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias, int clamp)
    void kc_wino_dy1_f64_a6_m3(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a6_m3(const double* src, long ts, double* dst, long ds, long n)
    int kc_wino_out1_f64_a8_m5(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias, int clamp)
    void kc_wino_dy1_f64_a8_m5(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a8_m5(const double* src, long ts, double* dst, long ds, long n)
    int kc_wino_out1_f64_a6_m2(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias, int clamp)
    void kc_wino_dy1_f64_a6_m2(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a6_m2(const double* src, long ts, double* dst, long ds, long n)
    int kc_wino_out1_f64_a8_m4(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias, int clamp)
    void kc_wino_dy1_f64_a8_m4(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a8_m4(const double* src, long ts, double* dst, long ds, long n)
    const double kc_wino_at6_m3[18]
    const double kc_wino_g6_r4[24]
    const double kc_wino_at8_m5[40]
    const double kc_wino_g8_r4[32]
    const double kc_wino_at6_m2[12]
    const double kc_wino_g6_r5[30]
    const double kc_wino_at8_m4[32]
    const double kc_wino_g8_r5[40]
    int kc_wino_out1_f32_a8_m3(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias, int clamp)
    void kc_wino_dy1_f32_a8_m3(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a8_m3(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out1_f32_a8_m2(const float* src, long ss, float* y, long ycs, int cols, long n, const float* bias, int clamp)
    void kc_wino_dy1_f32_a8_m2(const float* src, long cs, int cols, float* dst, long ds, long n)
    void kc_wino_filter1_f32_a8_m2(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out1_f64_a8_m3(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias, int clamp)
    void kc_wino_dy1_f64_a8_m3(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a8_m3(const double* src, long ts, double* dst, long ds, long n)
    int kc_wino_out1_f64_a8_m2(const double* src, long ss, double* y, long ycs, int cols, long n, const double* bias, int clamp)
    void kc_wino_dy1_f64_a8_m2(const double* src, long cs, int cols, double* dst, long ds, long n)
    void kc_wino_filter1_f64_a8_m2(const double* src, long ts, double* dst, long ds, long n)
    const double kc_wino_at8_m3[24]
    const double kc_wino_g8_r6[48]
    const double kc_wino_at8_m2[16]
    const double kc_wino_g8_r7[56]
    int kc_wino_out_f32_a6_m2(const float* src, long ss, float* y, long yrs, long ycs, int rows, int cols, long n,
                           const float* bias, int clamp)
    void kc_wino_dy_f32_a6_m2(const float* src, long rs, long cs, int rows, int cols, float* dst, long ds, long n)
    void kc_wino_filter_f32_a6_m2(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out_f32_a8_m4(const float* src, long ss, float* y, long yrs, long ycs, int rows, int cols, long n,
                           const float* bias, int clamp)
    void kc_wino_dy_f32_a8_m4(const float* src, long rs, long cs, int rows, int cols, float* dst, long ds, long n)
    void kc_wino_filter_f32_a8_m4(const float* src, long ts, float* dst, long ds, long n)
    int kc_wino_out_f64_a6_m2(const double* src, long ss, double* y, long yrs, long ycs, int rows, int cols, long n,
                           const double* bias, int clamp)
    void kc_wino_dy_f64_a6_m2(const double* src, long rs, long cs, int rows, int cols, double* dst, long ds, long n)
    void kc_wino_filter_f64_a6_m2(const double* src, long ts, double* dst, long ds, long n)
    int kc_wino_out_f64_a8_m4(const double* src, long ss, double* y, long yrs, long ycs, int rows, int cols, long n,
                           const double* bias, int clamp)
    void kc_wino_dy_f64_a8_m4(const double* src, long rs, long cs, int rows, int cols, double* dst, long ds, long n)
    void kc_wino_filter_f64_a8_m4(const double* src, long ts, double* dst, long ds, long n)
    const double kc_wino_bt4[16]
    const double kc_wino_g4[12]
    const double kc_wino_g6[18]
    const double kc_wino_g8[24]
    const double kc_wino_at4[8]
    const double kc_wino_bt6[36]
    const double kc_wino_at6[24]
    const double kc_wino_bt8[64]
    const double kc_wino_at8[48]

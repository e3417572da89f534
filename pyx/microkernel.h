/* kconv's hot loops: a register-blocked "indirect GEMM" tile, C[MR x NR] (+)= A[MR x kc*ntaps] B, and
 * the same register tile for depthwise convolution (channels across the lanes; further down).
 *
 * This header is the only C in kconv. Plain Cython loops cannot keep an accumulator tile in registers
 * (measured: 6 GFLOP/s); GCC/clang vector extensions can (~90 % of the FMA roof). Everything around the
 * tile (packing, tiling, transforms, threads) is Cython.
 *
 * Indirection: row i of A, for tap t, is read from a[t*MR + i] + a_off, its kc values lda apart. A packed
 * panel, a row of an NHWC image (a convolution tap), or a Winograd-domain tile row all fit that shape,
 * so direct convolution runs without an im2col buffer. B is a panel of ntaps*kc rows of NR values, ldb
 * apart (NR for a packed panel; a row stride to read NR-wide slices of a larger matrix in place).
 * Row i of C is c[i] + c_off (NR contiguous values); only the first mr rows and nr columns are stored.
 *
 * The tile shape follows the instruction set the file is compiled for (the register count differs):
 *   AVX-512 (32 zmm): float 8 x 32, double 8 x 16  (16 accumulators)
 *   AVX2    (16 ymm): float 6 x 16, double 6 x 8   (12 accumulators)
 *   other   (SSE/NEON, 16 x 128-bit): float 6 x 8, double 6 x 4
 */
#ifndef KCONV_MICROKERNEL_H
#define KCONV_MICROKERNEL_H
#include <immintrin.h>


#if defined(__AVX512F__)
#define KC_VEC_BYTES 64
#define KC_MR 8
#define KC_ISA "avx512"
#elif defined(__AVX2__) && defined(__FMA__)
#define KC_VEC_BYTES 32
#define KC_MR 6
#define KC_ISA "avx2"
#else
#define KC_VEC_BYTES 16
#define KC_MR 6
#define KC_ISA "generic"
#endif

/* Two vectors of columns per row: NR = 2 * lanes. */
#define KC_NV 2
#define KC_MR_F32 KC_MR
#define KC_NR_F32 (KC_NV * KC_VEC_BYTES / 4)
#define KC_MR_F64 KC_MR
#define KC_NR_F64 (KC_NV * KC_VEC_BYTES / 8)

/* aligned(4/8): loads and stores of C rows and B panels need not be vector-aligned. */
typedef float kc_vf32 __attribute__((vector_size(KC_VEC_BYTES), aligned(4)));
typedef double kc_vf64 __attribute__((vector_size(KC_VEC_BYTES), aligned(8)));
typedef int kc_vi32 __attribute__((vector_size(KC_VEC_BYTES)));          /* comparison masks */
typedef long long kc_vi64 __attribute__((vector_size(KC_VEC_BYTES)));

/* The common epilogues, applied to a tile in registers before it is stored: bias (NULL: none) and clamp
 * 1 = relu, 2 = relu6 (the caller applies any other activation after the store). */
#define KC_TILE_EPILOGUE(T, V, VI, MR, NV)                                                                   \
    if (bias) {                                                                                    \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {                                     \
            V bv = *(const V *)(bias + v * LANES);                                                 \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) acc[i][v] += bv;               \
        }                                                                                          \
    }                                                                                              \
    if (clamp) { /* as epilogue.pxi: v < 0 -> 0, v > 6 -> 6 (relu6), NaN kept; by bit masks (C has no   \
                    vector ?:) */                                                                  \
        V six = (V){0} + (T)6;                                                                     \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                    \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {                                 \
                VI bits = (VI)acc[i][v];                                                           \
                bits &= ~(acc[i][v] < (V){0});                                                     \
                if (clamp == 2) {                                                                  \
                    VI over = acc[i][v] > six;                                                     \
                    bits = (bits & ~over) | ((VI)six & over);                                      \
                }                                                                                  \
                acc[i][v] = (V)bits;                                                               \
            }                                                                                      \
    }

/* Streaming (non-temporal) stores of whole vectors at vector-aligned addresses: the line is written without
 * first being read for ownership. */
#if KC_VEC_BYTES == 64
#define KC_STREAM(p, x) _mm512_stream_si512((__m512i *)(p), (__m512i)(x))
#elif KC_VEC_BYTES == 32
#define KC_STREAM(p, x) _mm256_stream_si256((__m256i *)(p), (__m256i)(x))
#else
#define KC_STREAM(p, x) _mm_stream_si128((__m128i *)(p), (__m128i)(x))
#endif
#define KC_CLAMP_STREAM 4      /* or'ed into a tile's clamp: store its rows with streaming stores */
/* Streaming stores are weakly ordered: a thread fences them before others may read what it wrote. */
static inline void kc_store_fence(void) { _mm_sfence(); }

/* The end of every tile: + C (accumulate), the epilogue, and the store of its first mr rows and nr columns. */
#define KC_TILE_STORE(T, V, VI, MR, NV)                                                                     \
    const int stream = clamp & KC_CLAMP_STREAM;                                                   \
    clamp &= 3;                                                                                   \
    if (mr == MR && nr == NR) {                                                                \
        if (accumulate)                                                                           \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                               \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                           \
                    acc[i][v] += *(const V *)(c[i] + c_off + v * LANES);                          \
        KC_TILE_EPILOGUE(T, V, VI, MR, NV)                                                         \
        if (stream) {                                                                             \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                             \
                T *ci = c[i] + c_off;                                                             \
                if (((unsigned long)ci & (KC_VEC_BYTES - 1)) == 0) {                              \
                    _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) KC_STREAM(ci + v * LANES, acc[i][v]); \
                } else {                                                                          \
                    _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) *(V *)(ci + v * LANES) = acc[i][v]; \
                }                                                                                 \
            }                                                                                     \
        } else                                                                                    \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                               \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                           \
                    *(V *)(c[i] + c_off + v * LANES) = acc[i][v];                                 \
    } else { /* edge tile: spill to a scratch tile, store the valid part */                       \
        T tile[MR][NR];                                                                        \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                   \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                               \
                *(V *)&tile[i][v * LANES] = acc[i][v];                                            \
        for (int i = 0; i < mr; i++) {                                                            \
            T *ci = c[i] + c_off;                                                                 \
            for (int j = 0; j < nr; j++) {                                                        \
                T s = accumulate ? ci[j] + tile[i][j] : tile[i][j];                               \
                if (bias) s += bias[j];                                                           \
                if (clamp) {                                                                      \
                    s = s < 0 ? 0 : s;                                                            \
                    if (clamp == 2 && s > 6) s = 6;                                               \
                }                                                                                 \
                ci[j] = s;                                                                        \
            }                                                                                     \
        }                                                                                         \
    }

/* One function body for both precisions (C has no templates). T: scalar, V: vector, NR: columns. */
#define KC_DEFINE_IGEMM(NAME, T, V, VI, MR, NV)                                                   \
static inline void NAME(int ntaps, int kc, const T *const *a, long a_off, long lda,              \
                        const T *b, long ldb, T *const *c, long c_off, int mr, int nr,            \
                        int accumulate, const T *bias, int clamp)                                 \
{                                                                                                 \
    enum { LANES = KC_VEC_BYTES / sizeof(T), NR = NV * LANES };                                   \
    V acc[MR][NV];                                                                          \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                       \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] = (V){0};               \
    for (int t = 0; t < ntaps; t++) {                                                             \
        const T *ar[MR];                                                                       \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) ar[i] = a[t * MR + i] + a_off; \
        _Pragma("GCC unroll 4") for (int k = 0; k < kc; k++) {                                    \
            V bv[NV];                                                                          \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                               \
                bv[v] = *(const V *)(b + v * LANES); /* V is 4/8-aligned: unaligned load */      \
            b += ldb;                                                                             \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                             \
                V ai = ar[i][k * lda] - (V){0}; /* broadcast (x - 0 == x, also for -0) */          \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] += ai * bv[v];  \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
    KC_TILE_STORE(T, V, VI, MR, NV)                                                               \
}

/* The same tile when its MR rows are one run, rs values apart: row i of tap t is a[t*MR] + a_off + i*rs.
 * One pointer per tap instead of MR frees the registers the narrow tile's 16 row pointers spilled (and
 * reloaded through p0, an FMA port). Two uses: MR pixels of an image row (rs = stride x channels, the
 * reduction contiguous: LDA 1) in igemm_conv.pxi, index_panels; MR channels of one tap (rs = 1, the
 * reduction over pixels lda apart: LDA 0, the argument) in filter_grad.pxi. RS / LDA: known at compile
 * time (the loads then take constant displacements from one register), or 0 for the arguments. */
#define KC_DEFINE_IGEMM_RUN(NAME, T, V, VI, MR, NV, RS, LDA)                                      \
static inline void NAME(int ntaps, int kc, const T *const *a, long a_off, long rs, long lda,     \
                        const T *b, long ldb, T *const *c, long c_off, int mr, int nr,            \
                        int accumulate, const T *bias, int clamp)                                 \
{                                                                                                 \
    enum { LANES = KC_VEC_BYTES / sizeof(T), NR = NV * LANES };                                   \
    const long stride = RS ? RS : rs, step = LDA ? LDA : lda;                                     \
    V acc[MR][NV];                                                                          \
    _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++)                                       \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] = (V){0};               \
    for (int t = 0; t < ntaps; t++) {                                                             \
        const T *ar = a[t * MR] + a_off;                                                          \
        _Pragma("GCC unroll 4") for (int k = 0; k < kc; k++) {                                    \
            V bv[NV];                                                                          \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                               \
                bv[v] = *(const V *)(b + v * LANES);                                              \
            b += ldb;                                                                             \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                             \
                V ai = ar[i * stride] - (V){0};                                                   \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] += ai * bv[v];  \
            }                                                                                     \
            ar += step;                                                                           \
        }                                                                                         \
    }                                                                                             \
    KC_TILE_STORE(T, V, VI, MR, NV)                                                               \
}

KC_DEFINE_IGEMM(kc_igemm_f32, float, kc_vf32, kc_vi32, KC_MR, KC_NV)
KC_DEFINE_IGEMM(kc_igemm_f64, double, kc_vf64, kc_vi64, KC_MR, KC_NV)
/* The narrow tile, for layers with at most one vector of output channels (per group): twice the rows and
 * one vector of columns, the same number of accumulators, none of them idle (16 x 16 floats on AVX-512,
 * where the 8 x 32 tile would leave half its columns empty on a 16-filter layer). */
KC_DEFINE_IGEMM(kc_igemm_narrow_f32, float, kc_vf32, kc_vi32, 2 * KC_MR, 1)
KC_DEFINE_IGEMM(kc_igemm_narrow_f64, double, kc_vf64, kc_vi64, 2 * KC_MR, 1)
KC_DEFINE_IGEMM_RUN(kc_run_pixels_f32, float, kc_vf32, kc_vi32, 2 * KC_MR, 1, 0, 1)
KC_DEFINE_IGEMM_RUN(kc_run_pixels16_f32, float, kc_vf32, kc_vi32, 2 * KC_MR, 1, 16, 1)
KC_DEFINE_IGEMM_RUN(kc_run_pixels32_f32, float, kc_vf32, kc_vi32, 2 * KC_MR, 1, 32, 1)
KC_DEFINE_IGEMM_RUN(kc_run_channels_f32, float, kc_vf32, kc_vi32, KC_MR, KC_NV, 1, 0)
KC_DEFINE_IGEMM_RUN(kc_run_channels_narrow_f32, float, kc_vf32, kc_vi32, 2 * KC_MR, 1, 1, 0)

/* The run tiles' one entry (float). The wide tile runs over channels only (rs == 1, the reduction lda
 * apart: the filter gradient). The narrow tile runs over pixels rs apart with a contiguous reduction
 * (lda == 1; 16 channels at stride 1 or 2 compiled in), or over channels like the wide one. */
static inline void kc_igemm_run_f32(int narrow, int ntaps, int kc, const float *const *a, long a_off, long rs,
                                    long lda, const float *b, long ldb, float *const *c, long c_off, int mr,
                                    int nr, int accumulate, const float *bias, int clamp)
{
    if (!narrow)
        kc_run_channels_f32(ntaps, kc, a, a_off, rs, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
    else if (lda == 1 && rs == 16)
        kc_run_pixels16_f32(ntaps, kc, a, a_off, rs, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
    else if (lda == 1 && rs == 32)
        kc_run_pixels32_f32(ntaps, kc, a, a_off, rs, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
    else if (lda == 1)
        kc_run_pixels_f32(ntaps, kc, a, a_off, rs, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
    else
        kc_run_channels_narrow_f32(ntaps, kc, a, a_off, rs, lda, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
}

/* The wide tile (8 x 32 floats on AVX-512) on MR pixels of one image row, rs values apart, and its half (one
 * vector of columns, for a last panel of at most that many output channels): one pointer per tap instead of
 * MR, so a row tile's pointer table is ntaps entries (index_panels) and the loop steps one pointer. Measured
 * on one core (AVX-512 Xeon, a 5-tap 128-channel and a 9-tap 32-channel loop with its tables filled per tile,
 * in cache): 3-4 % faster than the pointer tile before counting the tables it no longer builds. */
KC_DEFINE_IGEMM_RUN(kc_run_pixels_wide_f32, float, kc_vf32, kc_vi32, KC_MR, KC_NV, 0, 1)
KC_DEFINE_IGEMM_RUN(kc_run_pixels_half_f32, float, kc_vf32, kc_vi32, KC_MR, 1, 0, 1)

static inline void kc_igemm_run_wide_f32(int ntaps, int kc, const float *const *a, long a_off, long rs,
                                         const float *b, long ldb, float *const *c, long c_off, int mr, int nr,
                                         int accumulate, const float *bias, int clamp)
{
    if (2 * nr <= KC_NR_F32)
        kc_run_pixels_half_f32(ntaps, kc, a, a_off, rs, 1, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
    else
        kc_run_pixels_wide_f32(ntaps, kc, a, a_off, rs, 1, b, ldb, c, c_off, mr, nr, accumulate, bias, clamp);
}

/* The filter gradient's last few output channels, transposed: where a layer's filters leave at most 8
 * channels in the last column panel (100 filters = 3 x 32 + 4), the half tile would run 8 FMAs per step for
 * 4 live lanes, and its 8 broadcasts make it load-bound (Kim's k5 filter gradient spent 16 % of its time
 * there, 0.8 of a full panel's time for 4 of 32 columns). Here input channels go across the lanes and the
 * few output channels are the rows: 4 broadcasts of dY and NV vectors of X per step, every lane live.
 *   out[r*ldo + v*LANES + l] += sum over rows j < nrows, pixels p < npix of
 *       dy[j*ldr + p*ldd + r] * x[j*xr + p*ldx + v*LANES + l]        (r < rows <= 4, v < NV)
 * Rows past `rows` read row 0 and are not stored. Each output sums its pixels in the half tile's order. */
#define KC_DEFINE_GRAD_TAIL(NAME, T, V, NV)                                                             \
static inline void NAME(int nrows, int npix, int rows, const T *dy, long ldr, long ldd, const T *x,  \
                        long xr, long ldx, T *out, long ldo)                                         \
{                                                                                                    \
    enum { LANES = KC_VEC_BYTES / sizeof(T), R = 4 };                                                \
    V acc[R][NV];                                                                                    \
    int ro[R];                                                                                       \
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                            \
        ro[r] = r < rows ? r : 0;                                                                    \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] = (V){0};                     \
    }                                                                                                \
    for (int j = 0; j < nrows; j++) {                                                                \
        const T *d = dy + j * ldr, *xp = x + j * xr;                                                 \
        for (int p = 0; p < npix; p++) {                                                             \
            V xv[NV];                                                                                \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                     \
                xv[v] = *(const V *)(xp + v * LANES);                                                \
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {                                    \
                V dv = d[ro[r]] - (V){0};                                                            \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[r][v] += dv * xv[v];        \
            }                                                                                        \
            d += ldd;                                                                                \
            xp += ldx;                                                                               \
        }                                                                                            \
    }                                                                                                \
    for (int r = 0; r < rows; r++)                                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) {                                       \
            V *o = (V *)(out + r * ldo + v * LANES);                                                 \
            *o = *o + acc[r][v];                                                                     \
        }                                                                                            \
}
KC_DEFINE_GRAD_TAIL(kc_grad_tail_f32_nv4, float, kc_vf32, 4)
KC_DEFINE_GRAD_TAIL(kc_grad_tail_f32_nv2, float, kc_vf32, 2)
KC_DEFINE_GRAD_TAIL(kc_grad_tail_f32_nv1, float, kc_vf32, 1)

/* The tail over `nvec` vectors of channels (any count) and up to 4 rows: blocks of 4, 2 and 1 vectors. */
static inline void kc_grad_tail_f32(int nrows, int npix, int rows, const float *dy, long ldr, long ldd,
                                    const float *x, long xr, long ldx, int nvec, float *out, long ldo)
{
    enum { LANES = KC_VEC_BYTES / sizeof(float) };
    int v = 0;
    for (; v + 4 <= nvec; v += 4)
        kc_grad_tail_f32_nv4(nrows, npix, rows, dy, ldr, ldd, x + v * LANES, xr, ldx, out + v * LANES, ldo);
    for (; v + 2 <= nvec; v += 2)
        kc_grad_tail_f32_nv2(nrows, npix, rows, dy, ldr, ldd, x + v * LANES, xr, ldx, out + v * LANES, ldo);
    for (; v < nvec; v++)
        kc_grad_tail_f32_nv1(nrows, npix, rows, dy, ldr, ldd, x + v * LANES, xr, ldx, out + v * LANES, ldo);
}

/* The Winograd filter gradient's product for one KC_MR x NR tile of M[xi] (float64, rows ldm apart):
 *   m[i*ldm + j] (+)= sum over tiles s < ntiles of a[s*lda + i] * b[s*ldb + j]      (i < mr, j < nr)
 * in runs of `run` tiles summed in float32 registers, each run's tile then added to m in float64 (set by
 * the first run when `first`). The sums, and their order, are those of the float32 tile stored and added
 * by the caller; here the tile goes from registers to m, converted a half vector at a time: the caller's
 * store, reload and add cost 19 % of the tile's time (Kim k6 filter gradient, F(3,6), 64-tile runs, one
 * core, Zen 5). Rows are one run of channels (a + i): rows past mr read the values after the row (the
 * caller keeps KC_MR spare values past its operand) and are not stored. */
#if KC_VEC_BYTES == 64
#define KC_CVT_LO(x) _mm512_cvtps_pd(_mm512_castps512_ps256((__m512)(x)))
#define KC_CVT_HI(x) _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)(x)), 1)))
#elif KC_VEC_BYTES == 32
#define KC_CVT_LO(x) _mm256_cvtps_pd(_mm256_castps256_ps128((__m256)(x)))
#define KC_CVT_HI(x) _mm256_cvtps_pd(_mm256_extractf128_ps((__m256)(x), 1))
#else
#define KC_CVT_LO(x) _mm_cvtps_pd((__m128)(x))
#define KC_CVT_HI(x) _mm_cvtps_pd(_mm_movehl_ps((__m128)(x), (__m128)(x)))
#endif
static inline void kc_wgrad_tile_f32(int ntiles, int run, const float *a, long lda, const float *b, long ldb,
                                     double *m, long ldm, int mr, int nr, int first)
{
    enum { LANES = KC_VEC_BYTES / 4, NR = KC_NV * LANES, HALF = LANES / 2 };
    for (int s0 = 0; s0 < ntiles; s0 += run, first = 0) {
        const int kc = ntiles - s0 < run ? ntiles - s0 : run;
        const float *ar = a + s0 * lda, *bp = b + s0 * ldb;
        kc_vf32 acc[KC_MR][KC_NV];
        _Pragma("GCC unroll 16") for (int i = 0; i < KC_MR; i++)
            _Pragma("GCC unroll 2") for (int v = 0; v < KC_NV; v++) acc[i][v] = (kc_vf32){0};
        _Pragma("GCC unroll 4") for (int k = 0; k < kc; k++) {
            kc_vf32 bv[KC_NV];
            _Pragma("GCC unroll 2") for (int v = 0; v < KC_NV; v++) bv[v] = *(const kc_vf32 *)(bp + v * LANES);
            _Pragma("GCC unroll 16") for (int i = 0; i < KC_MR; i++) {
                kc_vf32 ai = ar[i] - (kc_vf32){0};
                _Pragma("GCC unroll 2") for (int v = 0; v < KC_NV; v++) acc[i][v] += ai * bv[v];
            }
            ar += lda;
            bp += ldb;
        }
        if (mr == KC_MR && nr == NR) {
            _Pragma("GCC unroll 16") for (int i = 0; i < KC_MR; i++)
                _Pragma("GCC unroll 2") for (int v = 0; v < KC_NV; v++) {
                    kc_vf64 *lo = (kc_vf64 *)(m + i * ldm + v * LANES), *hi = (kc_vf64 *)(m + i * ldm + v * LANES + HALF);
                    kc_vf64 l = (kc_vf64)KC_CVT_LO(acc[i][v]), h = (kc_vf64)KC_CVT_HI(acc[i][v]);
                    *lo = first ? l : *lo + l;
                    *hi = first ? h : *hi + h;
                }
        } else {
            float tile[KC_MR][NR];
            _Pragma("GCC unroll 16") for (int i = 0; i < KC_MR; i++)
                _Pragma("GCC unroll 2") for (int v = 0; v < KC_NV; v++) *(kc_vf32 *)&tile[i][v * LANES] = acc[i][v];
            for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++)
                    m[i * ldm + j] = first ? (double)tile[i][j] : m[i * ldm + j] + (double)tile[i][j];
        }
    }
}

/* The forward's last few output channels (at most 8 in the last column panel, e.g. 100 = 3 x 32 + 4) as dot
 * products: the reduction's channels across the lanes, 4 pixels x 4 filters of accumulators, each step 4
 * vectors of the pixels' inputs and 4 of the filters' (wt: one row of the transposed tail filter per filter,
 * the reduction in the micro-kernel's order), then the lanes summed 4 accumulators at a time. The half tile
 * ran 8 FMAs a step for 4 live lanes of 16 (15 % of Kim's k5 forward for 4 of its 100 columns).
 *   c[i][c_off + k] (+)= sum over t < ntaps, v < kc of A(i, t)[v] * wt[k * ldw + t * kc + v]
 * with A(i, t) = a[t * KC_MR] + a_off + i * rs (a run of pixels, run != 0) or a[t * KC_MR + i] + a_off;
 * rows i < mr <= KC_MR and filters k < nr <= 8 are stored, then bias and clamp as the tiles do. */
static inline kc_vf32 kc_pair_halves_f32(kc_vf32 a, kc_vf32 b, int width)
{   /* lanes 0..width-1 of each of the L / (2 width) groups: a's, b's pairs of `width`-lane groups summed */
    enum { L = KC_VEC_BYTES / 4 };
    kc_vi32 lo, hi;
    for (int l = 0; l < L; l++) {
        int group = l / width, lane = l % width, src = (group / 2) * 2 * width + lane + (group % 2 ? L : 0);
        lo[l] = src;
        hi[l] = src + width;
    }
    return __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);
}
static inline void kc_sum4_f32(kc_vf32 a, kc_vf32 b, kc_vf32 c, kc_vf32 d, float *s)
{   /* s[0..3] = the lane sums of a, b, c, d */
    enum { L = KC_VEC_BYTES / 4 };
    kc_vf32 ab = kc_pair_halves_f32(a, b, L / 2), cd = kc_pair_halves_f32(c, d, L / 2);
    kc_vf32 x = kc_pair_halves_f32(ab, cd, L / 4);       /* quarters: a, c, b, d partial sums */
    float t[L];
    *(kc_vf32 *)t = x;
    for (int q = 0; q < 4; q++) {
        float sum = 0;
        for (int l = 0; l < L / 4; l++) sum += t[q * (L / 4) + l];
        s[q == 1 ? 2 : q == 2 ? 1 : q] = sum;
    }
}
/* One block of the tail: P pixels x F filters of accumulators (F filters from k0 on; filters past nr repeat
 * a valid one and rows past mr a valid row, neither stored). Instances below by the panel's width. */
#define KC_DEFINE_FWD_TAIL(NAME, P, F)                                                                    \
static inline void NAME(int ntaps, int kc, const float *const *a, long a_off, long rs, int run,        \
                        const float *wt, long ldw, float *const *c, long c_off, int i0, int mr, int k0,  \
                        int nr, int accumulate, const float *bias, int clamp)                         \
{                                                                                                      \
    enum { LANES = KC_VEC_BYTES / 4, PF = P * F };                                                     \
    kc_vf32 acc[PF];                                                                                   \
    float tail[PF], sums[PF + 3];                                                                      \
    const float *wk[F];                                                                                \
    _Pragma("GCC unroll 4") for (int f = 0; f < F; f++) wk[f] = wt + (k0 + f < nr ? k0 + f : k0) * ldw; \
    _Pragma("GCC unroll 32") for (int j = 0; j < PF; j++) {                                          \
        acc[j] = (kc_vf32){0};                                                                         \
        tail[j] = 0;                                                                                   \
    }                                                                                                  \
    for (int t = 0; t < ntaps; t++) {                                                                  \
        const float *ai[P];                                                                            \
        _Pragma("GCC unroll 8") for (int i = 0; i < P; i++) {                                          \
            int r = i0 + i < mr ? i0 + i : i0;                                                         \
            ai[i] = run ? a[t * KC_MR] + a_off + r * rs : a[t * KC_MR + r] + a_off;                    \
        }                                                                                              \
        int v = 0;                                                                                     \
        for (; v + LANES <= kc; v += LANES) {                                                          \
            kc_vf32 wv[F];                                                                             \
            _Pragma("GCC unroll 4") for (int f = 0; f < F; f++) wv[f] = *(const kc_vf32 *)(wk[f] + t * kc + v); \
            _Pragma("GCC unroll 8") for (int i = 0; i < P; i++) {                                      \
                kc_vf32 xv = *(const kc_vf32 *)(ai[i] + v);                                            \
                _Pragma("GCC unroll 4") for (int f = 0; f < F; f++) acc[i * F + f] += xv * wv[f];      \
            }                                                                                          \
        }                                                                                              \
        for (; v < kc; v++)                                                                            \
            _Pragma("GCC unroll 8") for (int i = 0; i < P; i++)                                        \
                _Pragma("GCC unroll 4") for (int f = 0; f < F; f++)                                    \
                    tail[i * F + f] += ai[i][v] * wk[f][t * kc + v];                                   \
    }                                                                                                  \
    _Pragma("GCC unroll 8") for (int j = 0; j < PF; j += 4)     /* lanes summed 4 accumulators at once */ \
        kc_sum4_f32(acc[j], acc[j + 1 < PF ? j + 1 : j], acc[j + 2 < PF ? j + 2 : j],                  \
                    acc[j + 3 < PF ? j + 3 : j], sums + j);                                            \
    for (int i = 0; i < P && i0 + i < mr; i++)                                                         \
        for (int f = 0; f < F && k0 + f < nr; f++) {                                                   \
            float *out = c[i0 + i] + c_off + k0 + f;                                                   \
            float s = sums[i * F + f] + tail[i * F + f];                                               \
            if (accumulate) s = *out + s;                                                              \
            if (bias) s += bias[k0 + f];                                                               \
            if (clamp) {                                                                               \
                s = s < 0 ? 0 : s;                                                                     \
                if (clamp == 2 && s > 6) s = 6;                                                        \
            }                                                                                          \
            *out = s;                                                                                  \
        }                                                                                              \
}
/* A panel of 1-3 filters (a layer with that many output channels, or the input gradient of an RGB or grey
 * first layer) takes all the tile's rows at once, F x P accumulators (more pixels where fewer filters): the
 * 4 x 4 block would spend 4 FMAs per live one at 1 filter. 16 registers (AVX2) hold fewer. */
#if KC_VEC_BYTES == 64
#define KC_TAIL_P3 8
#else
#define KC_TAIL_P3 3
#endif
KC_DEFINE_FWD_TAIL(kc_fwd_tail_p4f4_f32, 4, 4)
KC_DEFINE_FWD_TAIL(kc_fwd_tail_f1_f32, KC_MR, 1)
KC_DEFINE_FWD_TAIL(kc_fwd_tail_f2_f32, KC_MR, 2)
KC_DEFINE_FWD_TAIL(kc_fwd_tail_f3_f32, KC_TAIL_P3, 3)

static inline void kc_fwd_tail_f32(int ntaps, int kc, const float *const *a, long a_off, long rs, int run,
                                   const float *wt, long ldw, float *const *c, long c_off, int mr, int nr,
                                   int accumulate, const float *bias, int clamp)
{
    if (nr == 1)
        kc_fwd_tail_f1_f32(ntaps, kc, a, a_off, rs, run, wt, ldw, c, c_off, 0, mr, 0, nr, accumulate, bias, clamp);
    else if (nr == 2)
        kc_fwd_tail_f2_f32(ntaps, kc, a, a_off, rs, run, wt, ldw, c, c_off, 0, mr, 0, nr, accumulate, bias, clamp);
    else if (nr == 3)
        for (int i0 = 0; i0 < mr; i0 += KC_TAIL_P3)
            kc_fwd_tail_f3_f32(ntaps, kc, a, a_off, rs, run, wt, ldw, c, c_off, i0, mr, 0, nr, accumulate, bias,
                               clamp);
    else
        for (int i0 = 0; i0 < mr; i0 += 4)
            for (int k0 = 0; k0 < nr; k0 += 4)
                kc_fwd_tail_p4f4_f32(ntaps, kc, a, a_off, rs, run, wt, ldw, c, c_off, i0, mr, k0, nr, accumulate,
                                     bias, clamp);
}

/* Asks for `bytes` from p to be brought into L2, one request per cache line: a copy or a tile that reads them
   soon then finds them there instead of waiting on memory (igemm_conv.pxi, prefetch_block_rows; the next
   depthwise row, depthwise.pxi). The empty
   volatile asm is a side effect GCC can see: without it a caller doing nothing but prefetching counts as a
   pure function, and its calls are dropped as dead code. */
static inline void kc_prefetch_l2(const void *p, long bytes)
{
    const char *c = (const char *)p;
    for (long i = 0; i < bytes; i += 64)
        __builtin_prefetch(c + i, 0, 2);
    __asm__ __volatile__("");
}

/* The same for lines about to be written (prefetchw where the CPU has it): their stores then find them owned
   instead of each waiting on a read for ownership. */
static inline void kc_prefetch_write_l2(void *p, long bytes)
{
    char *c = (char *)p;
    for (long i = 0; i < bytes; i += 64)
        __builtin_prefetch(c + i, 1, 2);
    __asm__ __volatile__("");
}

/* One LANES x LANES block of floats transposed in registers: dst[r * ldd + v] = src[v * lds + r]. The input
 * gradient's filter panels are the filter transposed (its columns are input channels, K values apart), and a
 * scalar copy of them read 32 rows 2 KB apart per panel row: two L1 sets, every load a miss; packing a 3x3
 * 512 -> 512 filter so took 1.8 ms on one core (Zen 5), longer than the batch-1 product it fed. Stage s pairs
 * rows i and i + s (i & s == 0) and swaps their off-diagonal s x s blocks; log2(LANES) stages, each a
 * two-vector shuffle per row (one vpermt2ps on AVX-512). */
#define KC_T_LO(l, s) (((l) & (s)) ? KC_T_L + (l) - (s) : (l))
#define KC_T_HI(l, s) (((l) & (s)) ? KC_T_L + (l) : (l) + (s))
#define KC_T_M4(F, s, b) F((b), s), F((b) + 1, s), F((b) + 2, s), F((b) + 3, s)
#if KC_VEC_BYTES == 64
#define KC_T_L 16
#define KC_T_MASK(F, s) (kc_vi32){KC_T_M4(F, s, 0), KC_T_M4(F, s, 4), KC_T_M4(F, s, 8), KC_T_M4(F, s, 12)}
#elif KC_VEC_BYTES == 32
#define KC_T_L 8
#define KC_T_MASK(F, s) (kc_vi32){KC_T_M4(F, s, 0), KC_T_M4(F, s, 4)}
#else
#define KC_T_L 4
#define KC_T_MASK(F, s) (kc_vi32){KC_T_M4(F, s, 0)}
#endif
#define KC_T_STAGE(x, s)                                                                            \
    for (int i = 0; i < KC_T_L; i++) {                                                              \
        if (i & (s)) continue;                                                                      \
        kc_vf32 a = x[i], b = x[i + (s)];                                                           \
        x[i] = __builtin_shuffle(a, b, KC_T_MASK(KC_T_LO, s));                                      \
        x[i + (s)] = __builtin_shuffle(a, b, KC_T_MASK(KC_T_HI, s));                                \
    }
enum { KC_TRANSPOSE_LANES = KC_T_L };

static inline void kc_transpose_block_f32(const float *src, long lds, float *dst, long ldd)
{
    kc_vf32 x[KC_T_L];
    _Pragma("GCC unroll 16") for (int i = 0; i < KC_T_L; i++) x[i] = *(const kc_vf32 *)(src + i * lds);
#if KC_T_L == 16
    _Pragma("GCC unroll 16") KC_T_STAGE(x, 8)
#endif
#if KC_T_L >= 8
    _Pragma("GCC unroll 16") KC_T_STAGE(x, 4)
#endif
    _Pragma("GCC unroll 16") KC_T_STAGE(x, 2)
    _Pragma("GCC unroll 16") KC_T_STAGE(x, 1)
    _Pragma("GCC unroll 16") for (int i = 0; i < KC_T_L; i++) *(kc_vf32 *)(dst + i * ldd) = x[i];
}

/* The bias gradient: out[k] += sum over r < rows of x[r * K + k]. Sums stay in vector registers over 16
 * rows at a time (float), then go into the float64 out: a per-row loop adding a row into out in memory ran
 * at ~60 cycles a row of 32 (one core, 32768 x 32, Zen 4), bound by its loop overhead and stores. */
static inline void kc_column_sums_f32(long rows, long K, const float *x, double *out)
{
    enum { L = KC_VEC_BYTES / 4, R = 16 };
    long k = 0;
    for (; k + 2 * L <= K; k += 2 * L)
        for (long r0 = 0; r0 < rows; r0 += R) {
            kc_vf32 s0 = {0}, s1 = {0};
            long r1 = r0 + R < rows ? r0 + R : rows;
            for (long r = r0; r < r1; r++) {
                s0 += *(const kc_vf32 *)(x + r * K + k);
                s1 += *(const kc_vf32 *)(x + r * K + k + L);
            }
            for (int l = 0; l < L; l++) {
                out[k + l] += s0[l];
                out[k + L + l] += s1[l];
            }
        }
    for (; k + L <= K; k += L)
        for (long r0 = 0; r0 < rows; r0 += R) {
            kc_vf32 s0 = {0};
            long r1 = r0 + R < rows ? r0 + R : rows;
            for (long r = r0; r < r1; r++) s0 += *(const kc_vf32 *)(x + r * K + k);
            for (int l = 0; l < L; l++) out[k + l] += s0[l];
        }
    for (; k < K; k++) {
        double s = 0;
        for (long r = 0; r < rows; r++) s += x[r * K + k];
        out[k] += s;
    }
}

/* The half tile, for the last column panel of a layer whose output channels leave at most one vector
 * there (100 filters = 3 x 32 + 4): the same rows and B panel (read NR apart), half the FMAs. */
KC_DEFINE_IGEMM(kc_igemm_half_f32, float, kc_vf32, kc_vi32, KC_MR, 1)
KC_DEFINE_IGEMM(kc_igemm_half_f64, double, kc_vf64, kc_vi64, KC_MR, 1)

/* Depthwise convolution: every channel is its own 1-channel convolution, so there is no reduction over
 * channels for a GEMM tile to use. Channels go across the vector lanes instead, and the same register tile
 * (KC_MR rows x NV vectors) holds other things:
 *
 *   kc_dw_<T>_nv<NV>       forward / input gradient: rows are KC_MR destination pixels.
 *       c[i][0..NV*LANES) = sum over t < ntaps of a[t*KC_MR + i][a_off + ..] * w[t][w_off + ..]
 *     a: for each tap, the source pixel of each row (a row of zeros in the padding); rows past mr repeat a
 *     valid pointer and are not stored.
 *   kc_dwgrad_<T>_nv<NV>   filter gradient: rows are up to KC_MR taps, the reduction runs over npix pixels.
 *       out[r*ldo + ..] += sum over p < npix of a[p*lda + r][a_off + ..] * dy[p*ldd + ..]
 *     a: for each pixel, the source pixel of each tap.
 *
 * NV = 2 is the main case, NV = 1 the tail of channels narrower than two vectors (the caller does the last
 * channels that fill no vector with plain loops). Each vector of channels is loaded once per tap and pixel
 * and used for one FMA: depthwise layers are bound by memory, and this keeps the traffic at the images. */
#define KC_DEFINE_DW(NAME, GRAD, T, V, VI, NV)                                                         \
static inline void NAME(int ntaps, const T *const *a, long a_off, const T *const *w, long w_off,   \
                        T *const *c, long c_off, int mr, const T *bias, int clamp)                 \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    V acc[KC_MR][NV];                                                                              \
    _Pragma("GCC unroll 8") for (int i = 0; i < KC_MR; i++)                                        \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] = (V){0};                   \
    for (int t = 0; t < ntaps; t++) {                                                              \
        V wv[NV];                                                                                  \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                       \
            wv[v] = *(const V *)(w[t] + w_off + v * LANES);                                        \
        _Pragma("GCC unroll 8") for (int i = 0; i < KC_MR; i++) {                                  \
            const T *ai = a[t * KC_MR + i] + a_off;                                                \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                   \
                acc[i][v] += *(const V *)(ai + v * LANES) * wv[v];                                 \
        }                                                                                          \
    }                                                                                              \
    KC_TILE_EPILOGUE(T, V, VI, KC_MR, NV)                                                                   \
    for (int i = 0; i < mr; i++)                                                                   \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                       \
            *(V *)(c[i] + c_off + v * LANES) = acc[i][v];                                          \
}                                                                                                  \
static inline void GRAD(int npix, int rows, const T *const *a, long lda, long a_off,               \
                        const T *dy, long ldd, T *out, long ldo)                                   \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    V acc[KC_MR][NV];                                                                              \
    _Pragma("GCC unroll 8") for (int r = 0; r < KC_MR; r++)                                        \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[r][v] = (V){0};                   \
    if (rows == KC_MR) {                                                                           \
        for (int p = 0; p < npix; p++) {                                                           \
            V dv[NV];                                                                              \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                   \
                dv[v] = *(const V *)(dy + p * ldd + v * LANES);                                    \
            _Pragma("GCC unroll 8") for (int r = 0; r < KC_MR; r++) {                              \
                const T *ar = a[p * lda + r] + a_off;                                              \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                               \
                    acc[r][v] += *(const V *)(ar + v * LANES) * dv[v];                             \
            }                                                                                      \
        }                                                                                          \
    } else {                                                                                       \
        for (int p = 0; p < npix; p++) {                                                           \
            V dv[NV];                                                                              \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                   \
                dv[v] = *(const V *)(dy + p * ldd + v * LANES);                                    \
            for (int r = 0; r < rows; r++) {                                                       \
                const T *ar = a[p * lda + r] + a_off;                                              \
                _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                               \
                    acc[r][v] += *(const V *)(ar + v * LANES) * dv[v];                             \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    for (int r = 0; r < rows; r++)                                                                 \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {                                     \
            V *o = (V *)(out + r * ldo + v * LANES);                                               \
            *o = *o + acc[r][v];                                                                   \
        }                                                                                          \
}

/* The strided filter-gradient loop for exactly R taps (R <= KC_DW_GRAD_ROWS): dy's two vectors loaded once
 * per pixel serve every tap. A 3x3 kernel's nine taps run in one pass on AVX-512 (18 accumulators of 32
 * registers); with at most KC_MR rows a pass they took a pass of 8 and one of 1, and the single tap ran all
 * 8 rows' FMAs on repeated pointers (one core, Zen 4: 17-20 GFLOP/s on the whole filter gradient). */
#define KC_DEFINE_DW_GRADRUN_R(NAME, T, V, NV, R)                                                      \
static inline void NAME(int npix, const T *const *a, long xs, long a_off, const T *dy, long ldd,    \
                        T *out, long ldo)                                                          \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    V acc[R][NV];                                                                                  \
    const T *ar[R];                                                                                \
    _Pragma("GCC unroll 9") for (int r = 0; r < R; r++) {                                          \
        ar[r] = a[r] + a_off;                                                                      \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[r][v] = (V){0};                   \
    }                                                                                              \
    for (int p = 0; p < npix; p++) {                                                               \
        V dv[NV];                                                                                  \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                       \
            dv[v] = *(const V *)(dy + p * ldd + v * LANES);                                        \
        _Pragma("GCC unroll 9") for (int r = 0; r < R; r++)                                        \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                   \
                acc[r][v] += *(const V *)(ar[r] + p * xs + v * LANES) * dv[v];                     \
    }                                                                                              \
    _Pragma("GCC unroll 9") for (int r = 0; r < R; r++)                                            \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) {                                     \
            V *o = (V *)(out + r * ldo + v * LANES);                                               \
            *o = *o + acc[r][v];                                                                   \
        }                                                                                          \
}
#define KC_DEFINE_DW_GRADRUNS(GRAD, T, V, NV)                                                          \
    KC_DEFINE_DW_GRADRUN_R(GRAD##_r1, T, V, NV, 1) KC_DEFINE_DW_GRADRUN_R(GRAD##_r2, T, V, NV, 2)  \
    KC_DEFINE_DW_GRADRUN_R(GRAD##_r3, T, V, NV, 3) KC_DEFINE_DW_GRADRUN_R(GRAD##_r4, T, V, NV, 4)  \
    KC_DEFINE_DW_GRADRUN_R(GRAD##_r5, T, V, NV, 5) KC_DEFINE_DW_GRADRUN_R(GRAD##_r6, T, V, NV, 6)  \
    KC_DEFINE_DW_GRADRUN_R(GRAD##_r7, T, V, NV, 7) KC_DEFINE_DW_GRADRUN_R(GRAD##_r8, T, V, NV, 8)  \
    KC_DEFINE_DW_GRADRUN_R(GRAD##_r9, T, V, NV, 9)

/* Taps one strided filter-gradient pass takes: two accumulators each (NV = 2) plus dy's two must fit the
 * register file. */
#if KC_VEC_BYTES == 64
#define KC_DW_GRAD_ROWS 9
#else
#define KC_DW_GRAD_ROWS 6
#endif

KC_DEFINE_DW_GRADRUNS(kc_dwgradrun_f32_nv2, float, kc_vf32, 2)
KC_DEFINE_DW_GRADRUNS(kc_dwgradrun_f32_nv1, float, kc_vf32, 1)
KC_DEFINE_DW_GRADRUNS(kc_dwgradrun_f64_nv2, double, kc_vf64, 2)
KC_DEFINE_DW_GRADRUNS(kc_dwgradrun_f64_nv1, double, kc_vf64, 1)

/* The same two loops where every pixel of the tile is inside the image (most of it): pixel i of tap t is
 * a[t] + i*xs, so no pointer table is built. The forward tile is full (KC_MR pixels, stored cs apart). */
#define KC_DEFINE_DW_RUN(NAME, GRAD, T, V, VI, NV)                                                     \
static inline void NAME(int ntaps, const T *const *a, long xs, long a_off, const T *const *w,      \
                        long w_off, T *c, long cs, const T *bias, int clamp)                       \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    V acc[KC_MR][NV];                                                                              \
    _Pragma("GCC unroll 8") for (int i = 0; i < KC_MR; i++)                                        \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++) acc[i][v] = (V){0};                   \
    for (int t = 0; t < ntaps; t++) {                                                              \
        V wv[NV];                                                                                  \
        const T *at = a[t] + a_off;                                                                \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                       \
            wv[v] = *(const V *)(w[t] + w_off + v * LANES);                                        \
        _Pragma("GCC unroll 8") for (int i = 0; i < KC_MR; i++)                                    \
            _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                   \
                acc[i][v] += *(const V *)(at + i * xs + v * LANES) * wv[v];                        \
    }                                                                                              \
    KC_TILE_EPILOGUE(T, V, VI, KC_MR, NV)                                                                   \
    _Pragma("GCC unroll 8") for (int i = 0; i < KC_MR; i++)                                        \
        _Pragma("GCC unroll 2") for (int v = 0; v < NV; v++)                                       \
            *(V *)(c + i * cs + v * LANES) = acc[i][v];                                            \
}                                                                                                  \
static inline void GRAD(int npix, int rows, const T *const *a, long xs, long a_off,                \
                        const T *dy, long ldd, T *out, long ldo)                                   \
{                                                                                                  \
    switch (rows) { /* each count compiled on its own: no FMA on a tap that is not there */         \
    case 1: GRAD##_r1(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 2: GRAD##_r2(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 3: GRAD##_r3(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 4: GRAD##_r4(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 5: GRAD##_r5(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 6: GRAD##_r6(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 7: GRAD##_r7(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    case 8: GRAD##_r8(npix, a, xs, a_off, dy, ldd, out, ldo); break;                               \
    default: GRAD##_r9(npix, a, xs, a_off, dy, ldd, out, ldo); break;                              \
    }                                                                                              \
}

/* One destination pixel, all its C channels: c[k] = sum over t < ntaps of a[t][k] * w[t][k], then bias and
 * relu / relu6 (clamp 1 / 2), as the tiles above. For the pixels at a row's ends, whose taps reach into the
 * padding (a[t]: a row of zeros there): they ran as whole MR-pixel tiles through pointer tables, which cost
 * a 24-pixel row two of its three tiles. Four vectors of channels at a time keep four FMA chains going. */
#define KC_DEFINE_DW_PIXEL(NAME, T, V, VI)                                                             \
static inline void NAME(int ntaps, const T *const *a, const T *const *w, T *c, long C, const T *bias, \
                        int clamp)                                                                 \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T), NV = 4 };                                             \
    long k = 0;                                                                                    \
    for (; k + NV * LANES <= C; k += NV * LANES) {                                                 \
        V acc[1][NV];                                                                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) acc[0][v] = (V){0};                   \
        for (int t = 0; t < ntaps; t++)                                                            \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                                   \
                acc[0][v] += *(const V *)(a[t] + k + v * LANES) * *(const V *)(w[t] + k + v * LANES); \
        const T *bias_k = bias ? bias + k : 0;                                                     \
        {                                                                                          \
            const T *bias = bias_k;                                                                \
            KC_TILE_EPILOGUE(T, V, VI, 1, NV)                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++) *(V *)(c + k + v * LANES) = acc[0][v]; \
    }                                                                                              \
    for (; k + LANES <= C; k += LANES) {                                                           \
        V acc[1][1] = {{(V){0}}};                                                                  \
        for (int t = 0; t < ntaps; t++)                                                            \
            acc[0][0] += *(const V *)(a[t] + k) * *(const V *)(w[t] + k);                          \
        const T *bias_k = bias ? bias + k : 0;                                                     \
        {                                                                                          \
            const T *bias = bias_k;                                                                \
            KC_TILE_EPILOGUE(T, V, VI, 1, 1)                                                       \
        }                                                                                          \
        *(V *)(c + k) = acc[0][0];                                                                 \
    }                                                                                              \
    for (; k < C; k++) {  /* channels that fill no vector: as the tiles' callers do them */        \
        T s = 0;                                                                                   \
        for (int t = 0; t < ntaps; t++) s = s + a[t][k] * w[t][k];                                 \
        if (bias) s = s + bias[k];                                                                 \
        if (clamp && s < 0) s = 0;                                                                 \
        if (clamp == 2 && s > 6) s = 6;                                                            \
        c[k] = s;                                                                                  \
    }                                                                                              \
}

KC_DEFINE_DW_PIXEL(kc_dwpixel_f32, float, kc_vf32, kc_vi32)
KC_DEFINE_DW_PIXEL(kc_dwpixel_f64, double, kc_vf64, kc_vi64)

KC_DEFINE_DW_RUN(kc_dwrun_f32_nv2, kc_dwgradrun_f32_nv2, float, kc_vf32, kc_vi32, 2)
KC_DEFINE_DW_RUN(kc_dwrun_f32_nv1, kc_dwgradrun_f32_nv1, float, kc_vf32, kc_vi32, 1)
KC_DEFINE_DW_RUN(kc_dwrun_f64_nv2, kc_dwgradrun_f64_nv2, double, kc_vf64, kc_vi64, 2)
KC_DEFINE_DW_RUN(kc_dwrun_f64_nv1, kc_dwgradrun_f64_nv1, double, kc_vf64, kc_vi64, 1)

KC_DEFINE_DW(kc_dw_f32_nv2, kc_dwgrad_f32_nv2, float, kc_vf32, kc_vi32, 2)
KC_DEFINE_DW(kc_dw_f32_nv1, kc_dwgrad_f32_nv1, float, kc_vf32, kc_vi32, 1)
KC_DEFINE_DW(kc_dw_f64_nv2, kc_dwgrad_f64_nv2, double, kc_vf64, kc_vi64, 2)
KC_DEFINE_DW(kc_dw_f64_nv1, kc_dwgrad_f64_nv1, double, kc_vf64, kc_vi64, 1)

/* Winograd F(m x m, 3 x 3) tile transforms (winograd.pxi), the whole tile in registers, one vector of
 * channels at a time:
 *
 *   kc_wino_in_<T>_a<A>    V = B^T d B: the A x A input patch d to its A*A transformed values (value
 *                          a*A + b at dst + (a*A + b)*ds). Pixel (i, j) is read for i0 <= i < i1 and
 *                          j0 <= j < j1, at src + (i - i0)*rs + (j - j0)*cs (src: the first pixel inside),
 *                          and is zero elsewhere (an edge tile's padding; no pointer is formed outside)
 *   kc_wino_out_<T>_a<A>   y = A^T M A: the A*A products (M[a][b] at src + (a*A + b)*ss) to the m x m outputs
 *                          (pixel (u, v) at y + u*yrs + v*ycs), only the first rows x cols stored, + bias
 *                          and relu / relu6 (clamp 1 / 2) fused; returns 1 when an output is not finite
 *                          before them (the caller then recomputes the pass directly)
 *   kc_wino_filter_<T>_a<A> U = G g G^T: n 3 x 3 filters (one per lane) to their A*A transformed values
 *   kc_wino_dy_<T>_a<A>    W = A dY A^T: the filter gradient's m x m tile of the output gradient to A*A
 *                          values (the transpose of the output transform; zeros past dY's edge)
 *   kc_wino_in1_<T>_a<A>, kc_wino_out1_<T>_a<A>, kc_wino_dy1_<T>_a<A>, kc_wino_filter1_<T>_a<A>: the same
 *                          along W only (1-D: a 1 x A patch, a 1 x 3 filter)
 *
 * n channels, contiguous at every pixel; the last n % lanes run through the same code on scalars. The
 * matrices are constants here (the values of winograd_matrices.pxi, written from kconv/_winograd.py), so
 * once the loops unroll the compiler drops the zero terms and the factors of +-1 and fuses the rest into
 * FMAs (F(4x4)'s B^T: 22 of 36 terms). The generic form (winograd.pxi, apply_rows: coefficients read at
 * run time, four rows a pass) spent 73 % of an F(4x4) 16 -> 16 forward in its transforms (perf, one core). */
static const double kc_wino_bt4[16] = {-1, 0, 1, 0,  0, 1, 1, 0,  0, -1, 1, 0,  0, -1, 0, 1};
static const double kc_wino_at4[8] = {1, 1, 1, 0,  0, 1, -1, 1};
static const double kc_wino_bt6[36] = {4, 0, -5, 0, 1, 0,  0, -4, -4, 1, 1, 0,  0, 4, -4, -1, 1, 0,
                                       0, -2, -1, 2, 1, 0,  0, 2, -1, -2, 1, 0,  0, 4, 0, -5, 0, 1};
static const double kc_wino_at6[24] = {1, 1, 1, 1, 1, 0,  0, 1, -1, 2, -2, 0,  0, 1, 1, 4, 4, 0,
                                       0, 1, -1, 8, -8, 1};
static const double kc_wino_bt8[64] = {
    -1, 0, 5.25, 0, -5.25, 0, 1, 0,        0, 1, 1, -4.25, -4.25, 1, 1, 0,
    0, -1, 1, 4.25, -4.25, -1, 1, 0,       0, 0.5, 0.25, -2.5, -1.25, 2, 1, 0,
    0, -0.5, 0.25, 2.5, -1.25, -2, 1, 0,   0, 2, 4, -2.5, -5, 0.5, 1, 0,
    0, -2, 4, 2.5, -5, -0.5, 1, 0,         0, -1, 0, 5.25, 0, -5.25, 0, 1};
static const double kc_wino_at8[48] = {
    1, 1, 1, 1, 1, 1, 1, 0,                0, 1, -1, 2, -2, 0.5, -0.5, 0,
    0, 1, 1, 4, 4, 0.25, 0.25, 0,          0, 1, -1, 8, -8, 0.125, -0.125, 0,
    0, 1, 1, 16, 16, 0.0625, 0.0625, 0,    0, 1, -1, 32, -32, 0.03125, -0.03125, 1};

/* G (A x 3) of F(m, 3), for the filter transform: the repr of each float64 of winograd_matrices.pxi. */
static const double kc_wino_g4[12] = {-1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 1.0};
static const double kc_wino_g6[18] = {0.25, 0.0, 0.0, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, 0.16666666666666666, -0.16666666666666666, 0.041666666666666664, 0.08333333333333333, 0.16666666666666666, 0.041666666666666664, -0.08333333333333333, 0.16666666666666666, 0.0, 0.0, 1.0};
static const double kc_wino_g8[24] = {-1.0, 0.0, 0.0, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.011111111111111112, 0.022222222222222223, 0.044444444444444446, 0.011111111111111112, -0.022222222222222223, 0.044444444444444446, 0.7111111111111111, 0.35555555555555557, 0.17777777777777778, 0.7111111111111111, -0.35555555555555557, 0.17777777777777778, 0.0, 0.0, 1.0};

/* 1-D kernels of 4 and 5 taps on the same alphas (kconv/_winograd.py, TILES_1D): A^T of F(m, r) (m x A) and
 * G (A x r); B^T is the alpha's own (the same points). */
static const double kc_wino_at6_m3[18] = {1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 1.0};
static const double kc_wino_g6_r4[24] = {0.25, 0.0, 0.0, 0.0, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, 0.16666666666666666, -0.16666666666666666, 0.16666666666666666, 0.041666666666666664, 0.08333333333333333, 0.16666666666666666, 0.3333333333333333, 0.041666666666666664, -0.08333333333333333, 0.16666666666666666, -0.3333333333333333, 0.0, 0.0, 0.0, 1.0};
static const double kc_wino_at8_m5[40] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 0.25, 0.25, 0.0, 0.0, 1.0, -1.0, 8.0, -8.0, 0.125, -0.125, 0.0, 0.0, 1.0, 1.0, 16.0, 16.0, 0.0625, 0.0625, 1.0};
static const double kc_wino_g8_r4[32] = {-1.0, 0.0, 0.0, 0.0, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.2222222222222222, 0.011111111111111112, 0.022222222222222223, 0.044444444444444446, 0.08888888888888889, 0.011111111111111112, -0.022222222222222223, 0.044444444444444446, -0.08888888888888889, 0.7111111111111111, 0.35555555555555557, 0.17777777777777778, 0.08888888888888889, 0.7111111111111111, -0.35555555555555557, 0.17777777777777778, -0.08888888888888889, 0.0, 0.0, 0.0, 1.0};
static const double kc_wino_at6_m2[12] = {1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 1.0};
static const double kc_wino_g6_r5[30] = {0.25, 0.0, 0.0, 0.0, 0.0, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, -0.16666666666666666, 0.16666666666666666, -0.16666666666666666, 0.16666666666666666, -0.16666666666666666, 0.041666666666666664, 0.08333333333333333, 0.16666666666666666, 0.3333333333333333, 0.6666666666666666, 0.041666666666666664, -0.08333333333333333, 0.16666666666666666, -0.3333333333333333, 0.6666666666666666, 0.0, 0.0, 0.0, 0.0, 1.0};
static const double kc_wino_at8_m4[32] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 0.25, 0.25, 0.0, 0.0, 1.0, -1.0, 8.0, -8.0, 0.125, -0.125, 1.0};
static const double kc_wino_g8_r5[40] = {-1.0, 0.0, 0.0, 0.0, 0.0, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.011111111111111112, 0.022222222222222223, 0.044444444444444446, 0.08888888888888889, 0.17777777777777778, 0.011111111111111112, -0.022222222222222223, 0.044444444444444446, -0.08888888888888889, 0.17777777777777778, 0.7111111111111111, 0.35555555555555557, 0.17777777777777778, 0.08888888888888889, 0.044444444444444446, 0.7111111111111111, -0.35555555555555557, 0.17777777777777778, -0.08888888888888889, 0.044444444444444446, 0.0, 0.0, 0.0, 0.0, 1.0};
/* 1-D only: F(3, 6) and F(2, 7) on alpha 8's points (Kim's sentence CNN widths 6 and 7). */
static const double kc_wino_at8_m3[24] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0, 0.0, 1.0, 1.0, 4.0, 4.0, 0.25, 0.25, 1.0};
static const double kc_wino_g8_r6[48] = {-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.2222222222222222, 0.011111111111111112, 0.022222222222222223, 0.044444444444444446, 0.08888888888888889, 0.17777777777777778, 0.35555555555555557, 0.011111111111111112, -0.022222222222222223, 0.044444444444444446, -0.08888888888888889, 0.17777777777777778, -0.35555555555555557, 0.7111111111111111, 0.35555555555555557, 0.17777777777777778, 0.08888888888888889, 0.044444444444444446, 0.022222222222222223, 0.7111111111111111, -0.35555555555555557, 0.17777777777777778, -0.08888888888888889, 0.044444444444444446, -0.022222222222222223, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0};
static const double kc_wino_at8_m2[16] = {1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.0};
static const double kc_wino_g8_r7[56] = {-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.2222222222222222, -0.2222222222222222, 0.011111111111111112, 0.022222222222222223, 0.044444444444444446, 0.08888888888888889, 0.17777777777777778, 0.35555555555555557, 0.7111111111111111, 0.011111111111111112, -0.022222222222222223, 0.044444444444444446, -0.08888888888888889, 0.17777777777777778, -0.35555555555555557, 0.7111111111111111, 0.7111111111111111, 0.35555555555555557, 0.17777777777777778, 0.08888888888888889, 0.044444444444444446, 0.022222222222222223, 0.011111111111111112, 0.7111111111111111, -0.35555555555555557, 0.17777777777777778, -0.08888888888888889, 0.044444444444444446, -0.022222222222222223, 0.011111111111111112, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0};

/* sum over k < COLS of MAT[ROW*COLS + k] * X(k), MAT a constant table: its zero terms vanish as the loop
 * unrolls (the first nonzero term starts the sum, so no 0 + ... is left either). */
#define KC_WINO_DOT(VT, T, MAT, COLS, ROW, X)                                                      \
    ({  VT s_ = X(0);                                                                              \
        int first_ = 1;                                                                            \
        _Pragma("GCC unroll 8") for (int k_ = 0; k_ < (COLS); k_++) {                              \
            const T m_ = (T)(MAT)[(ROW) * (COLS) + k_];                                            \
            if (m_ != 0) {                                                                         \
                s_ = first_ ? m_ * X(k_) : s_ + m_ * X(k_);                                        \
                first_ = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
        s_; })
/* sum over k < N of MAT[k*COLS + ROW] * X(k): the same down column ROW of MAT, i.e. along MAT's transpose. */
#define KC_WINO_DOT_T(VT, T, MAT, COLS, N, ROW, X)                                                 \
    ({  VT s_ = X(0);                                                                              \
        int first_ = 1;                                                                            \
        _Pragma("GCC unroll 8") for (int k_ = 0; k_ < (N); k_++) {                                 \
            const T m_ = (T)(MAT)[k_ * (COLS) + (ROW)];                                            \
            if (m_ != 0) {                                                                         \
                s_ = first_ ? m_ * X(k_) : s_ + m_ * X(k_);                                        \
                first_ = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
        s_; })
#define KC_WINO_D_COL(k) d[k][j]           /* column j of the patch */
#define KC_WINO_T_ROW(k) t[a][k]           /* row a of B^T d */
#define KC_WINO_D_ROW(k) d[k]              /* the 1-D patch */
#define KC_WINO_M_COL(k) mm[k][b]          /* column b of the products */
#define KC_WINO_R_ROW(k) r[u][k]           /* row u of A^T M */
#define KC_WINO_D_ROW_M(k) mm[k]           /* the 1-D products */

/* The bodies, for VT = a vector (whole vectors of channels) or T itself (the tail); c is the channel. */
#define KC_WINO_IN_BODY(VT, T, A, BT, INSIDE)                                                      \
    {                                                                                              \
        VT d[A][A], t[A][A];                                                                       \
        _Pragma("GCC unroll 8") for (int i = 0; i < A; i++)                                        \
            _Pragma("GCC unroll 8") for (int j = 0; j < A; j++)                                    \
                d[i][j] = INSIDE ? *(const VT *)(src + (i - i0) * rs + (j - j0) * cs + c) : (VT){0}; \
        _Pragma("GCC unroll 8") for (int j = 0; j < A; j++)         /* along H: t = B^T d */       \
            _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)                                    \
                t[a][j] = KC_WINO_DOT(VT, T, BT, A, a, KC_WINO_D_COL);                             \
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)         /* along W: t B */             \
            _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                    \
                *(VT *)(dst + (a * A + b) * ds + c) = KC_WINO_DOT(VT, T, BT, A, b, KC_WINO_T_ROW); \
    }
#define KC_WINO_IN1_BODY(VT, T, A, BT, INSIDE)                                                     \
    {                                                                                              \
        VT d[A];                                                                                   \
        _Pragma("GCC unroll 8") for (int j = 0; j < A; j++)                                        \
            d[j] = INSIDE ? *(const VT *)(src + (j - j0) * cs + c) : (VT){0};                      \
        _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                        \
            *(VT *)(dst + b * ds + c) = KC_WINO_DOT(VT, T, BT, A, b, KC_WINO_D_ROW);               \
    }
/* The fused epilogue of the forward (as KC_TILE_EPILOGUE): + bias (NULL: none), then clamp 1 = relu,
 * 2 = relu6, NaN kept; on vectors by bit masks (C has no vector ?:), on the scalar tail by ?:. */
#define KC_WINO_EPILOGUE_V(VT, VI, T, o)                                                           \
    if (bias) o += *(const VT *)(bias + c);                                                        \
    if (clamp) { /* by bit masks, as KC_TILE_EPILOGUE: C has no vector ?: */                       \
        VI bits_ = (VI)o & ~(o < (T)0);                                                            \
        if (clamp == 2) {                                                                          \
            VT six_ = (VT){0} + (T)6;                                                              \
            VI over_ = o > six_;                                                                   \
            bits_ = (bits_ & ~over_) | ((VI)six_ & over_);                                         \
        }                                                                                          \
        o = (VT)bits_;                                                                             \
    }
#define KC_WINO_EPILOGUE_S(VT, VI, T, o)                                                           \
    if (bias) o += bias[c];                                                                        \
    if (clamp) {                                                                                   \
        o = o < 0 ? 0 : o;                                                                         \
        if (clamp == 2 && o > 6) o = 6;                                                            \
    }
/* bad accumulates out * 0, which is NaN exactly where an output is NaN or infinite (before the bias). */
#define KC_WINO_OUT_BODY(VT, VI, T, A, M, AT, EPI)                                                 \
    {                                                                                              \
        VT mm[A][A], r[M][A];                                                                      \
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)                                        \
            _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                    \
                mm[a][b] = *(const VT *)(src + (a * A + b) * ss + c);                              \
        _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)         /* along H: r = A^T M */       \
            _Pragma("GCC unroll 8") for (int u = 0; u < M; u++)                                    \
                r[u][b] = KC_WINO_DOT(VT, T, AT, A, u, KC_WINO_M_COL);                             \
        _Pragma("GCC unroll 8") for (int u = 0; u < M; u++)         /* along W: r A */             \
            _Pragma("GCC unroll 8") for (int v = 0; v < M; v++) {                                  \
                VT o = KC_WINO_DOT(VT, T, AT, A, v, KC_WINO_R_ROW);                                \
                bad += o * (T)0;                                                                   \
                EPI(VT, VI, T, o)                                                                  \
                if (u < rows && v < cols) *(VT *)(y + u * yrs + v * ycs + c) = o;                  \
            }                                                                                      \
    }
#define KC_WINO_OUT1_BODY(VT, VI, T, A, M, AT, EPI)                                                \
    {                                                                                              \
        VT mm[A];                                                                                  \
        _Pragma("GCC unroll 8") for (int b = 0; b < A; b++) mm[b] = *(const VT *)(src + b * ss + c); \
        _Pragma("GCC unroll 8") for (int v = 0; v < M; v++) {                                      \
            VT o = KC_WINO_DOT(VT, T, AT, A, v, KC_WINO_D_ROW_M);                                  \
            bad += o * (T)0;                                                                       \
            EPI(VT, VI, T, o)                                                                      \
            if (v < cols) *(VT *)(y + v * ycs + c) = o;                                            \
        }                                                                                          \
    }
/* The filter gradient's output-gradient transform, W = A dY A^T (A = (A^T)^T, A x M): the M x M tile of dY
 * (pixel (u, v) at src + u*rs + v*cs for u < rows, v < cols; zero past the edge of dY) to A*A values. */
#define KC_WINO_DY_BODY(VT, T, A, M, AT)                                                           \
    {                                                                                              \
        VT d[M][M], t[A][M];                                                                       \
        _Pragma("GCC unroll 8") for (int i = 0; i < M; i++)                                        \
            _Pragma("GCC unroll 8") for (int j = 0; j < M; j++)                                    \
                d[i][j] = (i < rows && j < cols) ? *(const VT *)(src + i * rs + j * cs + c) : (VT){0}; \
        _Pragma("GCC unroll 8") for (int j = 0; j < M; j++)         /* along H: t = A dY */        \
            _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)                                    \
                t[a][j] = KC_WINO_DOT_T(VT, T, AT, A, M, a, KC_WINO_D_COL);                        \
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)         /* along W: t A^T */           \
            _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                    \
                *(VT *)(dst + (a * A + b) * ds + c) = KC_WINO_DOT_T(VT, T, AT, A, M, b, KC_WINO_T_ROW); \
    }
#define KC_WINO_DY1_BODY(VT, T, A, M, AT)                                                          \
    {                                                                                              \
        VT d[M];                                                                                   \
        _Pragma("GCC unroll 8") for (int j = 0; j < M; j++)                                        \
            d[j] = j < cols ? *(const VT *)(src + j * cs + c) : (VT){0};                           \
        _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                        \
            *(VT *)(dst + b * ds + c) = KC_WINO_DOT_T(VT, T, AT, A, M, b, KC_WINO_D_ROW);          \
    }
/* The filter transform, U = G g G^T: the R x R taps of n filters (tap (i, j) at src + (i*R + j)*ts) to A*A
 * values (value a*A + b at dst + (a*A + b)*ds). */
#define KC_WINO_FILTER_BODY(VT, T, A, R, G)                                                        \
    {                                                                                              \
        VT d[R][R], t[A][R];                                                                       \
        _Pragma("GCC unroll 5") for (int i = 0; i < R; i++)                                        \
            _Pragma("GCC unroll 5") for (int j = 0; j < R; j++)                                    \
                d[i][j] = *(const VT *)(src + (i * R + j) * ts + c);                               \
        _Pragma("GCC unroll 5") for (int j = 0; j < R; j++)         /* along H: t = G g */         \
            _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)                                    \
                t[a][j] = KC_WINO_DOT(VT, T, G, R, a, KC_WINO_D_COL);                              \
        _Pragma("GCC unroll 8") for (int a = 0; a < A; a++)         /* along W: t G^T */           \
            _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                    \
                *(VT *)(dst + (a * A + b) * ds + c) = KC_WINO_DOT(VT, T, G, R, b, KC_WINO_T_ROW);  \
    }
#define KC_WINO_FILTER1_BODY(VT, T, A, R, G)                                                       \
    {                                                                                              \
        VT d[R];                                                                                   \
        _Pragma("GCC unroll 5") for (int j = 0; j < R; j++) d[j] = *(const VT *)(src + j * ts + c); \
        _Pragma("GCC unroll 8") for (int b = 0; b < A; b++)                                        \
            *(VT *)(dst + b * ds + c) = KC_WINO_DOT(VT, T, G, R, b, KC_WINO_D_ROW);                \
    }
/* Edge tiles: patch pixels outside rows i0..i1, columns j0..j1 are the padding's zeros, never read. */
#define KC_WINO_INSIDE2 (i >= i0 && i < i1 && j >= j0 && j < j1)
#define KC_WINO_INSIDE1 (j >= j0 && j < j1)

/* One macro per transform; SUF names the element type, alpha and (where r != 3) m. */
#define KC_DEFINE_WINO_IN(SUF, T, V, A, BT)                                                        \
static inline void kc_wino_in_##SUF(const T *src, long rs, long cs, int i0, int i1, int j0, int j1,\
                                   T *dst, long ds, long n)                                        \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    long c = 0;                                                                                    \
    if (i0 == 0 && i1 == A && j0 == 0 && j1 == A) {                                                \
        for (; c + LANES <= n; c += LANES) KC_WINO_IN_BODY(V, T, A, BT, 1)                         \
        for (; c < n; c++) KC_WINO_IN_BODY(T, T, A, BT, 1)                                         \
    } else {                                                                                       \
        for (; c + LANES <= n; c += LANES) KC_WINO_IN_BODY(V, T, A, BT, KC_WINO_INSIDE2)           \
        for (; c < n; c++) KC_WINO_IN_BODY(T, T, A, BT, KC_WINO_INSIDE2)                           \
    }                                                                                              \
}                                                                                                  \
static inline void kc_wino_in1_##SUF(const T *src, long cs, int j0, int j1, T *dst, long ds, long n)\
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    long c = 0;                                                                                    \
    if (j0 == 0 && j1 == A) {                                                                      \
        for (; c + LANES <= n; c += LANES) KC_WINO_IN1_BODY(V, T, A, BT, 1)                        \
        for (; c < n; c++) KC_WINO_IN1_BODY(T, T, A, BT, 1)                                        \
    } else {                                                                                       \
        for (; c + LANES <= n; c += LANES) KC_WINO_IN1_BODY(V, T, A, BT, KC_WINO_INSIDE1)          \
        for (; c < n; c++) KC_WINO_IN1_BODY(T, T, A, BT, KC_WINO_INSIDE1)                          \
    }                                                                                              \
}

#define KC_DEFINE_WINO_OUT(SUF, T, V, VI, A, M, AT)                                                \
static inline int kc_wino_out_##SUF(const T *src, long ss, T *y, long yrs, long ycs, int rows,     \
                                    int cols, long n, const T *bias, int clamp)                    \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    V bad = (V){0};                                                                                \
    T bad1 = 0;                                                                                    \
    long c = 0;                                                                                    \
    for (; c + LANES <= n; c += LANES) KC_WINO_OUT_BODY(V, VI, T, A, M, AT, KC_WINO_EPILOGUE_V)    \
    for (; c < n; c++) {                                                                           \
        T bad = 0;                                                                                 \
        KC_WINO_OUT_BODY(T, int, T, A, M, AT, KC_WINO_EPILOGUE_S)                                  \
        bad1 += bad;                                                                               \
    }                                                                                              \
    for (int l = 0; l < LANES; l++) bad1 += bad[l];                                                \
    return bad1 != bad1;                                                                           \
}

#define KC_DEFINE_WINO_OUT1(SUF, T, V, VI, A, M, AT)                                               \
static inline int kc_wino_out1_##SUF(const T *src, long ss, T *y, long ycs, int cols, long n,      \
                                     const T *bias, int clamp)                                     \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    V bad = (V){0};                                                                                \
    T bad1 = 0;                                                                                    \
    long c = 0;                                                                                    \
    for (; c + LANES <= n; c += LANES) KC_WINO_OUT1_BODY(V, VI, T, A, M, AT, KC_WINO_EPILOGUE_V)   \
    for (; c < n; c++) {                                                                           \
        T bad = 0;                                                                                 \
        KC_WINO_OUT1_BODY(T, int, T, A, M, AT, KC_WINO_EPILOGUE_S)                                 \
        bad1 += bad;                                                                               \
    }                                                                                              \
    for (int l = 0; l < LANES; l++) bad1 += bad[l];                                                \
    return bad1 != bad1;                                                                           \
}

#define KC_DEFINE_WINO_DY(SUF, T, V, A, M, AT)                                                     \
static inline void kc_wino_dy_##SUF(const T *src, long rs, long cs, int rows, int cols, T *dst, long ds,\
                                    long n)                                                        \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    long c = 0;                                                                                    \
    for (; c + LANES <= n; c += LANES) KC_WINO_DY_BODY(V, T, A, M, AT)                             \
    for (; c < n; c++) KC_WINO_DY_BODY(T, T, A, M, AT)                                             \
}

#define KC_DEFINE_WINO_DY1(SUF, T, V, A, M, AT)                                                    \
static inline void kc_wino_dy1_##SUF(const T *src, long cs, int cols, T *dst, long ds, long n)     \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    long c = 0;                                                                                    \
    for (; c + LANES <= n; c += LANES) KC_WINO_DY1_BODY(V, T, A, M, AT)                            \
    for (; c < n; c++) KC_WINO_DY1_BODY(T, T, A, M, AT)                                            \
}

#define KC_DEFINE_WINO_FILTER(SUF, T, V, A, R, G)                                                  \
static inline void kc_wino_filter_##SUF(const T *src, long ts, T *dst, long ds, long n)            \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    long c = 0;                                                                                    \
    for (; c + LANES <= n; c += LANES) KC_WINO_FILTER_BODY(V, T, A, R, G)                          \
    for (; c < n; c++) KC_WINO_FILTER_BODY(T, T, A, R, G)                                          \
}

#define KC_DEFINE_WINO_FILTER1(SUF, T, V, A, R, G)                                                 \
static inline void kc_wino_filter1_##SUF(const T *src, long ts, T *dst, long ds, long n)           \
{                                                                                                  \
    enum { LANES = KC_VEC_BYTES / sizeof(T) };                                                     \
    long c = 0;                                                                                    \
    for (; c + LANES <= n; c += LANES) KC_WINO_FILTER1_BODY(V, T, A, R, G)                         \
    for (; c < n; c++) KC_WINO_FILTER1_BODY(T, T, A, R, G)                                         \
}

/* Every tile F(m, r), for one element type (P: its suffix): m x m (2-D) and along W (1-D). B^T is the
 * alpha's; r = 4, 6 and 7 exist in 1-D only; r = 5 in both (F(2x2, 5x5), F(4x4, 5x5); F(2, 5), F(4, 5)). */
#define KC_DEFINE_WINO_TILE1(SUF, T, V, VI, A, M, R, AT, G)                                        \
    KC_DEFINE_WINO_OUT1(SUF, T, V, VI, A, M, AT)                                                   \
    KC_DEFINE_WINO_DY1(SUF, T, V, A, M, AT)                                                        \
    KC_DEFINE_WINO_FILTER1(SUF, T, V, A, R, G)
#define KC_DEFINE_WINO_TILE(SUF, T, V, VI, A, M, R, AT, G)                                         \
    KC_DEFINE_WINO_OUT(SUF, T, V, VI, A, M, AT)                                                    \
    KC_DEFINE_WINO_DY(SUF, T, V, A, M, AT)                                                         \
    KC_DEFINE_WINO_FILTER(SUF, T, V, A, R, G)                                                      \
    KC_DEFINE_WINO_TILE1(SUF, T, V, VI, A, M, R, AT, G)
#define KC_DEFINE_WINO_ALL(P, T, V, VI)                                                            \
    KC_DEFINE_WINO_IN(P##_a4, T, V, 4, kc_wino_bt4)                                                \
    KC_DEFINE_WINO_IN(P##_a6, T, V, 6, kc_wino_bt6)                                                \
    KC_DEFINE_WINO_IN(P##_a8, T, V, 8, kc_wino_bt8)                                                \
    KC_DEFINE_WINO_TILE(P##_a4, T, V, VI, 4, 2, 3, kc_wino_at4, kc_wino_g4)                        \
    KC_DEFINE_WINO_TILE(P##_a6, T, V, VI, 6, 4, 3, kc_wino_at6, kc_wino_g6)                        \
    KC_DEFINE_WINO_TILE(P##_a8, T, V, VI, 8, 6, 3, kc_wino_at8, kc_wino_g8)                        \
    KC_DEFINE_WINO_TILE1(P##_a6_m3, T, V, VI, 6, 3, 4, kc_wino_at6_m3, kc_wino_g6_r4)              \
    KC_DEFINE_WINO_TILE1(P##_a8_m5, T, V, VI, 8, 5, 4, kc_wino_at8_m5, kc_wino_g8_r4)              \
    KC_DEFINE_WINO_TILE(P##_a6_m2, T, V, VI, 6, 2, 5, kc_wino_at6_m2, kc_wino_g6_r5)               \
    KC_DEFINE_WINO_TILE(P##_a8_m4, T, V, VI, 8, 4, 5, kc_wino_at8_m4, kc_wino_g8_r5)              \
    KC_DEFINE_WINO_TILE1(P##_a8_m3, T, V, VI, 8, 3, 6, kc_wino_at8_m3, kc_wino_g8_r6)              \
    KC_DEFINE_WINO_TILE1(P##_a8_m2, T, V, VI, 8, 2, 7, kc_wino_at8_m2, kc_wino_g8_r7)

KC_DEFINE_WINO_ALL(f32, float, kc_vf32, kc_vi32)
KC_DEFINE_WINO_ALL(f64, double, kc_vf64, kc_vi64)

/* The FMA roof at this file's vector width: independent multiply-add chains, no memory traffic.
 * 10 chains x 1 vector stay in registers on every instruction set above. Returns a value the caller
 * sums so the work is not optimised away. */
static inline float kc_fma_chains(long iters)
{
    enum { CHAINS = 10 };
    kc_vf32 acc[CHAINS], m = (kc_vf32){0} + 1.0000001f, s = (kc_vf32){0} + 1e-7f;
    _Pragma("GCC unroll 10") for (int i = 0; i < CHAINS; i++) acc[i] = m * (float)i;
    for (long it = 0; it < iters; it++)
        _Pragma("GCC unroll 10") for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * m + s;
    float sink = 0;
    for (int i = 0; i < CHAINS; i++) sink += acc[i][0];
    return sink;
}
#define KC_FMA_CHAIN_FLOPS (10 * 2 * (KC_VEC_BYTES / 4))

/* CPU features, for choosing the build at import (never run an instruction the CPU lacks). */
static inline int kc_cpu_supports_avx2(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}
static inline int kc_cpu_supports_avx512(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#else
    return 0;
#endif
}

/* OpenMP as built: kconv still builds and runs (on one thread) without it. */
#ifdef _OPENMP
#include <omp.h>
static inline int kc_openmp_enabled(void) { return 1; }
static inline int kc_omp_max_threads(void) { return omp_get_max_threads(); }
#else
static inline int kc_openmp_enabled(void) { return 0; }
static inline int kc_omp_max_threads(void) { return 1; }
#endif

/* Threads held by kernel calls running now, in every thread of the process (numpy API and TensorFlow op
 * alike). Each call holds its whole team (at least its caller's own thread); when calls together hold more
 * than the CPUs, their helpers stand down between tasks (kc_next_task, below). */
#include <time.h>
static long kc_busy_threads = 0;
static inline int kc_claim_threads(int want)
{
    if (want < 1) want = 1;
    __atomic_add_fetch(&kc_busy_threads, want, __ATOMIC_ACQ_REL);
    return want;
}
static inline long kc_threads_held(void) { return __atomic_load_n(&kc_busy_threads, __ATOMIC_RELAXED); }

/* The next task of a call's task loop (tasks 0 .. total-1, shared counter *next), for thread `tid` of a
 * team of `team`. Calls that overlap each hold their whole team, so together they hold more threads than
 * there are cpus; then each call keeps its share of the cpus (kc_share: team x cpus / threads held, at least
 * its caller) and its other helpers stand down between tasks until the others finish (they rejoin) or the
 * call has handed out every task. On 2 cpus two overlapping calls thus run on their callers, one core each;
 * on 16 each keeps 8 threads. Standing down to the callers alone had made overlapping pairs slower than the
 * same calls one after the other on a 16-CPU Xeon (benchmarks/gradient_pair.py, 3x3 8x28x28x128: 10.7 ms
 * at once against 6.7 apart; 64x14x14x64: 9.0 against 3.4); with shares the pairs take 5.9 and 3.0 ms.
 * Which thread runs a task never changes its result.
 * A helper that stands down sleeps on a futex (Linux) until threads are released or a loop runs out:
 * polling every 20 us cost the overlapping pair 30 % (the wake-ups crowded the callers onto one CPU). */
static long kc_stand_downs = 0;
static int kc_release_gen = 0;      /* bumped when a call releases threads or a caller runs out of tasks */
static int kc_sleepers = 0;
#ifdef __linux__
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
static inline void kc_wake_helpers(void)
{
    __atomic_add_fetch(&kc_release_gen, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&kc_sleepers, __ATOMIC_SEQ_CST) > 0)
        syscall(SYS_futex, &kc_release_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
static inline void kc_sleep_helper(int gen)
{
    struct timespec limit = {0, 2000000};     /* a safety net: every change that matters wakes it */
    __atomic_add_fetch(&kc_sleepers, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &kc_release_gen, FUTEX_WAIT_PRIVATE, gen, &limit, NULL, 0);
    __atomic_sub_fetch(&kc_sleepers, 1, __ATOMIC_SEQ_CST);
}
#else
static inline void kc_wake_helpers(void) { __atomic_add_fetch(&kc_release_gen, 1, __ATOMIC_SEQ_CST); }
static inline void kc_sleep_helper(int gen)
{
    (void)gen;
#if defined(__unix__) || defined(__APPLE__)
    struct timespec t = {0, 200000};
    nanosleep(&t, NULL);
#endif
}
#endif
static inline int kc_share_of(int team, int cpus, long held)
{
    long share;
    if (held <= cpus || held <= team)   /* the CPUs suffice, or this call runs alone */
        return team;
    share = (long)team * cpus / held;
    return share < 1 ? 1 : (int)share;
}
static inline int kc_share(int team, int cpus)
{
    return kc_share_of(team, cpus, __atomic_load_n(&kc_busy_threads, __ATOMIC_SEQ_CST));
}
static inline long kc_next_task(long *next, long total, long tid, int team, int cpus)
{
    long task;
    int gen;
    if (tid > 0 && tid >= kc_share(team, cpus)) {
        __atomic_add_fetch(&kc_stand_downs, 1, __ATOMIC_RELAXED);
        for (;;) {
            gen = __atomic_load_n(&kc_release_gen, __ATOMIC_SEQ_CST);
            if (tid < kc_share(team, cpus) || __atomic_load_n(next, __ATOMIC_SEQ_CST) >= total)
                break;
            kc_sleep_helper(gen);
        }
    }
    task = __atomic_fetch_add(next, 1, __ATOMIC_SEQ_CST);
    /* Whoever takes the last task wakes the helpers standing down (nothing is left for them): they get up
     * while that task runs, not after it, when the caller would wait at the loop's end for their wake-up. */
    if (task == total - 1 && __atomic_load_n(&kc_sleepers, __ATOMIC_SEQ_CST) > 0)
        kc_wake_helpers();
    return task;
}
static inline void kc_release_threads(int n)
{
    __atomic_sub_fetch(&kc_busy_threads, n, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&kc_sleepers, __ATOMIC_SEQ_CST) > 0)
        kc_wake_helpers();          /* helpers of calls still running may rejoin */
}
static inline long kc_stand_down_count(void) { return __atomic_load_n(&kc_stand_downs, __ATOMIC_RELAXED); }

/* A barrier between the phases of one parallel region (a team of `team` threads), for kernels whose
 * phases depend on each other (the Winograd filter gradient: transforms, then products, chunk by chunk).
 * OpenMP's own barrier under OMP_WAIT_POLICY=PASSIVE sleeps at once, and on a VM whose idle CPUs halt a
 * sleeper takes 30-50 us to wake: four phases in one call paid ~0.2 ms (a 2-thread C loop, 2-CPU Zen 4
 * KVM guest). So a thread that arrives early spins for up to KC_BARRIER_SPINS pauses (~20-40 us), then
 * sleeps on a futex; one whose call stands down (its CPU belongs to another call's caller) sleeps at once.
 *
 * A helper may also leave the team for the rest of the call (kc_barrier_leave; kc_should_leave says when):
 * it then counts as arrived at every later phase end. A helper that stood down inside a phase instead (as
 * kc_next_task does) held up every phase end until it woke and arrived: with a layer's input and filter
 * gradients at once on 2 CPUs, the filter gradient paid a wake-up or two per phase, and the pair took 1.8x
 * the two passes one after the other (benchmarks/gradient_pair.py, 64x14x14x64, 2-CPU Zen 5). */
#define KC_BARRIER_SPINS 2000
typedef struct { int done; int gen; int left; } kc_barrier;   /* done: arrivals this phase + departures */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
static inline void kc_pause(void) { _mm_pause(); }
#else
static inline void kc_pause(void) { }
#endif
static inline void kc_barrier_init(kc_barrier *b) { b->done = b->gen = b->left = 0; }
/* The last of the team to arrive or leave: every other member waits at the barrier (or has left), so no one
 * touches done until gen moves; the next phase starts with the departures already counted. */
static inline void kc_barrier_release(kc_barrier *b)
{
    __atomic_store_n(&b->done, __atomic_load_n(&b->left, __ATOMIC_ACQUIRE), __ATOMIC_RELAXED);
    __atomic_add_fetch(&b->gen, 1, __ATOMIC_RELEASE);
#ifdef __linux__
    syscall(SYS_futex, &b->gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
}
static inline void kc_barrier_wait(kc_barrier *b, int team, int may_spin)
{
    int i, gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (team <= 1)
        return;
    if (__atomic_add_fetch(&b->done, 1, __ATOMIC_ACQ_REL) == team) {
        kc_barrier_release(b);
        return;
    }
    for (i = 0; may_spin && i < KC_BARRIER_SPINS; i++) {
        if (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) != gen)
            return;
        kc_pause();
    }
    while (__atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen) {
#ifdef __linux__
        struct timespec limit = {0, 2000000};     /* a safety net: the last arrival wakes every sleeper */
        syscall(SYS_futex, &b->gen, FUTEX_WAIT_PRIVATE, gen, &limit, NULL, 0);
#elif defined(__unix__) || defined(__APPLE__)
        struct timespec t = {0, 50000};
        nanosleep(&t, NULL);
#endif
    }
}
/* Leaves the team for good (between phases: after the last phase end the thread arrived at). */
static inline void kc_barrier_leave(kc_barrier *b, int team)
{
    if (team <= 1)
        return;
    __atomic_add_fetch(&kc_stand_downs, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&b->left, 1, __ATOMIC_ACQ_REL);
    if (__atomic_add_fetch(&b->done, 1, __ATOMIC_ACQ_REL) == team)
        kc_barrier_release(b);
}
/* The end of a phase as its tasks' end, not its threads': each task's thread counts it done
 * (kc_phase_task_done on a counter set to the phase's task count) and a thread that finds no task left waits
 * until the count reaches zero (kc_phase_wait: up to KC_BARRIER_SPINS pauses, then a futex). A helper that has
 * not yet woken, or stands aside for an overlapping call, holds no one up: kc_barrier made the caller of a
 * Winograd input gradient, its filters transformed in the tiles' region, wait for the helper to arrive while
 * the layer's filter gradient held both CPUs (the pair of them 2.08 -> 2.42 ms, 64x28x28x32 3x3, 2-CPU Zen 5). */
static inline void kc_phase_task_done(int *left)
{
    if (__atomic_sub_fetch(left, 1, __ATOMIC_ACQ_REL) == 0) {
#ifdef __linux__
        syscall(SYS_futex, left, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#endif
    }
}
static inline void kc_phase_wait(int *left, int may_spin)
{
    int i, v;
    for (i = 0; may_spin && i < KC_BARRIER_SPINS; i++) {
        if (__atomic_load_n(left, __ATOMIC_ACQUIRE) == 0)
            return;
        kc_pause();
    }
    while ((v = __atomic_load_n(left, __ATOMIC_ACQUIRE)) != 0) {
#ifdef __linux__
        struct timespec limit = {0, 2000000};     /* a safety net: the last task wakes every waiter */
        syscall(SYS_futex, left, FUTEX_WAIT_PRIVATE, v, &limit, NULL, 0);
#elif defined(__unix__) || defined(__APPLE__)
        struct timespec t = {0, 50000};
        nanosleep(&t, NULL);
#endif
    }
}
/* Whether helper `tid` of a barrier kernel should leave: overlapping calls hold more threads than the CPUs
 * and its call's share (kc_share) leaves it out. */
static inline int kc_should_leave(long tid, int team, int cpus) { return tid > 0 && tid >= kc_share(team, cpus); }
/* The next task from a shared counter, for a thread that does not stand down (see kc_should_leave). */
static inline long kc_take_task(long *next) { return __atomic_fetch_add(next, 1, __ATOMIC_SEQ_CST); }
/* Threads in the current parallel region (1 outside one, or without OpenMP). */
#ifdef _OPENMP
static inline int kc_region_threads(void) { return omp_get_num_threads(); }
#else
static inline int kc_region_threads(void) { return 1; }
#endif

/* The lock of kconv's kept scratch buffers (scratch.pxi): held for a few instructions, so a spin. */
static inline void kc_lock(int *lock) { while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)) { } }
static inline void kc_unlock(int *lock) { __atomic_store_n(lock, 0, __ATOMIC_RELEASE); }

/* Calls of each pass (forward, input gradient, filter gradient) since import: lets tests see which passes
 * a TensorFlow graph really ran (a pruned gradient never calls its kernel). */
static long kc_pass_calls[3] = {0, 0, 0};
static inline void kc_count_pass(int pass) { __atomic_add_fetch(&kc_pass_calls[pass], 1, __ATOMIC_RELAXED); }
static inline long kc_pass_count(int pass) { return __atomic_load_n(&kc_pass_calls[pass], __ATOMIC_RELAXED); }

#endif

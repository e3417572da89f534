/* The C interface between kconv's compiled kernels (Cython) and its TensorFlow op library (C++ shim).
 *
 * `import kconv` hands the op library a pointer to one kc_api table, filled by the kernel build that runs
 * on this CPU (kconv._core_<isa>.api_address()). The shim only unpacks tensors and calls these functions:
 * geometry, algorithm choice, threads and the arithmetic all live on the Cython side, shared with the numpy
 * API. Every function may be called without the GIL, from any thread, at the same time as any other.
 *
 * A plan holds what depends only on the shapes and arguments (padding, output size, algorithm, tile, taps,
 * split of the filter gradient); a call on a plan only binds pointers and runs. Plans are immutable after
 * kc_api.plan_create, so one plan may run on several threads at once.
 *
 * Layout: NHWC input (N, H, W, C), filters (kh, kw, C/groups, K) as in TensorFlow, NHWC output. A 1-D
 * convolution (N, W, C) is the 2-D one with H = kh = 1, stride_h = dilation_h = 1 and no padding along H.
 * Errors: functions return 0 on success; otherwise nonzero, with a one-line message in err (errlen bytes,
 * always NUL-terminated). KC_ERR_ARGUMENT is the caller's mistake (bad shapes or arguments),
 * KC_ERR_MEMORY an allocation that failed.
 */
#ifndef KCONV_API_H
#define KCONV_API_H

#ifdef __cplusplus
extern "C" {
#endif

#define KC_API_VERSION 3

enum kc_status { KC_OK = 0, KC_ERR_ARGUMENT = 1, KC_ERR_MEMORY = 2 };
enum kc_dtype { KC_FLOAT32 = 4, KC_FLOAT64 = 8 };
enum kc_padding { KC_PAD_VALID = 0, KC_PAD_SAME = 1, KC_PAD_CAUSAL = 2, KC_PAD_EXPLICIT = 3 };
/* algorithm: KC_ALGO_AUTO, KC_ALGO_DIRECT, KC_ALGO_WINOGRAD (tile chosen), or 2 / 4 / 6 for F(m, 3). */
enum kc_algorithm { KC_ALGO_AUTO = 0, KC_ALGO_DIRECT = 1, KC_ALGO_WINOGRAD = 3 };

/* Activations fused into the forward's output store, y = act(conv + bias), with Keras's defaults:
 * leaky_relu slope 0.2, elu alpha 1, selu's constants, gelu exact (erf). The derivative of every one but
 * silu and gelu is computed from y; those two also need z = conv + bias, which forward then writes. */
enum kc_activation {
    KC_ACT_LINEAR = 0, KC_ACT_RELU, KC_ACT_RELU6, KC_ACT_LEAKY_RELU, KC_ACT_ELU, KC_ACT_SELU,
    KC_ACT_SIGMOID, KC_ACT_TANH, KC_ACT_SILU, KC_ACT_GELU, KC_ACT_COUNT
};

typedef struct {
    long N, H, W, C;                 /* input, NHWC (1-D: H = 1) */
    long kh, kw, cg, K;              /* filters (kh, kw, C/groups, K); groups = C / cg */
    long stride_h, stride_w;
    long dilation_h, dilation_w;
    int padding;                     /* enum kc_padding; CAUSAL pads the W axis on the left only */
    long pad_top, pad_bottom, pad_left, pad_right;   /* KC_PAD_EXPLICIT only */
    int algorithm;                   /* enum kc_algorithm, or 2, 4, 6 */
    int dtype;                       /* enum kc_dtype */
    int activation;                  /* enum kc_activation (forward's or backprop_input's epilogue) */
    int threads;                     /* 0: kconv's setting (kconv.set_num_threads / OMP_NUM_THREADS) */
} kc_conv_desc;

typedef struct kc_plan kc_plan;

typedef struct {
    int version;                     /* KC_API_VERSION */
    const char *isa;                 /* "avx512", "avx2" or "generic" */

    /* The output's (Ho, Wo) for desc, after checking it (shapes, arguments, kernel within the padded input). */
    int (*output_size)(const kc_conv_desc *desc, long *ho, long *wo, char *err, int errlen);

    kc_plan *(*plan_create)(const kc_conv_desc *desc, char *err, int errlen);   /* NULL on error */
    void (*plan_destroy)(kc_plan *plan);

    /* y (N, Ho, Wo, K) = act(conv(x, w) + bias). bias: K values or NULL. z: N*Ho*Wo*K values, written
     * (conv + bias, before the activation) when the activation is silu or gelu; may be NULL otherwise. */
    int (*forward)(const kc_plan *plan, const void *x, const void *w, const void *bias, void *y, void *z,
                   char *err, int errlen);
    /* dx (N, H, W, C) = act(conv^T(dz) + bias), dz (N, Ho, Wo, K), with the plan's activation. A convolution's
     * input gradient: a plan made with KC_ACT_LINEAR, bias NULL (dz: the gradient at the convolution's output,
     * after activation_grad). A transposed convolution: its bias (C values, or NULL) and activation fused
     * as in forward, z (N*H*W*C values) written for silu and gelu. */
    int (*backprop_input)(const kc_plan *plan, const void *w, const void *dz, const void *bias, void *dx,
                          void *z, char *err, int errlen);
    /* dw (kh, kw, C/groups, K) from x and dz. */
    int (*backprop_filter)(const kc_plan *plan, const void *x, const void *dz, void *dw, char *err, int errlen);

    /* dz = dy * act'(.) and db = sum of dz over the rows, in one pass over dy: rows x K values, dtype as
     * given. y is the forward's output, z its pre-activation (read only for silu and gelu). db may be NULL;
     * dz may be NULL for KC_ACT_LINEAR (where dz would be dy): then only db, the column sums of dy. */
    int (*activation_grad)(int dtype, int activation, long rows, long K, const void *dy, const void *y,
                           const void *z, void *dz, void *db, int threads, char *err, int errlen);

    /* Batch normalization over the rows of x (rows, C): y = gamma * (x - mean) * inv + beta, with
     * inv = 1 / sqrt(variance + epsilon). training: mean and variance (biased) are the batch's, written to
     * mean / var; else mean_in / var_in (the moving statistics), copied there. inv: C values, written. */
    int (*batch_norm)(int dtype, long rows, long C, const void *x, const void *gamma, const void *beta,
                      const void *mean_in, const void *var_in, double epsilon, int training, void *y,
                      void *mean, void *var, void *inv, int threads, char *err, int errlen);
    /* Its gradient, given batch_norm's mean and inv: dx (rows, C), dgamma, dbeta (C values). training: the
     * statistics were the batch's (their gradient flows into dx), else constants. */
    int (*batch_norm_grad)(int dtype, long rows, long C, const void *dy, const void *x, const void *mean,
                           const void *inv, const void *gamma, int training, void *dx, void *dgamma,
                           void *dbeta, int threads, char *err, int errlen);
} kc_api;

#ifdef __cplusplus
}
#endif
#endif

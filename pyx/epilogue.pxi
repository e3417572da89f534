# Bias and activation, fused into the forward pass's output store, and their gradient in one pass over dy.
#
# The forward kernels call apply_epilogue on each block of output rows right after writing it, while the
# block is still in cache: y = act(conv + bias), with z = conv + bias kept where the derivative needs it
# (silu, gelu). Every other derivative is computed from y, as TensorFlow's own Relu/Sigmoid/Tanh grads do.
# Constants are Keras's defaults: leaky_relu slope 0.2, elu alpha 1, selu's alpha and scale, exact gelu.
from libc.math cimport exp, erf, tanh, sqrt

cdef enum:
    ACT_LINEAR = 0
    ACT_RELU = 1
    ACT_RELU6 = 2
    ACT_LEAKY_RELU = 3
    ACT_ELU = 4
    ACT_SELU = 5
    ACT_SIGMOID = 6
    ACT_TANH = 7
    ACT_SILU = 8
    ACT_GELU = 9
    ACT_COUNT = 10


cdef double LEAKY_SLOPE = 0.2
cdef double SELU_ALPHA = 1.6732632423543772848170429916717
cdef double SELU_SCALE = 1.0507009873554804934193349852946
cdef double INV_SQRT2 = 0.70710678118654752440
cdef double INV_SQRT_2PI = 0.39894228040143267794


cdef struct Epilogue:
    int act
    const void* bias      # K values (the dtype of the output), or NULL
    const void* y0        # the output's first element: a row's offset from it locates the row in z
    void* z0              # pre-activation output (same layout as y), or NULL


cdef inline bint needs_preactivation(int act) noexcept nogil:
    return act == ACT_SILU or act == ACT_GELU


cdef inline real activate(real v, int act) noexcept nogil:
    if act == ACT_RELU:
        return 0 if v < 0 else v
    if act == ACT_RELU6:
        return 0 if v < 0 else (6 if v > 6 else v)
    if act == ACT_LEAKY_RELU:
        return <real> (LEAKY_SLOPE * v) if v < 0 else v
    if act == ACT_ELU:
        return <real> (exp(v) - 1) if v < 0 else v
    if act == ACT_SELU:
        return <real> (SELU_SCALE * (SELU_ALPHA * (exp(v) - 1) if v < 0 else v))
    if act == ACT_SIGMOID:
        return <real> (1 / (1 + exp(-v)))
    if act == ACT_TANH:
        return <real> tanh(v)
    if act == ACT_SILU:
        return <real> (v / (1 + exp(-v)))
    if act == ACT_GELU:
        return <real> (0.5 * v * (1 + erf(v * INV_SQRT2)))
    return v


cdef inline void apply_epilogue(real* row, Py_ssize_t n, const real* bias, const Epilogue* ep) noexcept nogil:
    """row[c] = act(row[c] + bias[c]) for c < n; bias points at the row's first channel's bias (or NULL)."""
    cdef Py_ssize_t c
    cdef int act = ep.act
    cdef real* z = NULL
    if bias != NULL:
        for c in range(n):
            row[c] = row[c] + bias[c]
    if ep.z0 != NULL:
        z = <real*> ep.z0 + (row - <const real*> ep.y0)
        for c in range(n):
            z[c] = row[c]
    if act == ACT_RELU:               # the common case as its own loop, so it vectorises
        for c in range(n):
            row[c] = 0 if row[c] < 0 else row[c]
    elif act != ACT_LINEAR:
        for c in range(n):
            row[c] = activate(row[c], act)


cdef inline real activation_derivative(real y, real z, int act) noexcept nogil:
    """d act / d z, from the output y (and z for silu / gelu)."""
    cdef double s
    if act == ACT_RELU:
        return 1 if y > 0 else 0
    if act == ACT_RELU6:
        return 1 if 0 < y < 6 else 0
    if act == ACT_LEAKY_RELU:
        return 1 if y > 0 else <real> LEAKY_SLOPE
    if act == ACT_ELU:
        return 1 if y > 0 else y + 1
    if act == ACT_SELU:
        return <real> SELU_SCALE if y > 0 else <real> (y + SELU_SCALE * SELU_ALPHA)
    if act == ACT_SIGMOID:
        return y * (1 - y)
    if act == ACT_TANH:
        return 1 - y * y
    if act == ACT_SILU:
        s = 1 / (1 + exp(-z))
        return <real> (s * (1 + z * (1 - s)))
    if act == ACT_GELU:
        return <real> (0.5 * (1 + erf(z * INV_SQRT2)) + z * exp(-0.5 * z * z) * INV_SQRT_2PI)
    return 1


cdef inline double sum_column(const double* partial, Py_ssize_t nchunks, Py_ssize_t K, Py_ssize_t k) noexcept nogil:
    cdef double s = 0
    cdef Py_ssize_t q
    for q in range(nchunks):
        s += partial[q * K + k]
    return s


cdef inline void column_sums(Py_ssize_t rows, Py_ssize_t K, const real* x, double* out) noexcept nogil:
    """out[k] += sum over rows of x[:, k] (microkernel.h, kc_column_sums; float64 by plain loops)."""
    cdef Py_ssize_t r, k
    if real is float:
        kc_column_sums_f32(rows, K, x, out)
    else:
        for r in range(rows):
            for k in range(K):
                out[k] += x[r * K + k]


cdef int activation_grad_run(int act, Py_ssize_t rows, Py_ssize_t K, const real* dy, const real* y,
                             const real* z, real* dz, real* db, int n_threads) noexcept nogil:
    """dz = dy * act'(.), db[k] = sum over rows of dz[:, k]. The rows go in chunks whose count depends on
    the shape only: a chunk's dz in one flat loop (still in cache), then its column sums in float64, then
    the chunks in order: the same result for any thread count. dz NULL (linear only: dz would be dy): the
    sums of dy alone. Returns 0, or -1 when the partial sums cannot be allocated."""
    cdef Py_ssize_t nchunks = (rows + 255) // 256
    cdef Py_ssize_t q, i, i0, i1, k
    cdef double* partial = NULL
    if nchunks > 64:
        nchunks = 64
    if rows == 0 or K == 0:
        if db != NULL:
            for k in range(K):
                db[k] = 0
        return 0
    if db != NULL:
        partial = <double*> calloc(nchunks * K, sizeof(double))
        if partial == NULL:
            return -1
    for q in prange(nchunks, schedule='static', num_threads=n_threads):
        i0 = rows * q // nchunks * K          # the chunk's rows are one flat run of values
        i1 = rows * (q + 1) // nchunks * K
        if dz == NULL:
            pass
        elif act == ACT_LINEAR:
            for i in range(i0, i1):
                dz[i] = dy[i]
        elif act == ACT_RELU:
            for i in range(i0, i1):
                dz[i] = dy[i] if y[i] > 0 else 0
        else:
            for i in range(i0, i1):
                dz[i] = dy[i] * activation_derivative(y[i], z[i] if z != NULL else 0, act)
        if partial != NULL:
            column_sums((i1 - i0) // K, K, (dz if dz != NULL else dy) + i0, partial + q * K)
    if partial != NULL:
        for k in range(K):
            db[k] = <real> sum_column(partial, nchunks, K, k)
        free(partial)
    return 0

# Batch normalization over the rows of a (rows, C) array (NHWC's N*H*W pixels): y = gamma * (x - mean) * inv
# + beta with inv = 1 / sqrt(variance + epsilon), and its gradient. Both are memory-bound: two passes over x
# forward (the moments, then y), two over (dy, x) backward (two sums, then dx), where Keras 3's composite of
# TensorFlow ops makes about six each way.
#
# Sums accumulate in float64, chunk by chunk (the rows cut into a count of chunks fixed by the shape alone),
# and the chunks are added in order, so the result is the same bits for any thread count. The moments are
# taken about each channel's first value (shifted sums), so a channel whose mean is far from 0 keeps its
# variance's precision.

cdef inline Py_ssize_t bn_chunks(Py_ssize_t rows) noexcept nogil:
    cdef Py_ssize_t n = (rows + 255) // 256
    return 64 if n > 64 else n


# The sums take four rows at a time: one add into s[c] per four rows, so the chain of dependent adds through
# s[] is a quarter as long (with few channels, that chain, not memory, bounded the pass: 2304 KiB at C = 16
# ran at 15 GB/s on one core).

cdef void bn_moment_sums(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, const real* x, const double* shift,
                         double* s, double* q) noexcept nogil:
    """s[c] += sum of (x - shift[c]), q[c] += sum of its squares, over rows r0 .. r1 - 1."""
    cdef Py_ssize_t r = r0, c
    cdef double d0, d1, d2, d3
    while r + 4 <= r1:
        for c in range(C):
            d0 = <double> x[r * C + c] - shift[c]
            d1 = <double> x[(r + 1) * C + c] - shift[c]
            d2 = <double> x[(r + 2) * C + c] - shift[c]
            d3 = <double> x[(r + 3) * C + c] - shift[c]
            s[c] += (d0 + d1) + (d2 + d3)
            q[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        r += 4
    while r < r1:
        for c in range(C):
            d0 = <double> x[r * C + c] - shift[c]
            s[c] += d0
            q[c] += d0 * d0
        r += 1


cdef void bn_gradient_sums(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, const real* dy, const real* x,
                           const double* mean, double* s, double* q) noexcept nogil:
    """s[c] += sum of dy, q[c] += sum of dy * (x - mean[c]), over rows r0 .. r1 - 1."""
    cdef Py_ssize_t r = r0, c
    cdef double g0, g1, g2, g3
    while r + 4 <= r1:
        for c in range(C):
            g0 = dy[r * C + c]
            g1 = dy[(r + 1) * C + c]
            g2 = dy[(r + 2) * C + c]
            g3 = dy[(r + 3) * C + c]
            s[c] += (g0 + g1) + (g2 + g3)
            q[c] += (g0 * (<double> x[r * C + c] - mean[c]) + g1 * (<double> x[(r + 1) * C + c] - mean[c])) + \
                (g2 * (<double> x[(r + 2) * C + c] - mean[c]) + g3 * (<double> x[(r + 3) * C + c] - mean[c]))
        r += 4
    while r < r1:
        for c in range(C):
            g0 = dy[r * C + c]
            s[c] += g0
            q[c] += g0 * (<double> x[r * C + c] - mean[c])
        r += 1


cdef void bn_normalize(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, const real* x, const real* mean,
                       const real* a, const real* beta, real* y) noexcept nogil:
    """y = a * (x - mean) + beta per channel, over rows r0 .. r1 - 1 (x - mean first: no cancellation when
    the mean is large against the spread)."""
    cdef Py_ssize_t r, c
    for r in range(r0, r1):
        for c in range(C):
            y[r * C + c] = a[c] * (x[r * C + c] - mean[c]) + beta[c]


cdef void bn_input_grad(Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C, const real* dy, const real* x,
                        const real* mean, const real* a, const real* b, const real* c0, real* dx) noexcept nogil:
    """dx = a * dy + b * (x - mean) + c0 per channel, over rows r0 .. r1 - 1."""
    cdef Py_ssize_t r, c
    for r in range(r0, r1):
        for c in range(C):
            dx[r * C + c] = a[c] * dy[r * C + c] + b[c] * (x[r * C + c] - mean[c]) + c0[c]


cdef int bn_chunk_sums(Py_ssize_t rows, Py_ssize_t C, const real* u, const real* x, const double* center,
                       bint moments, double* s, double* q, int n_threads) noexcept nogil:
    """Per-channel sums over all rows, chunk partials added in order: moments: s, q = sums of (u - center)
    and its squares (x unused); else s, q = sums of u and u * (x - center). Returns -1 if out of memory."""
    cdef Py_ssize_t nchunks = bn_chunks(rows), k, c
    cdef double* partial = <double*> calloc(2 * nchunks * C + 1, sizeof(double))
    if partial == NULL:
        return -1
    for k in prange(nchunks, schedule='static', num_threads=n_threads):
        if moments:
            bn_moment_sums(rows * k // nchunks, rows * (k + 1) // nchunks, C, u, center,
                           partial + 2 * k * C, partial + (2 * k + 1) * C)
        else:
            bn_gradient_sums(rows * k // nchunks, rows * (k + 1) // nchunks, C, u, x, center,
                             partial + 2 * k * C, partial + (2 * k + 1) * C)
    for c in range(C):
        s[c] = 0
        q[c] = 0
    for k in range(nchunks):
        for c in range(C):
            s[c] += partial[2 * k * C + c]
            q[c] += partial[(2 * k + 1) * C + c]
    free(partial)
    return 0


cdef int batch_norm_run(Py_ssize_t rows, Py_ssize_t C, const real* x, const real* gamma, const real* beta,
                        const real* mean_in, const real* var_in, double epsilon, bint training, real* y,
                        real* mean_out, real* var_out, real* inv_out, int n_threads) noexcept nogil:
    """training: the batch's mean and (biased) variance into mean_out / var_out; else mean_in / var_in copied
    there. inv_out = 1 / sqrt(variance + epsilon); y = gamma * (x - mean) * inv + beta. -1: out of memory."""
    cdef Py_ssize_t c, k, nchunks = bn_chunks(rows)
    cdef double* work = <double*> malloc((4 * C + 1) * sizeof(double))
    cdef double* shift = work
    cdef double* s = work + C
    cdef double* q = work + 2 * C
    cdef double* mean = work + 3 * C
    cdef double var, inv
    cdef real* coef = NULL
    if work == NULL:
        return -1
    coef = <real*> malloc((2 * C + 1) * sizeof(real))
    if coef == NULL:
        free(work)
        return -1
    for c in range(C):
        if training:
            shift[c] = x[c] if rows > 0 else 0
        else:
            mean[c] = mean_in[c]
    if training and bn_chunk_sums(rows, C, x, NULL, shift, True, s, q, n_threads) < 0:
        free(work)
        free(coef)
        return -1
    for c in range(C):
        if training:
            if rows > 0:
                mean[c] = shift[c] + s[c] / rows
                var = q[c] / rows - (s[c] / rows) * (s[c] / rows)
                var = var if var > 0 else 0
            else:
                mean[c] = 0
                var = 0
        else:
            var = var_in[c]
        inv = 1 / sqrt(var + epsilon)
        mean_out[c] = <real> mean[c]
        var_out[c] = <real> var
        inv_out[c] = <real> inv
        coef[c] = <real> (gamma[c] * inv)                        # y = coef * (x - mean_out) + beta
    if rows > 0:
        for k in prange(nchunks, schedule='static', num_threads=n_threads):
            bn_normalize(rows * k // nchunks, rows * (k + 1) // nchunks, C, x, mean_out, coef, beta, y)
    free(work)
    free(coef)
    return 0


cdef int batch_norm_grad_run(Py_ssize_t rows, Py_ssize_t C, const real* dy, const real* x, const real* mean,
                             const real* inv, const real* gamma, bint training, real* dx, real* dgamma,
                             real* dbeta, int n_threads) noexcept nogil:
    """dbeta = sum of dy, dgamma = sum of dy * (x - mean) * inv; dx = gamma * inv * dy when the statistics were
    constants (inference), and with training's terms through the batch's mean and variance:
    dx = gamma * inv * (dy - dbeta / n - (x - mean) * inv^2 * sum(dy * (x - mean)) / n). -1: out of memory."""
    cdef Py_ssize_t c, k, nchunks = bn_chunks(rows)
    cdef double* work = <double*> malloc((3 * C + 1) * sizeof(double))
    cdef double* mean64 = work
    cdef double* s = work + C
    cdef double* q = work + 2 * C
    cdef double g, i
    cdef real* coef = NULL
    if work == NULL:
        return -1
    coef = <real*> malloc((3 * C + 1) * sizeof(real))
    if coef == NULL:
        free(work)
        return -1
    for c in range(C):
        mean64[c] = mean[c]
    if bn_chunk_sums(rows, C, dy, x, mean64, False, s, q, n_threads) < 0:
        free(work)
        free(coef)
        return -1
    for c in range(C):
        g, i = gamma[c], inv[c]
        dbeta[c] = <real> s[c]
        dgamma[c] = <real> (q[c] * i)
        coef[c] = <real> (g * i)                  # dx = coef * dy + coef[C] * (x - mean) + coef[2C]
        if training and rows > 0:
            coef[C + c] = <real> (-g * i * i * i * q[c] / rows)
            coef[2 * C + c] = <real> (-g * i * s[c] / rows)
        else:
            coef[C + c] = 0
            coef[2 * C + c] = 0
    if rows > 0:
        for k in prange(nchunks, schedule='static', num_threads=n_threads):
            bn_input_grad(rows * k // nchunks, rows * (k + 1) // nchunks, C, dy, x, mean, coef, coef + C,
                          coef + 2 * C, dx)
    free(work)
    free(coef)
    return 0

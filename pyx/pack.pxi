# Filter panels for the micro-kernel's B operand.
#
# B[t, r, col] (tap t, reduction index r, column col) of group g sits at
#     w[tap_off[t] + g * s_group + r * s_red + col * s_col]
# which covers both the forward filter (r = input channel, col = output channel) and its transpose for
# the input gradient (r = output channel, col = input channel). Panels are NR columns wide, zero-padded,
# laid out [g][panel][chunk][t][r in chunk][NR] so one micro-kernel call reads one contiguous run.

cdef void pack_filter_panels(const real* w, const Py_ssize_t* tap_off, Py_ssize_t ntaps,
                             Py_ssize_t groups, Py_ssize_t s_group,
                             Py_ssize_t nred, Py_ssize_t s_red, Py_ssize_t ncol, Py_ssize_t s_col,
                             real* out, int NR, int n_threads) noexcept nogil:
    cdef Py_ssize_t npanels = (ncol + NR - 1) // NR
    cdef Py_ssize_t nchunks = reduction_chunks(ntaps, nred)
    cdef Py_ssize_t gp, g, j, q, t, r, v, r0, r1, col, row
    cdef const real* src
    cdef real* dst
    n_threads = phase_threads(groups * npanels, groups * npanels * ntaps * nred * NR, n_threads)
    for gp in prange(groups * npanels, schedule='static', num_threads=n_threads):
        g = gp // npanels
        j = gp % npanels
        for q in range(nchunks):
            r0 = chunk_start(q, nchunks, nred)
            r1 = chunk_start(q + 1, nchunks, nred)
            for t in range(ntaps):
                r = r0
                if real is float and s_red == 1 and (j + 1) * NR <= ncol:    # the transpose, block by block
                    row = (gp * nred + r0) * ntaps + t * (r1 - r0)
                    src = w + tap_off[t] + g * s_group + j * NR * s_col
                    while r + KC_TRANSPOSE_LANES <= r1:
                        for v in range(NR // KC_TRANSPOSE_LANES):
                            kc_transpose_block_f32(src + v * KC_TRANSPOSE_LANES * s_col + r, s_col,
                                                   out + (row + r - r0) * NR + v * KC_TRANSPOSE_LANES, NR)
                        r = r + KC_TRANSPOSE_LANES
                for r in range(r, r1):
                    src = w + tap_off[t] + g * s_group + r * s_red
                    row = (gp * nred + r0) * ntaps + t * (r1 - r0) + (r - r0)
                    dst = out + row * NR
                    for v in range(NR):
                        col = j * NR + v
                        dst[v] = src[col * s_col] if col < ncol else 0

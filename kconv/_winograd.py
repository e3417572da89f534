"""Winograd minimal filtering F(m, 3): the transform matrices, exact. The kernels use them as compiled
constants (pyx/winograd_matrices.pxi, checked against these by the tests).

The matrices come from the Toom-Cook construction on interpolation points (plus the point at infinity),
computed in exact fractions and only then rounded to float64:

    y = A^T [ (G g) (.) (B^T d) ]      y_i = sum_k d[i + k] g[k]   (cross-correlation, as tf.nn)

F(2,3) uses points 0, 1, -1; F(4,3) adds 2, -2; F(6,3) adds 1/2, -1/2 (NNPACK's choice). Larger tiles do
fewer multiplications (2.25x, 4x, 5.06x fewer in 2-D) and lose accuracy: see the README's table.
"""
from fractions import Fraction
from functools import lru_cache

import numpy as np

# The interpolation points, in the order tiles take them: alpha = m + r - 1 uses the first alpha - 1 (and the
# point at infinity), so B^T depends on alpha alone and F(4, 3), F(3, 4), F(2, 5) share theirs.
POINT_SEQUENCE = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))
ALPHAS = (4, 6, 8)


def _poly_times_root(poly, root):
    """Coefficients (lowest first) of poly(x) * (x - root)."""
    out = [Fraction(0)] * (len(poly) + 1)
    for i, c in enumerate(poly):
        out[i] -= c * root
        out[i + 1] += c
    return out


@lru_cache(maxsize=None)
def matrices(m, r=3):
    """(A^T, G, B^T) of F(m, r) as float64 arrays: shapes (m, alpha), (alpha, r), (alpha, alpha)."""
    if (m, r) == (1, 1):   # the identity transform of an axis the kernel does not span (1-D as 2-D)
        one = np.ones((1, 1))
        return one, one, one
    alpha = m + r - 1
    if alpha not in ALPHAS:
        raise ValueError(f"F({m}, {r}) needs alpha = {alpha}; the tiles have alpha 4, 6 or 8")
    points = [Fraction(p) for p in POINT_SEQUENCE[:alpha - 1]]
    at = [[p ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = [[p ** k / _prod(p - q for q in points if q != p) for k in range(r)] for p in points]
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    bt = []
    for p in points:
        poly = [Fraction(1)]
        for q in points:
            if q != p:
                poly = _poly_times_root(poly, q)
        bt.append(poly + [Fraction(0)] * (alpha - len(poly)))
    poly = [Fraction(1)]
    for q in points:
        poly = _poly_times_root(poly, q)
    bt.append(poly)
    as_array = lambda rows: np.array([[float(v) for v in row] for row in rows])
    return as_array(at), as_array(g), as_array(bt)


def _prod(values):
    out = Fraction(1)
    for v in values:
        out *= v
    return out


TILES = (2, 4, 6)
# 1-D kernels of 4 to 7 taps: F(m, r) on the same alphas (F(3, 4) and F(2, 5): alpha 6; F(5, 4), F(4, 5), F(3, 6),
# F(2, 7): 8)
TILES_1D = {3: (2, 4, 6), 4: (3, 5), 5: (2, 4), 6: (3,), 7: (2,)}


if __name__ == "__main__":   # the matrices as pyx/winograd_matrices.pxi and microkernel.h hold them
    for m in TILES:
        at, g, bt = matrices(m)
        for name, matrix in (("AT", at), ("G", g), ("BT", bt), ("A", at.T)):
            print(f"WINO_{name}{m}[:] = [{', '.join(repr(float(v)) for v in matrix.reshape(-1))}]")
    for r in (4, 5, 6, 7):
        for m in TILES_1D[r]:
            at, g, _ = matrices(m, r)
            alpha = m + r - 1
            print(f"kc_wino_at{alpha}_m{m}[{at.size}] = {{{', '.join(repr(float(v)) for v in at.reshape(-1))}}}")
            print(f"kc_wino_g{alpha}_r{r}[{g.size}] = {{{', '.join(repr(float(v)) for v in g.reshape(-1))}}}")

"""The float64 reference itself, checked against TensorFlow (float64) and against its own adjoint.

TensorFlow's CPU kernels do not cover everything kconv does (no gradients for grouped or
dilated convolution, no NCHW), so besides tf.nn.conv2d / conv1d used directly we build
`tf_conv2d_any`: the same convolution composed of ops TF differentiates everywhere
(tf.pad for the padding, a zero-stuffed kernel for the dilation, one conv per group).
"""

import itertools

import numpy as np
import pytest

import reference as ref
from conftest import randn

TOL = 1e-10  # TF float64 vs reference float64, relative to max|ref|


def close64(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(float(np.max(np.abs(want), initial=0.0)), 1e-300)
    err = float(np.max(np.abs(got - want), initial=0.0))
    assert err <= TOL * scale, f"max error {err:.3e} > {TOL:g} * {scale:.3e}"


# ---------------------------------------------------------------------------------------
# Padding helper
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "in_size, k, s, d, expected",
    [
        (5, 3, 1, 1, (1, 1)),
        (4, 2, 1, 1, (0, 1)),  # odd total: the extra goes after (bottom / right)
        (5, 3, 2, 1, (1, 1)),
        (6, 3, 2, 1, (0, 1)),
        (7, 3, 1, 2, (2, 2)),
        (10, 4, 3, 1, (1, 2)),
        (3, 1, 3, 1, (0, 0)),
        (2, 7, 1, 1, (3, 3)),
        (9, 5, 4, 1, (2, 2)),
    ],
)
def test_same_pad_matches_tf_formula(in_size, k, s, d, expected):
    """SAME: total = max((ceil(in/s)-1)*s + (k-1)*d + 1 - in, 0), extra after."""
    assert ref.same_pad(in_size, k, s, d) == expected


def test_pad_pairs_forms():
    """Explicit 2-pair and tf's 4-pair NHWC forms mean the same; strings are case-insensitive."""
    assert ref.pad_pairs_2d([(1, 2), (3, 0)], (5, 5), (3, 3), (1, 1), (1, 1)) == ((1, 2), (3, 0))
    assert ref.pad_pairs_2d([[0, 0], [1, 2], [3, 0], [0, 0]], (5, 5), (3, 3), (1, 1), (1, 1)) == ((1, 2), (3, 0))
    assert ref.pad_pairs_2d("valid", (5, 5), (3, 3), (1, 1), (1, 1)) == ((0, 0), (0, 0))
    assert ref.pad_pairs_2d("same", (4, 5), (2, 3), (1, 1), (1, 1)) == ((0, 1), (1, 1))
    assert ref.pad_pair_1d("CAUSAL", 10, 3, 1, 2) == (4, 0)
    assert ref.pad_pair_1d([(2, 1)], 10, 3, 1, 2) == (2, 1)


@pytest.mark.parametrize("in_size, k, s, d", itertools.product([1, 2, 5, 8, 9], [1, 2, 3, 5], [1, 2, 3], [1, 2]))
def test_same_pad_gives_tf_output_shape(tf, in_size, k, s, d):
    """SAME output length is ceil(in / s), as TF's conv produces it."""
    x = np.arange(1.0, in_size + 1).reshape(1, in_size, 1, 1)
    w = np.arange(1.0, k + 1).reshape(k, 1, 1, 1)
    y = tf.nn.conv2d(x, w, [1, s, 1, 1], "SAME", dilations=[1, d, 1, 1]).numpy()
    (t, b), _ = ref.pad_pairs_2d("SAME", (in_size, 1), (k, 1), (s, 1), (d, 1))
    assert y.shape[1] == -(-in_size // s) == ref.out_size(in_size, k, s, d, (t, b))
    close64(y, ref.conv2d(x, w, (s, 1), ((t, b), (0, 0)), (d, 1)))


# ---------------------------------------------------------------------------------------
# 2-D forward and gradients vs TensorFlow
# ---------------------------------------------------------------------------------------

# (N, H, W, C, K, kh, kw, strides, dilations, groups, padding)
CASES_2D = [
    (2, 7, 8, 3, 4, 3, 3, (1, 1), (1, 1), 1, "VALID"),
    (2, 7, 8, 3, 4, 3, 3, (1, 1), (1, 1), 1, "SAME"),
    (1, 9, 6, 5, 6, 2, 3, (2, 1), (1, 1), 1, "SAME"),
    (3, 10, 11, 4, 2, 5, 1, (3, 2), (1, 1), 1, "VALID"),
    (2, 8, 9, 6, 7, 4, 4, (2, 3), (1, 1), 1, [(1, 2), (0, 3)]),
    (1, 6, 7, 2, 3, 1, 1, (1, 1), (1, 1), 1, [(2, 0), (1, 1)]),
    (2, 9, 9, 4, 6, 3, 3, (1, 1), (2, 3), 1, "SAME"),
    (2, 11, 12, 4, 8, 3, 2, (1, 1), (2, 2), 2, "VALID"),
    (1, 8, 8, 8, 4, 3, 3, (2, 2), (1, 1), 4, "SAME"),
    (2, 9, 10, 8, 8, 3, 3, (1, 1), (1, 2), 4, [(1, 1), (2, 0)]),
    (1, 12, 12, 4, 4, 3, 3, (2, 2), (2, 2), 2, "SAME"),
    (1, 13, 10, 3, 5, 2, 3, (3, 2), (3, 2), 1, [(0, 2), (1, 0)]),
    (1, 5, 5, 2, 2, 7, 7, (1, 1), (1, 1), 1, "SAME"),
]


def _ids(cases):
    return ["-".join(str(v).replace(" ", "") for v in c) for c in cases]


def tf_conv2d_any(tf, x, w, strides, pads, dilations, groups):
    """conv2d for any strides/dilations/groups/padding from ops TF differentiates on CPU."""
    kh, kw = int(w.shape[0]), int(w.shape[1])
    (dh, dw) = dilations
    # Zero-stuffed kernel: w_dil[a, b] = w[i, j] where a = i*dh, b = j*dw; linear in w.
    place_h = np.zeros(((kh - 1) * dh + 1, kh))
    place_h[np.arange(kh) * dh, np.arange(kh)] = 1
    place_w = np.zeros(((kw - 1) * dw + 1, kw))
    place_w[np.arange(kw) * dw, np.arange(kw)] = 1
    w_dil = tf.einsum("ai,bj,ijck->abck", tf.constant(place_h), tf.constant(place_w), w)
    xp = tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])
    xs = tf.split(xp, groups, axis=3)
    ws = tf.split(w_dil, groups, axis=3)
    ys = [tf.nn.conv2d(a, b, [1, *strides, 1], "VALID") for a, b in zip(xs, ws)]
    return tf.concat(ys, axis=3)


def _case_arrays(rng, case):
    n, h, w, c, k, kh, kw, strides, dil, groups, padding = case
    x = randn(rng, (n, h, w, c))
    f = randn(rng, (kh, kw, c // groups, k))
    pads = ref.pad_pairs_2d(padding, (h, w), (kh, kw), strides, dil)
    return x, f, strides, dil, groups, padding, pads


@pytest.mark.parametrize("case", CASES_2D, ids=_ids(CASES_2D))
def test_conv2d_forward_matches_tf(tf, rng, case):
    """Forward pass equals tf.nn.conv2d (float64) wherever TF's CPU kernel accepts the case."""
    x, f, strides, dil, groups, padding, pads = _case_arrays(rng, case)
    want = ref.conv2d(x, f, strides, pads, dil)
    tf_pad = padding if isinstance(padding, str) else [[0, 0], *padding, [0, 0]]
    try:
        y = tf.nn.conv2d(x, f, [1, *strides, 1], tf_pad, dilations=[1, *dil, 1]).numpy()
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        pytest.skip(f"TF CPU rejects this case: {str(e).splitlines()[0][:80]}")
    close64(y, want)


@pytest.mark.parametrize("case", CASES_2D, ids=_ids(CASES_2D))
def test_conv2d_matches_composed_tf_with_gradients(tf, rng, case):
    """Forward and both gradients equal TF's, via the composed (always differentiable) TF conv."""
    x, f, strides, dil, groups, padding, pads = _case_arrays(rng, case)
    y = ref.conv2d(x, f, strides, pads, dil)
    dy = randn(rng, y.shape)
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([xt, ft])
        yt = tf_conv2d_any(tf, xt, ft, strides, pads, dil, groups)
        loss = tf.reduce_sum(yt * dy)
    dx_tf, df_tf = tape.gradient(loss, [xt, ft])
    close64(yt.numpy(), y)
    close64(dx_tf.numpy(), ref.conv2d_backprop_input(x.shape, f, dy, strides, pads, dil))
    close64(df_tf.numpy(), ref.conv2d_backprop_filter(x, f.shape, dy, strides, pads, dil))


TF_GRAD_CASES = [c for c in CASES_2D if c[8] == (1, 1) and c[9] == 1]  # no dilation, no groups


@pytest.mark.parametrize("case", TF_GRAD_CASES, ids=_ids(TF_GRAD_CASES))
def test_conv2d_gradients_match_tf_gradient_tape(tf, rng, case):
    """Both gradients equal GradientTape through tf.nn.conv2d itself (groups 1, no dilation)."""
    x, f, strides, dil, groups, padding, pads = _case_arrays(rng, case)
    tf_pad = padding if isinstance(padding, str) else [[0, 0], *padding, [0, 0]]
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        yt = tf.nn.conv2d(xt, ft, [1, *strides, 1], tf_pad)
        dy = randn(rng, yt.shape)
        loss = tf.reduce_sum(yt * dy)
    dx_tf, df_tf = tape.gradient(loss, [xt, ft])
    close64(dx_tf.numpy(), ref.conv2d_backprop_input(x.shape, f, dy, strides, pads, dil))
    close64(df_tf.numpy(), ref.conv2d_backprop_filter(x, f.shape, dy, strides, pads, dil))


def test_empty_batch_gives_empty_output():
    """N = 0: forward and input gradient are empty, filter gradient is exactly zero."""
    x = np.ones((0, 5, 5, 2))
    f = np.ones((3, 3, 2, 4))
    y = ref.conv2d(x, f, (1, 1), ((1, 1), (1, 1)), (1, 1))
    assert y.shape == (0, 5, 5, 4)
    assert ref.conv2d_backprop_input(x.shape, f, y, (1, 1), ((1, 1), (1, 1)), (1, 1)).shape == x.shape
    np.testing.assert_array_equal(ref.conv2d_backprop_filter(x, f.shape, y, (1, 1), ((1, 1), (1, 1)), (1, 1)), 0)


def test_kernel_larger_than_valid_input_is_an_error():
    with pytest.raises(ValueError):
        ref.conv2d(np.ones((1, 2, 5, 1)), np.ones((3, 3, 1, 1)))


# ---------------------------------------------------------------------------------------
# Adjoint identities: <conv(x), dy> = <x, bpi(dy)> and <w, bpf(x, dy)>, for every feature at once.
# ---------------------------------------------------------------------------------------

ADJOINT_CASES = [
    (2, 9, 7, 4, 6, 3, 2, (2, 3), (2, 1), 2, [(1, 0), (2, 3)]),
    (1, 13, 13, 8, 8, 3, 3, (3, 2), (3, 3), 4, "SAME"),
    (3, 8, 8, 6, 3, 1, 4, (1, 2), (1, 2), 3, "VALID"),
]


@pytest.mark.parametrize("case", ADJOINT_CASES, ids=_ids(ADJOINT_CASES))
def test_gradients_are_adjoint_of_forward(rng, case):
    x, f, strides, dil, groups, padding, pads = _case_arrays(rng, case)
    y = ref.conv2d(x, f, strides, pads, dil)
    dy = randn(rng, y.shape)
    dx = ref.conv2d_backprop_input(x.shape, f, dy, strides, pads, dil)
    df = ref.conv2d_backprop_filter(x, f.shape, dy, strides, pads, dil)
    lhs = np.vdot(y, dy)
    assert np.isclose(lhs, np.vdot(x, dx), rtol=1e-12)
    assert np.isclose(lhs, np.vdot(f, df), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# 1-D vs tf.nn.conv1d
# ---------------------------------------------------------------------------------------

# (N, W, C, K, k, stride, dilation, groups, padding)
CASES_1D = [
    (2, 20, 3, 5, 3, 1, 1, 1, "VALID"),
    (2, 20, 3, 5, 3, 2, 1, 1, "SAME"),
    (1, 17, 4, 6, 4, 3, 1, 1, "SAME"),
    (3, 15, 4, 4, 5, 1, 2, 1, "SAME"),
    (2, 16, 4, 8, 3, 1, 1, 2, "VALID"),
    (2, 19, 8, 4, 2, 2, 1, 4, "SAME"),
    (2, 14, 3, 2, 3, 1, 1, 1, "CAUSAL"),
    (2, 14, 3, 2, 3, 1, 3, 1, "CAUSAL"),
    (1, 12, 2, 3, 2, 2, 1, 1, [(3, 1)]),
]


@pytest.mark.parametrize("case", CASES_1D, ids=_ids(CASES_1D))
def test_conv1d_matches_tf(tf, rng, case):
    """conv1d forward (and gradients where TF's CPU kernel has them) equal tf.nn.conv1d."""
    n, w, c, k, kk, s, d, groups, padding = case
    x = randn(rng, (n, w, c))
    f = randn(rng, (kk, c // groups, k))
    pad = ref.pad_pair_1d(padding, w, kk, s, d)
    # TF's conv1d takes only SAME/VALID: other paddings become an explicit tf.pad and VALID.
    xt, ft = tf.constant(x), tf.constant(f)
    with tf.GradientTape() as tape:
        tape.watch([xt, ft])
        if padding in ("SAME", "VALID"):
            yt = tf.nn.conv1d(xt, ft, s, padding, dilations=d)
        else:
            yt = tf.nn.conv1d(tf.pad(xt, [[0, 0], list(pad), [0, 0]]), ft, s, "VALID", dilations=d)
        dy = randn(rng, yt.shape)
        loss = tf.reduce_sum(yt * dy)
    close64(yt.numpy(), ref.conv1d(x, f, s, pad, d))
    if d > 1 or groups > 1:
        return  # TF's CPU gradient kernels support neither; covered by the 2-D composed test.
    dx_tf, df_tf = tape.gradient(loss, [xt, ft])
    close64(dx_tf.numpy(), ref.conv1d_backprop_input(x.shape, f, dy, s, pad, d))
    close64(df_tf.numpy(), ref.conv1d_backprop_filter(x, f.shape, dy, s, pad, d))


def test_causal_output_depends_only_on_the_past(rng):
    """CAUSAL: output t is unchanged when inputs after t change."""
    x = randn(rng, (1, 12, 2))
    f = randn(rng, (3, 2, 2))
    pad = ref.pad_pair_1d("CAUSAL", 12, 3, 1, 2)
    y = ref.conv1d(x, f, 1, pad, 2)
    x2 = x.copy()
    x2[:, 7:] += 1.0
    y2 = ref.conv1d(x2, f, 1, pad, 2)
    assert y.shape == (1, 12, 2)
    np.testing.assert_array_equal(y[:, :7], y2[:, :7])
    assert not np.allclose(y[:, 7:], y2[:, 7:])

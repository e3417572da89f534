"""Shared fixtures and helpers for the kconv test suite.

Helpers (import them with ``from conftest import ...``):
  randn(rng, shape, dtype)     random normal array (never zeros) of a dtype
  assert_close(got, ref, dtype) the accuracy contract of API.md against a float64 reference
  strided_view(a, kind, rng)   the values of `a` as a sliced / transposed / reversed / Fortran /
                               misaligned / read-only array (one of VIEW_KINDS)
  shape_re(shape)              regex matching a shape as it may appear in an error message
  assert_layer_matches_keras(ours, theirs, x)  a kconv layer and its Keras twin: weights, config, losses
  build_error_type(cls, kwargs, shape)         the error type building and calling a layer raises (or None)
"""

import os
import re
import sys
import zlib

import numpy as np
import pytest

# Make `import reference` / `from conftest import ...` work whatever pytest's import mode.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Accuracy contract (API.md): max |got - ref| <= RTOL[dtype] * max |ref|, ref computed in float64.
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}
DTYPES = [np.float32, np.float64]


def randn(rng, shape, dtype=np.float64):
    """Standard normal values of `dtype` (random normal, so exact zeros do not occur)."""
    return rng.standard_normal(shape).astype(dtype)


def assert_close(got, ref, dtype, what="result", floor=0.0):
    """Check shape, dtype and the accuracy contract; the message prints the max error.

    The tolerance is RTOL[dtype] * max(max|ref|, floor); see cases.check_against_reference for
    when a floor is needed (outputs of a few elements that cancel).
    """
    dtype = np.dtype(dtype)
    got = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
    if ref.size == 0:
        return
    max_ref = float(np.max(np.abs(ref)))
    scale = max(max_ref, float(floor))
    err = np.abs(got.astype(np.float64) - ref)
    max_err = float(np.max(err)) if np.all(np.isfinite(err)) else float("inf")
    tol = RTOL[dtype] * scale
    if not max_err <= tol:
        where = np.unravel_index(np.argmax(np.where(np.isfinite(err), err, np.inf)), err.shape)
        n_bad = int(np.count_nonzero(~(err <= tol)))
        raise AssertionError(
            f"{what} ({dtype}): max error {max_err:.3e} > {tol:.3e} = {RTOL[dtype]:g} * "
            f"max(max|ref| {max_ref:.3e}, floor {float(floor):.3e}); "
            f"worst at {tuple(int(i) for i in where)}: got {got[where]!r}, "
            f"ref {ref[where]!r}; {n_bad} of {err.size} elements out of tolerance"
        )


VIEW_KINDS = ["sliced", "transposed", "reversed", "fortran", "misaligned", "readonly"]


def assert_layer_matches_keras(ours, theirs, x):
    """A kconv layer and its keras.layers twin built with the same arguments: the same weights (names,
    shapes, order), the same config (plus kconv's algorithm / threads at their defaults), set_weights both
    ways, the same regularization losses."""
    ours(x)
    theirs(x)
    assert [(w.name, w.shape) for w in ours.weights] == [(w.name, w.shape) for w in theirs.weights]
    config = ours.get_config()
    assert config.pop("algorithm") == "auto" and config.pop("threads") is None
    assert config == theirs.get_config()
    ours.set_weights(theirs.get_weights())
    theirs.set_weights([w + 1 for w in ours.get_weights()])
    ours.set_weights(theirs.get_weights())
    ours(x)
    theirs(x)
    assert np.allclose(sum(ours.losses), sum(theirs.losses), rtol=1e-5)


def build_error_type(cls, kwargs, shape):
    """The type of the exception that building cls(**kwargs) and calling it on a batch of `shape` raises, or
    None: kconv's layers must raise Keras's own error types for bad arguments."""
    try:
        layer = cls(**kwargs)
        layer(np.zeros((1,) + tuple(shape), np.float32))
    except Exception as e:   # noqa: BLE001 - the point is to compare the types
        return type(e)
    return None


def strided_view(a, kind, rng):
    """The same values as `a`, laid out as a non-contiguous / Fortran / misaligned array."""
    if kind == "sliced":  # every other element of a bigger array along every axis
        big = rng.standard_normal(tuple(2 * s + 1 for s in a.shape)).astype(a.dtype)
        view = big[tuple(slice(1, 1 + 2 * s, 2) for s in a.shape)]
    elif kind == "transposed":  # a reversed-axes contiguous buffer, transposed back
        view = np.ascontiguousarray(a.transpose(tuple(reversed(range(a.ndim))))).transpose(
            tuple(reversed(range(a.ndim)))
        )
        assert not view.flags.c_contiguous or a.size <= 1
    elif kind == "reversed":  # negative strides on every axis
        view = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])[(slice(None, None, -1),) * a.ndim]
    elif kind == "fortran":
        view = np.asfortranarray(a)
    elif kind == "misaligned":  # C-contiguous, but starting one element into a buffer (not vector aligned)
        buf = np.empty(a.size + 1, a.dtype)
        view = buf[1:].reshape(a.shape)
    elif kind == "readonly":  # e.g. what TensorFlow's .numpy() or np.broadcast_to hand out
        view = np.empty_like(a)
    else:
        raise ValueError(kind)
    view[...] = a
    if kind == "readonly":
        view.flags.writeable = False
    return view


def shape_re(shape):
    """Regex for a shape in a message: (2, 3, 4), [2, 3, 4] or 2x3x4."""
    dims = [str(int(d)) for d in shape]
    comma = r",\s*".join(dims)
    return rf"(\({comma},?\)|\[{comma}\]|{'x'.join(dims)})"


def assert_message(excinfo, *needles):
    """Every needle (plain string, or a compiled regex) occurs in the exception's message."""
    msg = str(excinfo.value)
    for needle in needles:
        if isinstance(needle, re.Pattern):
            assert needle.search(msg), f"message {msg!r} does not match {needle.pattern!r}"
        else:
            assert needle in msg, f"message {msg!r} does not mention {needle!r}"


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: reproducible, and different for every case."""
    test_id = os.path.basename(request.node.nodeid)  # independent of the directory pytest runs from
    return np.random.default_rng(zlib.crc32(test_id.encode()))


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, imported once (slow), with its log noise turned down."""
    return pytest.importorskip("tensorflow")


@pytest.fixture
def restore_threads():
    """Put kconv's thread count back to its default after the test."""
    import kconv

    yield kconv
    kconv.set_num_threads(None)

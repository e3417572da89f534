"""The native op library's loader (kconv._oplib): its cache, the checks that keep a planted library out,
recovery from a corrupt file, concurrent builds, and the KCONV_NATIVE_OP=0 opt-out.

load() works once per process, so every check runs in a child process with KCONV_CACHE_DIR pointed at a
temporary directory. A build takes ~10 s of one core: the session's first build (two processes racing on an
empty cache) is copied into each test's cache, only the cases about building build again, and those run
side by side.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

BUILDING = "kconv: building the TensorFlow op library"
LIB = "kconv_tf_op.so"

# Loads the library (twice: the second call must be free and silent), runs one tiny convolution through it,
# and prints what happened as JSON on its last line.
CHILD = textwrap.dedent("""
    import json, os, warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from kconv import _oplib
        module = _oplib.load()
        assert _oplib.load() is module
        info = _oplib.info()
    ran = None
    if module is not None:
        import numpy as np
        x, w = np.ones((1, 4, 4, 2), np.float32), np.ones((3, 3, 2, 3), np.float32)
        y, _ = module.kconv_conv(x, w, np.zeros(0, np.float32), strides=[1, 1], dilations=[1, 1],
                                 padding="VALID")
        ran = y.numpy().tolist()
    print("RESULT " + json.dumps(dict(info=info, warnings=[str(m.message) for m in caught], ran=ran)))
""")
EXPECTED_RUN = [[[[18.0] * 3] * 2] * 2]  # ones (4, 4, 2) * ones (3, 3, 2): 18 everywhere


def _env(cache, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("KCONV_NATIVE_OP", "CXX")}
    env.update(KCONV_CACHE_DIR=str(cache), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def _start(cache, umask=-1, **extra):
    return subprocess.Popen([sys.executable, "-c", CHILD], env=_env(cache, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, umask=umask)


def _finish(proc):
    """(the child's RESULT, the number of builds it announced on stderr)."""
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"child failed:\n{out}\n{err}"
    result = json.loads(out.strip().splitlines()[-1].removeprefix("RESULT "))
    builds = [line for line in err.splitlines() if line.startswith("kconv:")]
    assert all(line.startswith(BUILDING) for line in builds), err
    return result, len(builds)


def _run(cache, **extra):
    return _finish(_start(cache, **extra))


def _run_all(caches):
    """_run for each cache, a few at a time (a build takes one core and ~0.7 GB); results in order."""
    limit = max(2, min(4, os.cpu_count() or 2))
    results, running = [], []
    for cache in caches:
        if len(running) == limit:
            results.append(_finish(running.pop(0)))
        running.append(_start(cache))
    return results + [_finish(p) for p in running]


def _assert_native(result):
    assert result["info"]["path"] == "native", result
    assert result["info"]["reason"] is None
    assert result["ran"] == EXPECTED_RUN


@pytest.fixture(scope="session")
def first_build(tmp_path_factory):
    """Two processes that start at once on an empty cache (umask 0: kconv itself must keep things private):
    (cache root, [(RESULT, builds) of each])."""
    root = tmp_path_factory.mktemp("kconv-cache") / "cache"
    procs = [_start(root, umask=0), _start(root, umask=0)]
    return root, [_finish(p) for p in procs]


@pytest.fixture(scope="session")
def built_cache(first_build):
    """A cache holding one build: (cache root, the key folder's name)."""
    root, results = first_build
    (key_dir,) = root.iterdir()
    return root, key_dir.name


def _copy(built_cache, root):
    """A private copy of the built cache at `root`: (root, key folder, library path)."""
    src, key = built_cache
    shutil.copytree(src, root)
    os.chmod(root, 0o700)
    return root, root / key, root / key / LIB


@pytest.fixture
def cache(built_cache, tmp_path):
    return _copy(built_cache, tmp_path / "cache")


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cached_build_is_reused(cache):
    root, key_dir, lib = cache
    before = _sha(lib)
    (key_dir / ".build-x1y2z3.so").write_bytes(b"what a build killed half-way left")
    result, builds = _run(root)
    _assert_native(result)
    assert builds == 0 and result["warnings"] == []
    assert result["info"]["library"] == str(lib) and result["info"]["build_seconds"] is None
    assert _sha(lib) == before
    assert sorted(os.listdir(key_dir)) == [LIB, LIB + ".sha256", "lock"]
    for path in (root, key_dir, lib):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path


def _spoil(path, how):
    """Makes `path` untrusted: a mode with group/other write bits, or "foreign" ownership. Returns the problem
    the warning must name."""
    if how == "foreign":
        os.chown(path, 65534, 65534)
        return "is owned by uid 65534"
    os.chmod(path, how)
    return f"is writable by its group or by others (mode {how:04o})"


UNTRUSTED = [("root", 0o777), ("key", 0o770), ("root", "foreign"), ("library", "foreign")]


def test_an_untrusted_cache_is_refused(built_cache, tmp_path):
    """The cache is refused with one warning naming the path and the problem; the library is built in a
    private folder, works, and that folder is removed at exit; the cached library is left alone."""
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0  # chown needs root
    cases = []
    for i, (which, how) in enumerate(c for c in UNTRUSTED if as_root or c[1] != "foreign"):
        root, key_dir, lib = _copy(built_cache, tmp_path / f"case{i}")
        path = {"root": root, "key": key_dir, "library": lib}[which]
        before = _sha(lib)
        name = f"{which} {how if how == 'foreign' else oct(how)}"
        cases.append((name, root, path, _spoil(path, how), lib, before))
    for (case, _, path, problem, lib, before), (result, builds) in zip(cases, _run_all(c[1] for c in cases)):
        _assert_native(result)
        assert builds == 1, case
        assert len(result["warnings"]) == 1, (case, result["warnings"])
        warning = result["warnings"][0]
        assert "not using the op library cache" in warning and f"{path} {problem}" in warning, (case, warning)
        built = result["info"]["library"]
        assert not built.startswith(str(lib.parent)), (case, built)
        assert not os.path.exists(os.path.dirname(built)), f"{case}: the private folder outlived the process"
        assert _sha(lib) == before, case


def test_a_corrupt_library_is_rebuilt_not_loaded(built_cache, tmp_path):
    truncated = _copy(built_cache, tmp_path / "truncated")
    garbage = _copy(built_cache, tmp_path / "garbage")
    good = truncated[2].read_bytes()
    # What a crash or a full disk could leave: the checksum no longer matches.
    truncated[2].write_bytes(good[: len(good) // 2])
    # The checksum passes, but TensorFlow cannot load it: deleted and rebuilt once.
    garbage[2].write_bytes(b"\x7fELF" + b"\0" * 1000)
    (garbage[1] / (LIB + ".sha256")).write_text(_sha(garbage[2]) + "\n")
    runs = _run_all([truncated[0], garbage[0]])
    for (root, key_dir, lib), (result, builds) in zip((truncated, garbage), runs):
        _assert_native(result)
        assert builds == 1 and result["warnings"] == []
        assert result["info"]["library"] == str(lib)
        assert (key_dir / (LIB + ".sha256")).read_text().strip() == _sha(lib)
        assert len(lib.read_bytes()) > 1004


def test_concurrent_first_uses_build_once_and_privately(first_build):
    root, results = first_build
    for result, _ in results:
        _assert_native(result)
        assert result["warnings"] == []
    assert sorted(builds for _, builds in results) == [0, 1]
    assert [r["info"]["build_seconds"] is None for r, _ in results] == [b == 0 for _, b in results]
    (key_dir,) = root.iterdir()
    assert sorted(os.listdir(key_dir)) == [LIB, LIB + ".sha256", "lock"]  # no temporary left
    for path in [root, key_dir] + list(key_dir.iterdir()):
        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, path


def test_kconv_native_op_0_uses_the_fallback_quietly(tmp_path):
    root = tmp_path / "cache"
    result, builds = _run(root, KCONV_NATIVE_OP="0")
    assert result["info"] == dict(path="numpy_function", library=None, reason="KCONV_NATIVE_OP=0",
                                  build_seconds=None)
    assert builds == 0 and result["warnings"] == [] and result["ran"] is None
    assert not root.exists()


def test_a_missing_compiler_falls_back_with_one_warning(tmp_path):
    result, builds = _run(tmp_path / "cache", CXX=str(tmp_path / "no-such-c++"))
    assert result["info"]["path"] == "numpy_function" and builds == 0
    assert len(result["warnings"]) == 1
    assert "falls back to tf.numpy_function" in result["warnings"][0]
    assert "no-such-c++" in result["warnings"][0] and "was not found" in result["warnings"][0]


def test_a_compile_error_falls_back_showing_the_compilers_last_lines(tmp_path):
    compiler = tmp_path / "broken-c++"
    compiler.write_text("#!/bin/sh\necho 'kconv_tf_op.cc:1:1: error: something went wrong' >&2\nexit 1\n")
    compiler.chmod(0o755)
    root = tmp_path / "cache"
    result, builds = _run(root, CXX=str(compiler))
    assert result["info"]["path"] == "numpy_function" and builds == 1
    assert len(result["warnings"]) == 1
    message = result["warnings"][0]
    assert "falls back to tf.numpy_function" in message and "exit status 1" in message
    assert "error: something went wrong" in message
    (key_dir,) = root.iterdir()
    assert sorted(os.listdir(key_dir)) == ["lock"]  # nothing half-built left behind

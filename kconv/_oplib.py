"""Builds kconv's TensorFlow op library (kconv/native/kconv_tf_op.cc) on first use, and loads it.

A custom op's binary is tied to the TensorFlow version it was compiled against, so it is compiled here, once
per TensorFlow version, against the installed wheel's headers, and cached. The shim only unpacks tensors:
after loading, it is handed the kc_api table of the kernels `import kconv` chose for this CPU.

load() returns the module of tf.load_op_library, or None when the native op is unavailable; kconv then
falls back to tf.numpy_function and says why, once (warnings.warn). info() reports which path is in use.

Environment:
  KCONV_NATIVE_OP=0   always use the tf.numpy_function fallback
  KCONV_CACHE_DIR     cache root (default $XDG_CACHE_HOME/kconv, else ~/.cache/kconv)
  CXX                 the C++ compiler (default c++, else g++)

The cache is trusted only if nobody else can write to it: the cache root, the version's folder and the
library must be owned by this user and not writable by group or others. Otherwise kconv warns and builds
into a fresh private temporary directory for this process instead. A library is written under a temporary
name and renamed into place (a crash never leaves half a library under the real name), its sha256 is kept
beside it and checked before loading (a truncated or corrupt file is rebuilt), and an exclusive lock on the
version's folder makes concurrent processes build once.
"""

import atexit
import ctypes
import fcntl
import hashlib
import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import warnings

NATIVE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")
SOURCE = os.path.join(NATIVE_DIR, "kconv_tf_op.cc")
HEADERS = (os.path.join(NATIVE_DIR, "kconv_api.h"),)
LIB_NAME = "kconv_tf_op.so"
COMPILE_TIMEOUT_S = 600
ERROR_TAIL_LINES = 15

_lock = threading.Lock()
_result = None  # (module or None, info dict), once load() has run in this process


class _Fallback(Exception):
    """The native op cannot be used; the message says why."""


def load():
    """The op library's module (tf.load_op_library), or None when kconv must use tf.numpy_function.

    Builds the library on the first call of this TensorFlow version (10-30 s); later calls, and later
    processes, reuse it. Thread-safe; the work happens once per process."""
    global _result
    with _lock:
        if _result is None:
            _result = _load()
    return _result[0]


def info():
    """dict(path="native" or "numpy_function", library=<the .so's path or None>, reason=<why the fallback,
    or None>, build_seconds=<seconds this process spent compiling, or None>)."""
    load()
    return dict(_result[1])


def _info(library=None, reason=None, build_seconds=None):
    return dict(path="numpy_function" if library is None else "native", library=library, reason=reason,
                build_seconds=build_seconds)


def _load():
    if os.environ.get("KCONV_NATIVE_OP", "").strip() == "0":
        return None, _info(reason="KCONV_NATIVE_OP=0")
    try:
        return _load_native()
    except _Fallback as e:
        reason = str(e)
    except OSError as e:  # a full disk, a read-only cache, ...
        reason = f"the op library could not be built or loaded ({e})"
    warnings.warn(f"kconv: the native TensorFlow op is unavailable, so kconv falls back to tf.numpy_function "
                  f"(slower in graphs, and not stored in a SavedModel): {reason}. Set KCONV_NATIVE_OP=0 to "
                  f"use the fallback without this warning.", RuntimeWarning, stacklevel=3)
    return None, _info(reason=reason)


def _load_native():
    try:
        import tensorflow as tf
    except ImportError as e:
        raise _Fallback(f"TensorFlow cannot be imported ({e})") from None
    from . import _backend

    kconv_version = getattr(sys.modules.get(__package__), "__version__", "unknown")

    api_address = getattr(_backend.core, "api_address", None)
    if api_address is None:
        raise _Fallback(f"kconv's kernels ({_backend.core.__name__}) have no api_address(); reinstall kconv")
    command = _command(tf)
    key = _key(command, tf.__version__, kconv_version)
    build_seconds = None

    def build(path):
        nonlocal build_seconds
        build_seconds = _build(tf, command, path)

    def open_(path):
        return _open(tf, path, api_address)

    key_dir = _cache_key_dir(key)
    module, path = _cached_library(key_dir, build, open_) if key_dir else _private_library(build, open_)
    return module, _info(library=path, build_seconds=build_seconds)


# --------------------------------------------------------------------------------------------- building

def _command(tf):
    """The compile command, with OUTPUT standing for the library's path. The compiler is $CXX (it may hold
    arguments, e.g. "ccache g++"), else c++ (else g++, see _build); it is only looked for when a build is
    needed, so a cached library loads without one."""
    cxx = shlex.split(os.environ.get("CXX", "").strip()) or ["c++"]
    # -w: TensorFlow's headers warn by the hundred; on failure the output's tail should be the errors.
    return (cxx + ["-shared", "-fPIC", "-O2", "-w"] + list(tf.sysconfig.get_compile_flags())
            + ["-I", NATIVE_DIR, SOURCE, "-o", "OUTPUT"] + list(tf.sysconfig.get_link_flags()))


def _key(command, tf_version, kconv_version):
    """The cache folder's name: the versions, and a hash of the sources and the compile command."""
    h = hashlib.sha256()
    for path in (SOURCE,) + HEADERS:
        with open(path, "rb") as f:
            h.update(f.read())
    h.update("\0".join(command).encode())
    safe = lambda s: "".join(c if c.isalnum() or c in ".-_" else "_" for c in s)  # noqa: E731
    return f"tf{safe(tf_version)}-kconv{safe(kconv_version)}-{h.hexdigest()[:16]}"


def _build(tf, command, path):
    """Compiles into a temporary file beside `path` and renames it into place, then writes the sidecar with
    its sha256. Returns the seconds the compiler took."""
    include = tf.sysconfig.get_include()
    if not os.path.isfile(os.path.join(include, "tensorflow", "core", "framework", "op_kernel.h")):
        raise _Fallback(f"TensorFlow's C++ headers are missing from {include}")
    if shutil.which(command[0]) is None:
        if os.environ.get("CXX", "").strip():
            raise _Fallback(f"the C++ compiler CXX={os.environ['CXX']!r} was not found")
        if shutil.which("g++") is None:
            raise _Fallback("no C++ compiler was found (install g++, or set CXX)")
        command = ["g++"] + command[1:]
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        print(f"kconv: building the TensorFlow op library for TensorFlow {tf.__version__} (once per version) "
              f"...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([tmp if a == "OUTPUT" else a for a in command], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", timeout=COMPILE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _Fallback(f"the C++ compiler could not run ({e})") from None
        seconds = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.strip().splitlines()[-ERROR_TAIL_LINES:])
            raise _Fallback(f"compiling {SOURCE} failed (exit status {proc.returncode}); the compiler's last "
                            f"lines:\n{tail}\n(command: {shlex.join(command)})")
        os.chmod(tmp, 0o700)  # the linker recreates its output with the umask's mode, maybe group-writable
        digest = _sha256(tmp)
        os.replace(tmp, path)
        _write_atomic(path + ".sha256", digest + "\n")
        return seconds
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------- loading

def _open(tf, path, api_address):
    """tf.load_op_library, then hands the library kconv's kc_api table. Raises _Fallback when the library
    is fine but cannot be used, OSError-like errors (tf's) when the file itself is bad."""
    module = tf.load_op_library(path)
    set_api = ctypes.CDLL(path).kconv_set_api  # the same handle TensorFlow opened: one global table
    set_api.argtypes = [ctypes.c_void_p]
    set_api.restype = ctypes.c_int
    if set_api(ctypes.c_void_p(api_address())) != 0:
        raise _Fallback(f"the op library {path} and kconv's kernels disagree on the kc_api version; "
                        f"reinstall kconv")
    return module


def _verified(path):
    """Whether `path` matches the sha256 written beside it after it was built."""
    try:
        with open(path + ".sha256") as f:
            expected = f.read().strip()
        return expected == _sha256(path)
    except OSError:
        return False


def _remove(path):
    for p in (path, path + ".sha256"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def _load_or_build(folder, build, open_):
    """In `folder` (ours, private, locked if shared): loads the library, building it first when missing,
    and rebuilding it once when it is corrupt or TensorFlow cannot load it."""
    path = os.path.join(folder, LIB_NAME)
    for attempt in (0, 1):
        if os.path.lexists(path):
            problem = _file_problem(path)
            if problem:
                raise _Untrusted(path, problem)
        if not _verified(path):
            _remove(path)  # missing, truncated, corrupt, or built by a process that died before the sidecar
            build(path)
        try:
            return open_(path), path
        except _Fallback:
            raise
        except Exception as e:  # tf.load_op_library's errors: a library that dlopen or TensorFlow refuses
            _remove(path)
            if attempt:
                raise _Fallback(f"TensorFlow could not load the op library {path} ({e})") from None


def _remove_temporaries(folder):
    """Under the lock, a temporary file can only be what a process killed while building left behind."""
    for name in os.listdir(folder):
        if name.startswith((".build-", ".tmp-")):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


class _Untrusted(Exception):
    def __init__(self, path, problem):
        super().__init__(f"{path} {problem}")


def _cached_library(key_dir, build, open_):
    """Builds or reuses the library in the cache's key folder, under an exclusive lock."""
    lock_path = os.path.join(key_dir, "lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        _warn_untrusted(lock_path, f"cannot be opened ({e})")
        return _private_library(build, open_)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, also if this process dies
        except OSError:
            pass  # a filesystem without locks: concurrent builds then only cost time (renames are atomic)
        else:
            _remove_temporaries(key_dir)
        try:
            return _load_or_build(key_dir, build, open_)
        except _Untrusted as e:
            problem = str(e)
    finally:
        os.close(fd)
    _warn_untrusted(None, problem)
    return _private_library(build, open_)


_private_dirs = []


def _private_library(build, open_):
    """Builds the library into a fresh private directory of this process (removed at exit)."""
    folder = tempfile.mkdtemp(prefix="kconv-op-")
    if not _private_dirs:
        atexit.register(lambda: [shutil.rmtree(d, ignore_errors=True) for d in _private_dirs])
    _private_dirs.append(folder)
    try:
        return _load_or_build(folder, build, open_)
    except _Untrusted as e:  # cannot happen in a 0700 folder of ours, unless something is badly wrong
        raise _Fallback(str(e)) from None


# -------------------------------------------------------------------------------------------- the cache

def _cache_root():
    root = os.environ.get("KCONV_CACHE_DIR")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "kconv")


def _dir_problem(path):
    """Why a directory cannot be trusted to hold a library we load, or None."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot be examined ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    return _owner_problem(st)


def _file_problem(path):
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"cannot be examined ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    return _owner_problem(st)


def _owner_problem(st):
    if st.st_uid != os.getuid():
        return (f"is owned by uid {st.st_uid}, not by this user (uid {os.getuid()}), so someone else could "
                f"plant a library there")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (f"is writable by its group or by others (mode {stat.S_IMODE(st.st_mode):04o}), so someone "
                f"else could plant a library there")
    return None


def _warn_untrusted(path, problem):
    where = f"{path} {problem}" if path else problem
    warnings.warn(f"kconv: not using the op library cache: {where}. Building the library in a private "
                  f"temporary directory instead, for this process only; fix the permissions, or set "
                  f"KCONV_CACHE_DIR to a private directory.", RuntimeWarning, stacklevel=2)


def _cache_key_dir(key):
    """The cache folder for `key`, created private (0700) if missing; None (after a warning) when the cache
    root or the folder cannot be trusted or created."""
    root = _cache_root()
    for path in (root, os.path.join(root, key)):
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            _warn_untrusted(path, f"cannot be created ({e.strerror})")
            return None
        problem = _dir_problem(path)
        if problem:
            _warn_untrusted(path, problem)
            return None
    return os.path.join(root, key)

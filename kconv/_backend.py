"""Picks the compiled kernels for this CPU: the widest instruction set it supports among those built.

KCONV_ISA=avx512|avx2|generic overrides the choice (a build the CPU cannot run is refused, not tried).
"""
import importlib
import importlib.util
import os

from . import _runtime

ORDER = ("avx512", "avx2", "generic")


def _cpu_can_run(isa):
    if isa == "avx512":
        return _runtime.cpu_supports_avx512()
    if isa == "avx2":
        return _runtime.cpu_supports_avx2()
    return True


def _is_built(isa):
    return importlib.util.find_spec(f"kconv._core_{isa}") is not None


def _load(isa):
    """Imports one build. Only ever called for a build this CPU can run: even a module's import code may
    use the instruction set it was compiled for."""
    return importlib.import_module(f"kconv._core_{isa}") if _is_built(isa) else None


def _choose():
    forced = os.environ.get("KCONV_ISA", "").strip().lower()
    if forced:
        if forced not in ORDER:
            raise ImportError(f"KCONV_ISA={forced!r}: expected one of {', '.join(ORDER)}")
        if not _cpu_can_run(forced):
            raise ImportError(f"KCONV_ISA={forced!r}: this CPU does not support that instruction set")
        module = _load(forced)
        if module is None:
            raise ImportError(f"KCONV_ISA={forced!r}: kconv was built without that instruction set")
        return module
    for isa in ORDER:
        if _cpu_can_run(isa):
            module = _load(isa)
            if module is not None:
                return module
    raise ImportError("kconv: no compiled kernels found; reinstall kconv (pip install .)")


core = _choose()
isa = core.ISA
built = tuple(isa for isa in ORDER if _is_built(isa))

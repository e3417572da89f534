"""Builds kconv's compiled core.

The Cython kernels (pyx/core.pxi and what it includes) are compiled once per instruction set into
kconv._core_<isa>; kconv picks the best one the CPU supports at import (override: KCONV_ISA). So one build
runs at full speed on AVX-512 and AVX2 machines and never dies with an illegal instruction elsewhere.

Environment:
  KCONV_BUILD_ISAS   comma-separated subset of avx512,avx2,generic to build (default: all the compiler
                     supports on x86-64, generic elsewhere)
  KCONV_NO_OPENMP=1  build without OpenMP (the kernels then run on one thread)
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512vl", "-mavx512dq", "-mavx512bw", "-mavx2", "-mfma"],
    "avx2": ["-mavx2", "-mfma"],
    "generic": [],
}
COMMON_FLAGS = ["-O3", "-ffp-contract=fast", "-fno-math-errno"]


def compiler_accepts(compiler, flags, source="int main(void) { return 0; }\n", link=True):
    """True when `compiler` compiles (and links) a small program with `flags`."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        cmd = [compiler, src, "-o", os.path.join(tmp, "probe")] + flags
        if not link:
            cmd.insert(1, "-c")
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP_PROBE = "#include <omp.h>\nint main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n"


class BuildExt(build_ext):
    """Adds OpenMP and the per-ISA flags once the compiler is known."""

    def build_extensions(self):
        cc = self.compiler.compiler_so[0] if hasattr(self.compiler, "compiler_so") else "cc"
        openmp = os.environ.get("KCONV_NO_OPENMP") != "1" and compiler_accepts(
            cc, ["-fopenmp"], OPENMP_PROBE)
        if not openmp:
            warnings.warn("kconv: building WITHOUT OpenMP: the kernels will run on one thread. "
                          "Install a compiler with OpenMP support (gcc, or clang with libomp) for threads.")
        kept = []
        for ext in self.extensions:
            isa = ext.name.rsplit("_", 1)[-1] if ext.name.startswith("kconv._core_") else "generic"
            flags = ISA_FLAGS[isa]
            if flags and not compiler_accepts(cc, flags, link=False):
                warnings.warn(f"kconv: the compiler does not accept {flags}; skipping {ext.name}")
                continue
            ext.extra_compile_args = COMMON_FLAGS + flags + (["-fopenmp"] if openmp else [])
            ext.extra_link_args = ["-fopenmp"] if openmp else []
            kept.append(ext)
        self.extensions = kept
        super().build_extensions()


def isas_to_build():
    wanted = os.environ.get("KCONV_BUILD_ISAS")
    if wanted:
        return [isa.strip() for isa in wanted.split(",") if isa.strip()]
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "x86"):
        return ["avx512", "avx2", "generic"]
    return ["generic"]


def extensions():
    from Cython.Build import cythonize

    # kconv/native holds kconv_api.h, the C interface shared with the TensorFlow op library
    exts = [Extension(f"kconv._core_{isa}", [f"pyx/_core_{isa}.pyx"], include_dirs=["pyx", "kconv/native"])
            for isa in isas_to_build()]
    exts.append(Extension("kconv._runtime", ["pyx/_runtime.pyx"], include_dirs=["pyx"]))
    return cythonize(exts, include_path=["pyx", "kconv/native"], language_level=3,
                     compiler_directives={"boundscheck": False, "wraparound": False,
                                          "cdivision": True, "initializedcheck": False})


if __name__ == "__main__":
    if sys.platform == "win32":
        warnings.warn("kconv is built and tested with gcc/clang on Linux and macOS only")
    setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})

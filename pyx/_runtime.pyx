# What the machine and the build offer, asked without running any instruction the CPU may lack:
# this module is compiled for the baseline instruction set.
cdef extern from "microkernel.h" nogil:
    int kc_cpu_supports_avx2()
    int kc_cpu_supports_avx512()
    int kc_openmp_enabled()
    int kc_omp_max_threads()


def cpu_supports_avx2():
    return bool(kc_cpu_supports_avx2())


def cpu_supports_avx512():
    return bool(kc_cpu_supports_avx512())


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(kc_openmp_enabled())


def omp_max_threads():
    """OpenMP's default team size (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return kc_omp_max_threads()

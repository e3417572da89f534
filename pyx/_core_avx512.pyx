# The kernels built for the avx512 instruction set; kconv picks one build at import.
include "core.pxi"

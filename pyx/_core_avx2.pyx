# The kernels built for the avx2 instruction set; kconv picks one build at import.
include "core.pxi"

# The kernels built for the generic instruction set; kconv picks one build at import.
include "core.pxi"

"""Padding and output sizes, for kconv.ops' argument checks and error messages (the kernels' plans compute
the same in pyx/plan.pxi). One spatial dimension at a time; 1-D runs as H = 1.
"""


def same_padding(size, k, s, d):
    """TensorFlow's SAME: output ceil(size / s); the odd pixel of padding goes after (bottom/right)."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def resolve_padding(padding, in_sizes, k_sizes, strides, dilations):
    """Explicit (before, after) pairs per spatial dimension."""
    if padding == "VALID":
        return tuple((0, 0) for _ in in_sizes)
    if padding == "SAME":
        return tuple(same_padding(n, k, s, d) for n, k, s, d in zip(in_sizes, k_sizes, strides, dilations))
    if padding == "CAUSAL":
        return tuple(((k - 1) * d, 0) for k, d in zip(k_sizes, dilations))
    return padding


def output_sizes(in_sizes, k_sizes, strides, dilations, pads):
    """Output size per dimension; ValueError when the dilated kernel does not fit the padded input.

    A zero-length input gives a zero-length output (an empty sequence is not an error)."""
    out = []
    for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(in_sizes, k_sizes, strides, dilations, pads)):
        span = (k - 1) * d + 1
        if n + lo + hi < span:
            if n == 0:
                out.append(0)
                continue
            raise ValueError(
                f"the filter (size {k}, dilation {d}, spanning {span}) is larger than the padded input along "
                f"spatial axis {axis} (size {n} + padding {lo}+{hi} = {n + lo + hi})")
        out.append((n + lo + hi - span) // s + 1)
    return tuple(out)

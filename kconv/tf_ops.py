"""kconv's TensorFlow ops: drop-ins for tf.nn.conv2d / tf.nn.conv1d, differentiable, eager and tf.function.

    y = kconv.tf_ops.conv2d(x, w, strides=1, padding="SAME")        # like tf.nn.conv2d
    y = kconv.tf_ops.conv1d(x, w, stride=1, padding="CAUSAL")       # like tf.nn.conv1d (+ CAUSAL)

Each op is a `tf.custom_gradient` function around kconv's numpy kernels (kconv.ops): the forward pass runs
ops.conv2d, the gradient runs ops.conv2d_backprop_input and ops.conv2d_backprop_filter. Inside a
tf.function (graph mode) they are called through `tf.numpy_function`; eagerly the kernels are called on
the tensors' buffers directly (no numpy_function round trip, no copy of the inputs).

float32 and float64 run natively; float16 and bfloat16 are computed in float32 and cast back. Groups are
inferred from the filter shape, as in tf.nn (groups = in channels / filters.shape[-2]). The static output
shape is set (batch may be unknown), and everything that can be checked from static shapes is checked
when the op is created, with kconv's error messages (ValueError for bad geometry, TypeError for dtypes).

Second-order gradients are not supported (the gradient itself is a numpy function).
"""
import numpy as np
import tensorflow as tf

from . import ops

try:   # TensorFlow's tape API (what tf.custom_gradient uses eagerly); without it every call uses the latter
    from tensorflow.python.eager import record as _record
    _record.could_possibly_record, _record.record_operation  # noqa: B018
except (ImportError, AttributeError):   # pragma: no cover
    _record = None
_from_dlpack = tf.experimental.dlpack.from_dlpack
try:   # the eager tensor constructor tf.constant ends in (a copy, without tf.constant's dispatch layers)
    from tensorflow.python.eager.context import context as _context
    from tensorflow.python.framework.ops import EagerTensor as _EagerTensor
except ImportError:   # pragma: no cover
    _EagerTensor = None

__all__ = ["conv1d", "conv2d", "ALGORITHMS"]

ALGORITHMS = ops.ALGORITHMS

_NATIVE = (tf.float32, tf.float64)
_ALIGN = 64    # TensorFlow's (Eigen's) alignment: numpy buffers that have it are shared, not copied
_VIA_FLOAT32 = (tf.float16, tf.bfloat16)

# One tf.custom_gradient function per (nd, strides, padding, data_format, dilations, threads): building it
# costs more than a call, so it is cached.
_FUNCTIONS = {}


def _to_tensor(array):
    """A numpy result as an eager tensor: shared through DLPack when aligned and contiguous, else copied."""
    if (array.size and array.flags.c_contiguous and array.flags.writeable and array.dtype.isnative
            and array.ctypes.data % _ALIGN == 0):
        return _from_dlpack(array.__dlpack__())
    if _EagerTensor is not None:
        return _EagerTensor(array, _context().device_name, None)
    return tf.convert_to_tensor(array)


def check_algorithm(algorithm):
    """ValueError unless `algorithm` is one kconv has (shared with kconv.layers). Whether a shape can run it
    is checked with the shapes, by kconv.ops."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm


def _freeze(value):
    """A hashable copy of strides / padding / dilations (lists -> tuples, numpy ints -> ints)."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return _freeze(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    return value


def _static_shape(tensor):
    return tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else None


def _output_shape(nd, x_shape, w_shape, strides, padding, data_format, dilations):
    """The static output shape (None where unknown), after checking the geometry with kconv's own checks."""
    if x_shape is None or w_shape is None:
        return None   # unknown rank: checked when the kernels run
    rank = nd + 2
    if len(x_shape) != rank or len(w_shape) != rank:
        # Let kconv produce the message (rank errors do not need the sizes).
        ops._describe(nd, tuple(1 if d is None else d for d in x_shape),
                      tuple(1 if d is None else d for d in w_shape), strides, padding, data_format, dilations)
    if all(d is not None for d in x_shape[1:]) and all(d is not None for d in w_shape):
        batch = x_shape[0]
        conv = ops._describe(nd, (1 if batch is None else batch,) + tuple(x_shape[1:]), w_shape, strides,
                             padding, data_format, dilations)
        shape = list(conv.user_shape(conv.out_hw, conv.filters_out))
        shape[0] = batch
        return shape
    # Partially known: check the arguments that do not depend on the sizes, give what is known.
    channels_first = ops._args.data_format(data_format, nd).startswith("NC")
    shape = [None] * rank
    shape[0] = x_shape[0]
    shape[1 if channels_first else -1] = w_shape[-1]
    return shape


def _make_function(nd, strides, padding, data_format, dilations, threads, algorithm):
    forward = ops.conv1d if nd == 1 else ops.conv2d
    backprop_input = ops.conv1d_backprop_input if nd == 1 else ops.conv2d_backprop_input
    backprop_filter = ops.conv1d_backprop_filter if nd == 1 else ops.conv2d_backprop_filter
    geometry = (strides, padding, data_format, dilations)

    def np_forward(x, w):
        return forward(x, w, *geometry, algorithm=algorithm, threads=threads)

    def np_input_gradient(x, w, dy):
        return backprop_input(x.shape, w, dy, *geometry, algorithm=algorithm, threads=threads)

    def np_filter_gradient(x, w, dy):
        return backprop_filter(x, w.shape, dy, *geometry, algorithm=algorithm, threads=threads)

    def np_gradients(x, w, dy):
        return np_input_gradient(x, w, dy), np_filter_gradient(x, w, dy)

    @tf.custom_gradient
    def graph_conv(x, w):
        y = tf.numpy_function(np_forward, [x, w], x.dtype, stateful=False, name="kconv_conv%dd" % nd)
        out_shape = _output_shape(nd, _static_shape(x), _static_shape(w), *geometry)
        if out_shape is not None:
            y.set_shape(out_shape)

        def grad(dy):
            if tf.executing_eagerly():     # a tf.function's gradient taken eagerly (rare)
                return tuple(_to_tensor(g) for g in np_gradients(np.asarray(x), np.asarray(w), np.asarray(dy)))
            # Two ops, so that TensorFlow prunes the one nobody uses (the input gradient of a model's first
            # layer, the filter gradient of a frozen layer).
            dx = tf.numpy_function(np_input_gradient, [x, w, dy], x.dtype, stateful=False,
                                   name="kconv_conv%dd_input_grad" % nd)
            dw = tf.numpy_function(np_filter_gradient, [x, w, dy], w.dtype, stateful=False,
                                   name="kconv_conv%dd_filter_grad" % nd)
            dx.set_shape(x.shape)
            dw.set_shape(w.shape)
            return dx, dw

        return y, grad

    def eager_conv(x, w):
        # Eagerly the kernels run on the tensors' own buffers and the gradient is recorded on the active
        # tapes directly: the same thing tf.custom_gradient does, at a fraction of its per-call cost.
        y = _to_tensor(np_forward(np.asarray(x), np.asarray(w)))
        if _record is not None and _record.could_possibly_record():
            def backward(dy):
                if dy is None:
                    return [tf.zeros_like(x), tf.zeros_like(w)]
                return [_to_tensor(g) for g in np_gradients(np.asarray(x), np.asarray(w), np.asarray(dy))]
            _record.record_operation("KconvConv%dD" % nd, [y], [x, w], backward)
        return y

    def conv(x, w):
        if _record is None or not tf.executing_eagerly():
            return graph_conv(x, w)
        return eager_conv(x, w)

    return conv


def _convolution(nd, input, filters, strides, padding, data_format, dilations, algorithm, threads, name):
    if algorithm != "auto":
        check_algorithm(algorithm)
    try:   # fast path: hashable arguments seen before
        fn = _FUNCTIONS[(nd, strides, padding, data_format, dilations, threads, algorithm)]
    except (KeyError, TypeError):
        fn = _function_for(nd, strides, padding, data_format, dilations, threads, algorithm)
    if tf.executing_eagerly():
        # Eagerly: no name scope, no static checks (the kernels check the same things, with the same messages).
        x = input if isinstance(input, tf.Tensor) else tf.convert_to_tensor(input)
        w = filters if isinstance(filters, tf.Tensor) else tf.convert_to_tensor(filters)
        _check_dtypes(x, w)
        # Geometry is checked by the kernels themselves, with the same messages, before anything runs.
        if x.dtype is tf.float16 or x.dtype is tf.bfloat16:
            return tf.cast(fn(tf.cast(x, tf.float32), tf.cast(w, tf.float32)), x.dtype)
        return fn(x, w)
    with tf.name_scope(name):
        x = tf.convert_to_tensor(input)
        w = tf.convert_to_tensor(filters)
        _check_dtypes(x, w)
        # Geometry checks on the static shapes, when the graph is built (ValueError with kconv's messages).
        _output_shape(nd, _static_shape(x), _static_shape(w), strides, padding, data_format, dilations)
        if x.dtype in _VIA_FLOAT32:
            return tf.cast(fn(tf.cast(x, tf.float32), tf.cast(w, tf.float32)), x.dtype)
        return fn(x, w)


def _function_for(nd, strides, padding, data_format, dilations, threads, algorithm):
    """The (cached) op for these arguments; checks what does not depend on the shapes."""
    ops._args.data_format(data_format, nd)
    frozen = (_freeze(strides), _freeze(padding), data_format, _freeze(dilations))
    key = (nd,) + frozen + (threads, algorithm)
    try:
        fn = _FUNCTIONS.get(key)
    except TypeError:   # still unhashable (a tensor...): build an op for this call only
        return _make_function(nd, *frozen, threads, algorithm)
    if fn is None:
        fn = _FUNCTIONS[key] = _make_function(nd, *frozen, threads, algorithm)
    if _plain(strides) and _plain(dilations) and _plain(padding) and _plain(threads):
        _FUNCTIONS[(nd, strides, padding, data_format, dilations, threads, algorithm)] = fn   # the fast path's key
    return fn


def _plain(value):
    """Whether a raw argument can key the cache as it is: None, str, int (not bool), or tuples of those
    (1 and 1.0 or True hash alike, so anything else goes through _freeze and kconv's checks every time)."""
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, tuple):
        return all(_plain(v) for v in value)
    return type(value) is int


def _check_dtypes(x, w):
    dtype = x.dtype
    if dtype is w.dtype and (dtype is tf.float32 or dtype is tf.float64):
        return
    if dtype != w.dtype:
        raise TypeError(f"input and filters must have the same dtype: input is {x.dtype.name}, "
                        f"filters is {w.dtype.name}")
    if dtype not in _NATIVE and dtype not in _VIA_FLOAT32:
        raise TypeError(f"kconv convolutions support float16, bfloat16, float32 and float64, got input "
                        f"and filters of dtype {dtype.name}")


def conv2d(input, filters, strides, padding, data_format="NHWC", dilations=None, algorithm="auto",
           threads=None, name=None):
    """tf.nn.conv2d on kconv's kernels.

    input (N, H, W, C) or (N, C, H, W); filters (kh, kw, C/groups, K); strides/dilations as tf.nn (an int,
    2 ints or the 4-long form); padding "VALID", "SAME" or explicit pairs. algorithm: "auto", "direct",
    "winograd", "winograd2", "winograd4" or "winograd6" (see kconv.ops);
    threads: kconv threads for this op (None = kconv.get_num_threads()).
    """
    data_format = "NHWC" if data_format is None else data_format
    return _convolution(2, input, filters, strides, padding, data_format, dilations, algorithm, threads,
                        name or "kconv_conv2d")


def conv1d(input, filters, stride, padding, data_format="NWC", dilations=None, algorithm="auto",
           threads=None, name=None):
    """tf.nn.conv1d on kconv's kernels: input (N, W, C) or (N, C, W), filters (k, C/groups, K).

    padding "VALID", "SAME", "CAUSAL" (left padding dilation * (k - 1), as Keras's causal) or explicit
    [(left, right)]. data_format "NWC"/"NCW" ("NHWC"/"NCHW" are accepted as their aliases, as in tf.nn).
    """
    data_format = {None: "NWC", "NHWC": "NWC", "NCHW": "NCW"}.get(data_format, data_format)
    return _convolution(1, input, filters, stride, padding, data_format, dilations, algorithm, threads,
                        name or "kconv_conv1d")

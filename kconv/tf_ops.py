"""kconv's TensorFlow ops: drop-ins for tf.nn.conv2d / conv1d / conv2d_transpose / conv1d_transpose,
differentiable, eager and tf.function.

    y = kconv.conv2d(x, w, strides=1, padding="SAME")                          # like tf.nn.conv2d
    y = kconv.conv1d(x, w, stride=1, padding="CAUSAL", bias=b, activation="relu")
    y = kconv.tf_ops.conv2d_transpose(x, w, [n, 16, 16, 8], strides=2, padding="SAME")

The convolution runs in kconv's native TensorFlow op library (kconv/native, built on first use against
the installed TensorFlow, see kconv._oplib): graph ops `KconvConv`, `KconvConvTranspose`,
`KconvConvBackpropInput`, `KconvConvBackpropFilter` and `KconvBiasActivationGrad`, which call kconv's
kernels with no Python on the run path, plan each shape once, fuse bias and activation into the forward's output store, and are stored
in SavedModels (load them in a process that has imported kconv). A `tf.custom_gradient` around the forward
op calls the two backprop ops (one each, so TensorFlow prunes an unused one, such as a first layer's input
gradient) after one pass over dy that applies the activation's derivative and sums the bias gradient.
A transposed convolution is the gradient of a convolution with respect to its input, so its forward is
`KconvConvTranspose` (the input-gradient pass, with bias and activation fused into its store), its input
gradient the `KconvConv` op and its filter gradient `KconvConvBackpropFilter` (with the roles of input and
out_backprop swapped).

Where the op library cannot be built (no C++ compiler, no TensorFlow headers) or KCONV_NATIVE_OP=0, the
same functions run the numpy kernels through `tf.numpy_function` (slower in graphs, not serialisable:
export with kconv.to_keras), with one warning that says why.

float32 and float64 run natively; float16 and bfloat16 are computed in float32 and cast back. Groups are
inferred from the filter shape, as in tf.nn. Static output shapes are kept wherever the inputs have them,
and everything that can be checked from static shapes is checked when the op is created (ValueError for
bad geometry, TypeError for dtypes); shapes known only at run time are checked by the op
(InvalidArgumentError naming both shapes). Second-order gradients raise an error.
"""
import numpy as np
import tensorflow as tf

from . import _args, _oplib, ops

__all__ = ["conv1d", "conv2d", "conv1d_transpose", "conv2d_transpose", "ALGORITHMS", "ACTIVATIONS",
           "native_op_in_use"]

ALGORITHMS = ops.ALGORITHMS
ACTIVATIONS = ops.ACTIVATIONS
_NATIVE = (tf.float32, tf.float64)
_VIA_FLOAT32 = (tf.float16, tf.bfloat16)

# tf.nn's twin of each fused activation (Keras's defaults), for the numpy_function fallback
_TF_ACTIVATIONS = {"linear": None, "relu": tf.nn.relu, "relu6": tf.nn.relu6,
                   "leaky_relu": lambda z: tf.nn.leaky_relu(z, alpha=0.2), "elu": tf.nn.elu, "selu": tf.nn.selu,
                   "sigmoid": tf.math.sigmoid, "tanh": tf.math.tanh, "silu": tf.nn.silu,
                   "gelu": lambda z: tf.nn.gelu(z, approximate=False)}

# One differentiable function per set of op attributes: building it costs more than a call.
_FUNCTIONS = {}


def native_op_in_use():
    """True when the native op library is loaded (else the tf.numpy_function fallback runs)."""
    return _oplib.load() is not None


def check_algorithm(algorithm):
    """ValueError unless `algorithm` is one kconv has (shared with kconv.layers)."""
    _args.algorithm_code(algorithm)
    return algorithm


class _Geometry:
    """The arguments of one convolution, checked and normalised (no shapes): hashable, so it keys caches."""

    def __init__(self, nd, strides, padding, data_format, dilations, algorithm, activation, threads):
        layout = _args.data_format(data_format, nd)
        stride_name = "stride" if nd == 1 else "strides"
        s = _args.spatial_ints(strides, stride_name, nd, layout)
        d = _args.spatial_ints(dilations, "dilations", nd, layout)
        pad = _args.padding(padding, nd, layout)
        _args.algorithm_code(algorithm)
        _args.activation(activation)
        if threads is not None:
            ops._threads.resolve(threads)
        self.nd, self.layout = nd, layout
        self.strides, self.dilations, self.padding = s, d, pad
        self.algorithm, self.activation, self.threads = algorithm, activation or "linear", threads
        self.key = (nd, layout, s, d, pad, algorithm, self.activation, threads)

    def op_attrs(self):
        """The attributes of the native ops: NHWC, 1-D as H = 1."""
        s, d = ((1,) + self.strides, (1,) + self.dilations) if self.nd == 1 else (self.strides, self.dilations)
        if isinstance(self.padding, str):
            mode, explicit = self.padding, []
        else:
            pairs = (((0, 0),) + self.padding) if self.nd == 1 else self.padding
            mode, explicit = "EXPLICIT", [v for pair in pairs for v in pair]
        return dict(strides=list(s), dilations=list(d), padding=mode, explicit_paddings=explicit,
                    algorithm=self.algorithm, threads=self.threads or 0)


def _static_shape(tensor):
    return tuple(tensor.shape.as_list()) if tensor.shape.rank is not None else None


def _check_static(geometry, x_shape, w_shape, raw):
    """kconv's own ValueErrors for what the static shapes already show (ranks, channels, sizes)."""
    nd = geometry.nd
    if x_shape is None or w_shape is None:
        return
    if len(x_shape) != nd + 2 or len(w_shape) != nd + 2:
        ops._describe(nd, tuple(1 if d is None else d for d in x_shape),
                      tuple(1 if d is None else d for d in w_shape), *raw)   # raises: the ranks
    if any(d is None for d in w_shape):
        return
    channels = x_shape[1] if geometry.layout.startswith("NC") else x_shape[-1]
    spatial = x_shape[2:] if geometry.layout.startswith("NC") else x_shape[1:-1]
    if channels is not None:
        # unknown batch / spatial sizes: check with stand-ins that fit any kernel, then the known ones
        sizes = tuple(s if s is not None else 1 << 20 for s in spatial)
        probe = ((1, channels) + sizes) if geometry.layout.startswith("NC") else ((1,) + sizes + (channels,))
        conv = ops._describe(nd, probe, w_shape, *raw)
        if geometry.algorithm.startswith("winograd"):   # can Winograd run it? the plan says why not
            try:
                ops._plan(conv, np.dtype(np.float32), geometry.algorithm, None)
            except MemoryError:      # sizes only the real call has: the op decides (ResourceExhaustedError)
                pass


_EMPTY = {}


def _no_bias(dtype):
    """The native op's "no bias" input, an empty tensor (kept per dtype eagerly: making one costs ~90 us)."""
    if not tf.executing_eagerly():
        return tf.zeros([0], dtype)
    empty = _EMPTY.get(dtype)
    if empty is None:
        empty = _EMPTY[dtype] = tf.zeros([0], dtype)
    return empty


def _native_function(geometry, with_bias):
    """The differentiable native convolution for these arguments, on NHWC (1-D: NWC) tensors."""
    lib = _oplib.load()
    attrs = geometry.op_attrs()
    activation = geometry.activation

    def forward(x, w, b):
        return lib.kconv_conv(x, w, b, activation=activation, **attrs)

    def backward(x, w, y, z, dy, with_bias):
        if activation == "linear" and not with_bias:
            dz, db = dy, None
        else:   # linear: dz is dy, and the op only sums it for the bias
            dz, db = lib.kconv_bias_activation_grad(dy, y, z, activation=activation, threads=attrs["threads"])
        dx = lib.kconv_conv_backprop_input(tf.shape(x), w, dz, **attrs)
        dw = lib.kconv_conv_backprop_filter(x, tf.shape(w), dz, **attrs)
        return dx, dw, db

    if with_bias:
        @tf.custom_gradient
        def conv(x, w, b):
            y, z = forward(x, w, b)
            return y, lambda dy: backward(x, w, y, z, dy, True)
    else:
        @tf.custom_gradient
        def conv(x, w):
            y, z = forward(x, w, _no_bias(x.dtype))
            return y, lambda dy: backward(x, w, y, z, dy, False)[:2]
    return conv


def _fallback_function(geometry, with_bias, raw):
    """The same convolution on the numpy kernels through tf.numpy_function (no op library), in the caller's
    layout; bias and activation as TensorFlow ops after it."""
    nd = geometry.nd
    forward = ops.conv1d if nd == 1 else ops.conv2d
    backprop_input = ops.conv1d_backprop_input if nd == 1 else ops.conv2d_backprop_input
    backprop_filter = ops.conv1d_backprop_filter if nd == 1 else ops.conv2d_backprop_filter
    kwargs = dict(algorithm=geometry.algorithm, threads=geometry.threads)

    def np_forward(x, w):
        return forward(x, w, *raw, **kwargs)

    def np_input_gradient(x, w, dy):
        return backprop_input(x.shape, w, dy, *raw, **kwargs)

    def np_filter_gradient(x, w, dy):
        return backprop_filter(x, w.shape, dy, *raw, **kwargs)

    @tf.custom_gradient
    def conv(x, w):
        _refuse_saving()
        y = tf.numpy_function(np_forward, [x, w], x.dtype, stateful=False, name="kconv_conv%dd" % nd)
        out_shape = _fallback_output_shape(nd, _static_shape(x), _static_shape(w), raw)
        if out_shape is not None:
            y.set_shape(out_shape)

        def grad(dy):
            # two ops, so that TensorFlow prunes the one nobody uses
            dx = tf.numpy_function(np_input_gradient, [x, w, dy], x.dtype, stateful=False)
            dw = tf.numpy_function(np_filter_gradient, [x, w, dy], w.dtype, stateful=False)
            dx.set_shape(x.shape)
            dw.set_shape(w.shape)
            return dx, dw

        return y, grad

    act = _TF_ACTIVATIONS[geometry.activation]
    channels_first = geometry.layout.startswith("NC")

    def conv_bias_act(x, w, b=None):
        y = conv(x, w)
        if b is not None:
            y = tf.nn.bias_add(y, b, data_format="NCHW" if channels_first and nd == 2 else
                               ("NCW" if channels_first else None))
        return act(y) if act is not None else y

    return conv_bias_act


def _refuse_saving():
    """A numpy function cannot live in a SavedModel: refuse at export time, never write a file that fails
    when served. (TensorFlow has no public way to ask whether it is saving; this is the fallback path only.)"""
    try:
        from tensorflow.python.saved_model import save_context
    except ImportError:   # pragma: no cover
        return
    if save_context.in_save_context():
        raise RuntimeError(
            "kconv's TensorFlow op library is not available in this process (see kconv._oplib.info()), so its "
            "layers run through tf.numpy_function, which a SavedModel cannot contain. Export "
            "kconv.to_keras(model) instead: the same model on keras.layers, with the same weights.")


def _fallback_output_shape(nd, x_shape, w_shape, raw):
    if x_shape is None or w_shape is None or any(d is None for d in x_shape[1:] + w_shape):
        return None
    conv = ops._describe(nd, (1,) + tuple(x_shape[1:]), w_shape, *raw)
    shape = list(conv.user_shape(conv.out_hw, conv.filters_out))
    shape[0] = x_shape[0]
    return shape


def _convolution(nd, input, filters, strides, padding, data_format, dilations, algorithm, threads, bias,
                 activation, name):
    raw = (strides, padding, data_format, dilations)
    key = (nd, _freeze(strides), _freeze(padding), data_format, _freeze(dilations), algorithm, activation,
           threads, bias is not None)
    entry = _FUNCTIONS.get(key) if key is not None and _hashable(key) else None
    if entry is None:
        geometry = _Geometry(nd, strides, padding, data_format, dilations, algorithm, activation, threads)
        lib = _oplib.load()
        fn = (_native_function(geometry, bias is not None) if lib is not None
              else _fallback_function(geometry, bias is not None, raw))
        entry = (geometry, fn, lib is not None)
        if _hashable(key):
            _FUNCTIONS[key] = entry
    geometry, fn, native = entry
    with tf.name_scope(name):
        x = tf.convert_to_tensor(input)
        w = tf.convert_to_tensor(filters)
        b = None if bias is None else tf.convert_to_tensor(bias)
        _check_dtypes(x, w, b)
        _check_static(geometry, _static_shape(x), _static_shape(w), raw)
        dtype = x.dtype
        if dtype in _VIA_FLOAT32:
            x, w = tf.cast(x, tf.float32), tf.cast(w, tf.float32)
            b = None if b is None else tf.cast(b, tf.float32)
        if not native:
            y = fn(x, w) if b is None else fn(x, w, b)
        else:
            y = _run_native(geometry, fn, x, w, b)
        return tf.cast(y, dtype) if dtype in _VIA_FLOAT32 else y


def _checked_rank(geometry, x):
    """x, checked to be rank nd + 2: now when the rank is static, else by the graph at run time."""
    rank = geometry.nd + 2
    if x.shape.rank is None:    # known only at run time: checked there, with kconv's message
        check = tf.debugging.assert_rank(x, rank, message=f"input must be rank {rank} ({geometry.layout})")
        with tf.control_dependencies([check]):
            return tf.identity(x)
    if x.shape.rank != rank:
        raise ValueError(f"input must be rank {rank} ({geometry.layout}), got shape {tuple(x.shape.as_list())}")
    return x


def _to_channels_last(x, rank):
    return tf.transpose(x, [0] + list(range(2, rank)) + [1])


def _to_channels_first(y, rank):
    return tf.transpose(y, [0, rank - 1] + list(range(1, rank - 1)))


def _run_native(geometry, fn, x, w, b):
    """The native op works on NHWC (1-D: NWC): channels-first tensors are transposed around it."""
    x = _checked_rank(geometry, x)
    rank = geometry.nd + 2
    channels_first = geometry.layout.startswith("NC")
    if channels_first:
        x = _to_channels_last(x, rank)
    y = fn(x, w) if b is None else fn(x, w, b)
    if channels_first:
        y = _to_channels_first(y, rank)
    return y


def _freeze(value):
    """A hashable copy of strides / padding / dilations (lists -> tuples, numpy ints -> ints); bools and
    floats are kept apart from ints (1, 1.0 and True hash alike), so an invalid value never shares the
    cache entry of a valid one."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return _freeze(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (bool, float, np.bool_, np.floating)):
        return (type(value).__name__, value)
    return value


def _hashable(key):
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _check_dtypes(x, w, b):
    dtype = x.dtype
    if dtype != w.dtype:
        raise TypeError(f"input and filters must have the same dtype: input is {x.dtype.name}, "
                        f"filters is {w.dtype.name}")
    if dtype not in _NATIVE and dtype not in _VIA_FLOAT32:
        raise TypeError(f"kconv convolutions support float16, bfloat16, float32 and float64, got input "
                        f"and filters of dtype {dtype.name}")
    if b is not None:
        if b.dtype != dtype:
            raise TypeError(f"bias must have the input's dtype {dtype.name}, got {b.dtype.name}")
        if b.shape.rank is not None and b.shape.rank != 1:
            raise ValueError(f"bias must have shape (filters,), got {tuple(b.shape.as_list())}")


def conv2d(input, filters, strides, padding, data_format="NHWC", dilations=None, algorithm="auto",
           threads=None, name=None, bias=None, activation=None):
    """tf.nn.conv2d on kconv's kernels, optionally with bias and activation fused.

    input (N, H, W, C) or (N, C, H, W); filters (kh, kw, C/groups, K); strides/dilations as tf.nn (an int,
    2 ints or the 4-long form); padding "VALID", "SAME" or explicit pairs. algorithm: "auto", "direct",
    "winograd", "winograd2", "winograd4" or "winograd6" (see kconv.ops); threads: kconv threads for this op
    (None = kconv.get_num_threads()). bias: K values; activation: None or a name in ACTIVATIONS (Keras's
    defaults): the result is activation(conv2d(input, filters) + bias).
    """
    data_format = "NHWC" if data_format is None else data_format
    return _convolution(2, input, filters, strides, padding, data_format, dilations, algorithm, threads, bias,
                        activation, name or "kconv_conv2d")


def conv1d(input, filters, stride, padding, data_format="NWC", dilations=None, algorithm="auto",
           threads=None, name=None, bias=None, activation=None):
    """tf.nn.conv1d on kconv's kernels: input (N, W, C) or (N, C, W), filters (k, C/groups, K).

    padding "VALID", "SAME", "CAUSAL" (left padding dilation * (k - 1), as Keras's causal) or explicit
    [(left, right)]. data_format "NWC"/"NCW" ("NHWC"/"NCHW" are accepted as their aliases, as in tf.nn).
    bias and activation as in conv2d.
    """
    data_format = {None: "NWC", "NHWC": "NWC", "NCHW": "NCW"}.get(data_format, data_format)
    return _convolution(1, input, filters, stride, padding, data_format, dilations, algorithm, threads, bias,
                        activation, name or "kconv_conv1d")


# ------------------------------------------------------------------------------ transposed convolutions
#
# conv_transpose(x, w, output_shape) is the gradient of conv(y, w) (y of output_shape) with respect to y:
# the filters keep the convolution's layout (k..., C/groups, K), where C is the transposed convolution's
# output channels and K its input channels, which is exactly tf.nn's and Keras's (k..., out, in) layout.


def _native_transpose_function(geometry, with_bias):
    """The differentiable native transposed convolution for these arguments, on NHWC (1-D: NWC) tensors:
    KconvConvTranspose, the input-gradient pass with bias and activation fused into its store. output_sizes
    is an int32 tensor (the batch can be a run-time value), so one function serves all calls."""
    lib = _oplib.load()
    attrs = geometry.op_attrs()
    activation = geometry.activation

    def backward(x, w, y, z, dy, with_bias):
        if activation == "linear" and not with_bias:
            dz, db = dy, None
        else:   # linear: dz is dy, and the op only sums it for the bias
            dz, db = lib.kconv_bias_activation_grad(dy, y, z, activation=activation, threads=attrs["threads"])
        # the roles swap: dz is the convolution's input, x its out_backprop (two ops, pruned apart)
        dx = lib.kconv_conv(dz, w, _no_bias(dz.dtype), activation="linear", **attrs)[0]
        dw = lib.kconv_conv_backprop_filter(dz, tf.shape(w), x, **attrs)
        return dx, dw, db

    if with_bias:
        @tf.custom_gradient
        def conv_transpose(x, w, b, output_sizes):
            y, z = lib.kconv_conv_transpose(x, w, output_sizes, b, activation=activation, **attrs)
            return y, lambda dy: backward(x, w, y, z, dy, True) + (None,)
    else:
        @tf.custom_gradient
        def conv_transpose(x, w, output_sizes):
            y, z = lib.kconv_conv_transpose(x, w, output_sizes, _no_bias(x.dtype), activation=activation,
                                            **attrs)
            return y, lambda dy: backward(x, w, y, z, dy, False)[:2] + (None,)
    return conv_transpose


def _fallback_transpose_function(geometry, raw):
    """The same on the numpy kernels through tf.numpy_function (no op library), in the caller's layout."""
    nd = geometry.nd
    forward = ops.conv1d if nd == 1 else ops.conv2d
    backprop_input = ops.conv1d_backprop_input if nd == 1 else ops.conv2d_backprop_input
    backprop_filter = ops.conv1d_backprop_filter if nd == 1 else ops.conv2d_backprop_filter
    kwargs = dict(algorithm=geometry.algorithm, threads=geometry.threads)

    def np_forward(x, w, output_sizes):
        return backprop_input(output_sizes, w, x, *raw, **kwargs)

    def np_input_gradient(w, dy):
        return forward(dy, w, *raw, **kwargs)

    def np_filter_gradient(x, w, dy):
        return backprop_filter(dy, w.shape, x, *raw, **kwargs)

    @tf.custom_gradient
    def conv_transpose(x, w, output_sizes):
        _refuse_saving()
        y = tf.numpy_function(np_forward, [x, w, output_sizes], x.dtype, stateful=False,
                              name="kconv_conv%dd_transpose" % nd)

        def grad(dy):
            dx = tf.numpy_function(np_input_gradient, [w, dy], x.dtype, stateful=False)
            dw = tf.numpy_function(np_filter_gradient, [x, w, dy], w.dtype, stateful=False)
            dx.set_shape(x.shape)
            dw.set_shape(w.shape)
            return dx, dw, None
        return y, grad
    return conv_transpose


def _output_sizes(output_shape, rank):
    """output_shape (ints and int scalar tensors, a 1-D int tensor, or a TensorShape) as a list of `rank`
    entries, and the list of their static values (None where only the run time knows one)."""
    if isinstance(output_shape, tf.TensorShape):
        output_shape = output_shape.as_list()
    if isinstance(output_shape, np.ndarray):
        output_shape = output_shape.tolist()
    if tf.is_tensor(output_shape):
        if output_shape.shape.rank != 1 or output_shape.shape[0] != rank:
            raise ValueError(f"output_shape must be {rank} sizes, got a tensor of shape {output_shape.shape}")
        entries = tf.unstack(output_shape)
    else:
        try:
            entries = list(output_shape)
        except TypeError:
            raise ValueError(f"output_shape must be {rank} sizes, got {output_shape!r}") from None
        if len(entries) != rank:
            raise ValueError(f"output_shape must be {rank} sizes (batch, spatial..., channels in the input's "
                             f"layout), got {output_shape!r}")
    static = []
    for i, entry in enumerate(entries):
        if tf.is_tensor(entry):
            if not entry.dtype.is_integer or entry.shape.rank not in (0, None):
                raise ValueError(f"output_shape[{i}] must be an int scalar, got a {entry.dtype.name} tensor "
                                 f"of shape {entry.shape}")
            entries[i] = entry = tf.cast(entry, tf.int32)
            value = tf.get_static_value(entry)
            value = None if value is None else int(value)
        elif isinstance(entry, (int, np.integer)) and not isinstance(entry, (bool, np.bool_)):
            value = entries[i] = int(entry)
        else:
            raise ValueError(f"output_shape must hold ints, got {output_shape!r}")
        if value is not None and not 0 <= value <= _args.INT32_MAX:
            raise ValueError(f"output_shape sizes must be in [0, 2**31), got {output_shape!r}")
        static.append(value)
    return entries, static


def _stack_sizes(entries):
    if not any(tf.is_tensor(e) for e in entries):
        return tf.constant(entries, tf.int32)
    return tf.stack(entries)


def _check_transpose_static(geometry, x_shape, w_shape, out_static, raw):
    """kconv's own ValueErrors for what the static shapes already show: the convolution of a tensor of
    output_shape with the filters must give the input's shape (spatial sizes and channels)."""
    nd = geometry.nd
    if x_shape is None or w_shape is None:
        return
    if len(x_shape) != nd + 2 or len(w_shape) != nd + 2:
        raise ValueError(f"input and filters must be rank {nd + 2} ({geometry.layout}; filters: kernel size..., "
                         f"output channels / groups, input channels), got input {x_shape} and filters {w_shape}")
    channels_first = geometry.layout.startswith("NC")
    out_channels = out_static[1] if channels_first else out_static[-1]
    out_spatial = out_static[2:] if channels_first else out_static[1:-1]
    if any(d is None for d in w_shape) or out_channels is None or any(d is None for d in out_spatial):
        return    # the op checks at run time
    probe = ((1, out_channels) if channels_first else (1,)) + tuple(out_spatial) + \
        (() if channels_first else (out_channels,))
    conv = ops._describe(nd, probe, w_shape, *raw, input_name="output_shape")
    expected = conv.user_shape(conv.out_hw, conv.filters_out)[1:]
    if any(got is not None and got != want for got, want in zip(x_shape[1:], expected)):
        raise ValueError(
            f"input shape {x_shape} does not fit output_shape {tuple(out_static)} and filters {w_shape}: the "
            f"convolution of output_shape with these filters (strides {conv.strides[2 - nd:]}, padding "
            f"{raw[1]!r}, dilations {conv.dilations[2 - nd:]}) has shape {(x_shape[0],) + tuple(expected)}")


def _bias_activation(y, b, activation, channels_first):
    """Bias and activation as TensorFlow ops after the transposed convolution (the numpy_function fallback;
    the native op fuses them)."""
    if b is not None:
        y = tf.nn.bias_add(y, b, data_format="NCHW" if channels_first else "NHWC")   # NCHW: any N, C, ...
    act = _TF_ACTIVATIONS[activation]
    return y if act is None else act(y)


def _convolution_transpose(nd, input, filters, output_shape, strides, padding, data_format, dilations, algorithm,
                           threads, bias, activation, name):
    raw = (strides, padding, data_format, dilations)
    key = ("transpose", nd, _freeze(strides), _freeze(padding), data_format, _freeze(dilations), algorithm,
           activation, threads, bias is not None)
    entry = _FUNCTIONS.get(key) if _hashable(key) else None
    if entry is None:
        geometry = _Geometry(nd, strides, padding, data_format, dilations, algorithm, activation, threads)
        if geometry.padding == "CAUSAL":
            raise ValueError("padding must be 'VALID', 'SAME' or explicit pairs for a transposed convolution "
                             "(as in tf.nn.conv1d_transpose), got 'CAUSAL'")
        lib = _oplib.load()
        fn = (_native_transpose_function(geometry, bias is not None) if lib is not None
              else _fallback_transpose_function(geometry, raw))
        entry = (geometry, fn, lib is not None)
        if _hashable(key):
            _FUNCTIONS[key] = entry
    geometry, fn, native = entry
    rank = nd + 2
    channels_first = geometry.layout.startswith("NC")
    with tf.name_scope(name):
        x = tf.convert_to_tensor(input)
        w = tf.convert_to_tensor(filters)
        b = None if bias is None else tf.convert_to_tensor(bias)
        _check_dtypes(x, w, b)
        sizes, static = _output_sizes(output_shape, rank)
        _check_transpose_static(geometry, _static_shape(x), _static_shape(w), static, raw)
        dtype = x.dtype
        if dtype in _VIA_FLOAT32:
            x, w = tf.cast(x, tf.float32), tf.cast(w, tf.float32)
            b = None if b is None else tf.cast(b, tf.float32)
        if native:    # NHWC op: channels-first tensors (and output_shape) are transposed around it
            x = _checked_rank(geometry, x)
            if channels_first:
                x, sizes = _to_channels_last(x, rank), [sizes[0]] + sizes[2:] + [sizes[1]]
            y = fn(x, w, _stack_sizes(sizes)) if b is None else fn(x, w, b, _stack_sizes(sizes))
            if channels_first:
                y = _to_channels_first(y, rank)
        else:
            y = fn(x, w, _stack_sizes(sizes))
            y.set_shape(static)
            y = _bias_activation(y, b, geometry.activation, channels_first)
        return tf.cast(y, dtype) if dtype in _VIA_FLOAT32 else y


def conv2d_transpose(input, filters, output_shape, strides, padding="SAME", data_format="NHWC", dilations=None,
                     algorithm="auto", threads=None, name=None, bias=None, activation=None):
    """tf.nn.conv2d_transpose on kconv's kernels (the gradient of conv2d with respect to its input).

    input (N, H, W, K) or (N, K, H, W); filters (kh, kw, C/groups, K), as tf.nn (output channels C, input
    channels K); output_shape: the result's 4 sizes in the input's layout (ints, int scalar tensors such as
    tf.shape(x)[0], or a 1-D int tensor); strides, padding ("VALID", "SAME" or explicit pairs), dilations as
    in conv2d. The convolution of the result with filters must have input's shape. algorithm and threads
    as in conv2d. bias (C values) and activation (None or a name in ACTIVATIONS, Keras's defaults): the
    result is activation(conv2d_transpose(...) + bias), fused into kconv's op.
    """
    data_format = "NHWC" if data_format is None else data_format
    return _convolution_transpose(2, input, filters, output_shape, strides, padding, data_format, dilations,
                                  algorithm, threads, bias, activation, name or "kconv_conv2d_transpose")


def conv1d_transpose(input, filters, output_shape, strides, padding="SAME", data_format="NWC", dilations=None,
                     algorithm="auto", threads=None, name=None, bias=None, activation=None):
    """tf.nn.conv1d_transpose on kconv's kernels: input (N, W, K) or (N, K, W), filters (k, C/groups, K),
    output_shape (N, W', C) or (N, C, W'); the rest as in conv2d_transpose."""
    data_format = {None: "NWC", "NHWC": "NWC", "NCHW": "NCW"}.get(data_format, data_format)
    return _convolution_transpose(1, input, filters, output_shape, strides, padding, data_format, dilations,
                                  algorithm, threads, bias, activation, name or "kconv_conv1d_transpose")


def _no_second_order(op, *grads):
    raise NotImplementedError(
        f"kconv: second-order gradients of kconv convolutions are not supported ({op.type}); compute them "
        f"with keras.layers / tf.nn convolutions (kconv.to_keras converts a model)")


for _op_type in ("KconvConv", "KconvConvTranspose", "KconvConvBackpropInput", "KconvConvBackpropFilter",
                 "KconvBiasActivationGrad"):
    tf.RegisterGradient(_op_type)(_no_second_order)

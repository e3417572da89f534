"""Folding a layer into the kconv convolution that produced its input, at trace time.

Inside a graph, a layer whose input is the linear output of one of kconv's convolutions (a `KconvConv` node,
through the Identity / IdentityN that tf.custom_gradient puts after it) and that nothing else has read yet
can trace that convolution again with itself folded in: a per-channel scale and shift into the filters and
bias (an inference BatchNorm), an activation into the output store (ReLU). The first node is then unused and
TensorFlow prunes it. The new node goes through kconv.tf_ops, so it stays differentiable.

Decided when the graph is traced: a reader of the convolution's output traced after the folding layer still
gets the original node's values (both nodes then run).
"""
import tensorflow as tf

_PASS_THROUGH = ("Identity", "IdentityN")


def producing_conv(tensor):
    """The KconvConv op whose linear output `tensor` is, when it was traced in this graph, is read by nothing
    else so far and has no explicit padding; else None."""
    if tf.executing_eagerly() or not hasattr(tensor, "op") or tensor.consumers():
        return None
    t = tensor
    while t.op.type in _PASS_THROUGH:
        t = t.op.inputs[t.value_index]
    op = t.op
    if op.type != "KconvConv" or t.value_index != 0 or op.get_attr("activation") != b"linear" or \
            op.get_attr("padding") == b"EXPLICIT" or len(op.inputs[0].shape) not in (3, 4):
        return None
    if any(c.type not in _PASS_THROUGH for c in op.outputs[0].consumers()):
        return None
    return op


def conv_again(op, scale=None, shift=None, activation=None):
    """The convolution `op` computes, each output channel k times scale[k] plus shift[k] (when given: filters
    * scale, bias * scale + shift), then `activation` (one kconv fuses, or None), as a new differentiable
    node (kconv.tf_ops)."""
    from . import tf_ops
    x, w, b = op.inputs[0], op.inputs[1], op.inputs[2]
    bias = None if b.shape[0] == 0 else b
    if scale is not None:
        w = w * scale
        bias = shift if bias is None else bias * scale + shift
    strides, dilations = op.get_attr("strides"), op.get_attr("dilations")
    padding = op.get_attr("padding").decode()
    args = dict(algorithm=op.get_attr("algorithm").decode(), threads=op.get_attr("threads") or None, bias=bias,
                activation=activation)
    if len(x.shape) == 4:
        return tf_ops.conv2d(x, w, tuple(strides), padding, dilations=tuple(dilations), **args)
    return tf_ops.conv1d(x, w, strides[-1], padding, dilations=dilations[-1], **args)

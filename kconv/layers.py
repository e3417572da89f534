"""kconv's Keras 3 layers: drop-ins for keras.layers' convolutions, running on kconv's CPU kernels.

    import kconv
    x = kconv.Conv2D(32, 3, padding="same", activation="relu")(x)     # was keras.layers.Conv2D

Conv1D / Conv2D, Conv1DTranspose / Conv2DTranspose, DepthwiseConv1D / DepthwiseConv2D and SeparableConv1D /
SeparableConv2D each subclass their keras.layers namesake: every argument, default, weight (name, shape,
order), error, get_config entry and output shape is Keras's own; only the convolution runs on kconv
(kconv.tf_ops). Two more arguments: `algorithm` ("auto", "direct", "winograd", "winograd2/4/6"; see kconv.ops)
and `threads` (None = kconv's setting). They need the TensorFlow backend. How each one runs:

  * Conv1D / Conv2D: kconv's convolution op, with bias and activation fused into it when the activation is
    one of relu, relu6, leaky_relu, elu, selu, sigmoid, tanh, silu/swish, gelu (Keras's defaults); any other
    activation is applied after it, as Keras does.
  * DepthwiseConv1D / 2D: the same op as a grouped convolution (groups = input channels; Keras's kernel
    (k..., C, depth_multiplier) is the filter (k..., 1, C * depth_multiplier)), bias and activation fused.
  * SeparableConv1D / 2D: that depthwise convolution, then the 1x1 pointwise convolution with bias and
    activation fused into it.
  * Conv1DTranspose / Conv2DTranspose: kconv's transposed op (kconv.tf_ops.conv2d_transpose, the
    input-gradient pass), with the output size Keras's TensorFlow backend computes (padding, output_padding)
    and bias and activation fused as in Conv2D.

One known difference from keras.layers (all of them): with channels_first and an output whose last spatial
size equals its channel count, Keras 3.15 adds the bias along that last axis (its TensorFlow ops.add takes
the (1, C, 1...) bias for a channels-last one), a Keras bug; kconv adds it per channel.

The ops are kconv's native TensorFlow ops (kconv.tf_ops), so:

  * `jit_compile=True` falls back to jit_compile=False with a warning (supports_jit = False);
  * `model.export()` writes a SavedModel that runs in any process that has imported kconv; for a
    kconv-free SavedModel (TF Serving, TFLite), export `kconv.to_keras(model)`, which swaps every layer here
    for its keras.layers twin (and `kconv.convert(model)` the other way; kconv.serving finds the twins from
    this module's __all__).

`.keras` files save and load (the layers are registered as "kconv>Conv2D", "kconv>DepthwiseConv2D", ...;
import kconv before keras.models.load_model).

BatchNormalization (kconv.normalization) and ReLU (kconv.relu) are here too, so that convert / to_keras swap them
with the convolutions: batch normalization as one kconv op each way (folded into the convolution before it in
inference), and a ReLU folded into the convolution before it inside a graph.
"""
import keras
import tensorflow as tf

from . import _threads, tf_ops
from .normalization import BatchNormalization
from .relu import ReLU

__all__ = ["Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
           "SeparableConv1D", "SeparableConv2D", "BatchNormalization", "ReLU"]

_TF_LAYOUTS = {1: {"channels_last": "NWC", "channels_first": "NCW"},
               2: {"channels_last": "NHWC", "channels_first": "NCHW"}}


def _fusable_activations():
    """Keras's activation functions that kconv fuses into its forward pass, by the function Keras stores."""
    fused = {keras.activations.get(name): name for name in tf_ops.ACTIVATIONS}
    fused[keras.activations.get("swish")] = "silu"
    fused[keras.activations.get(None)] = "linear"
    return fused


_FUSED = _fusable_activations()


class _Kconv:
    """What every kconv layer adds to its Keras twin: `algorithm` / `threads`, and the convolution op."""

    _kconv_args = ("algorithm", "threads")     # kconv's own config entries (kconv.serving passes these on)

    def _kconv_init(self, algorithm, threads):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"kconv's Keras layers need the TensorFlow backend, Keras is running on "
                               f"{keras.backend.backend()!r}")
        tf_ops.check_algorithm(algorithm)
        _threads.check(threads)
        self.algorithm = algorithm
        self.threads = threads
        self.supports_jit = False     # XLA cannot compile kconv's ops

    def _kconv_op(self, inputs, kernel, bias=None, activation=None, pointwise=False, data_format=None):
        """kconv's convolution with this layer's strides, padding and dilation (pointwise: a 1x1 stride-1
        convolution), in the layer's data_format unless one is given."""
        op = tf_ops.conv1d if self.rank == 1 else tf_ops.conv2d
        strides, padding, dilations = (1, "VALID", 1) if pointwise else \
            (tuple(self.strides), self.padding.upper(), tuple(self.dilation_rate))   # 'causal': 1-D only
        layout = _TF_LAYOUTS[self.rank][data_format or self.data_format]
        return op(inputs, kernel, strides, padding, data_format=layout, dilations=dilations,
                  algorithm=self.algorithm, threads=self.threads, bias=bias, activation=activation)

    def _bias_and_fused_activation(self):
        """(bias or None, the activation's name when kconv fuses it, else None: apply self.activation after)."""
        return (self.bias if self.use_bias else None), _FUSED.get(self.activation)

    def _finish(self, outputs, fused):
        if fused is None and self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"algorithm": self.algorithm, "threads": self.threads})
        return config


class _KconvConv(_Kconv):
    """Conv1D / Conv2D."""

    def convolution_op(self, inputs, kernel):
        return self._kconv_op(inputs, kernel)

    def call(self, inputs):
        # Keras's BaseConv.call is conv -> + bias -> activation; kconv fuses all three into one op when it
        # knows the activation (Keras's own function, with its defaults), else applies it after. Conv1D's
        # 'causal' padding is native too, so both ranks go through the same op.
        bias, fused = self._bias_and_fused_activation()
        return self._finish(self._kconv_op(inputs, self.kernel, bias, fused), fused)


@keras.saving.register_keras_serializable(package="kconv")
class Conv1D(_KconvConv, keras.layers.Conv1D):
    """keras.layers.Conv1D on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


@keras.saving.register_keras_serializable(package="kconv")
class Conv2D(_KconvConv, keras.layers.Conv2D):
    """keras.layers.Conv2D on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


def _depthwise_filters(kernel):
    """Keras's depthwise kernel (k..., C, depth_multiplier) as the filters of a convolution with C groups:
    (k..., 1, C * depth_multiplier), whose output channel c * depth_multiplier + m is Keras's too."""
    shape = tuple(kernel.shape)
    return tf.reshape(kernel, shape[:-2] + (1, shape[-2] * shape[-1]))


class _KconvDepthwise(_Kconv):
    """DepthwiseConv1D / DepthwiseConv2D: one grouped convolution, bias and activation fused."""

    def call(self, inputs):
        bias, fused = self._bias_and_fused_activation()
        return self._finish(self._kconv_op(inputs, _depthwise_filters(self.kernel), bias, fused), fused)


class _KconvSeparable(_Kconv):
    """SeparableConv1D / SeparableConv2D: depthwise, then pointwise with bias and activation fused."""

    def call(self, inputs):
        bias, fused = self._bias_and_fused_activation()
        rank = self.rank + 2
        channels_first = self.data_format == "channels_first"
        if channels_first:   # the native op is channels-last: transpose once for both convolutions, not twice
            inputs = tf.transpose(inputs, [0] + list(range(2, rank)) + [1])
        hidden = self._kconv_op(inputs, _depthwise_filters(self.depthwise_kernel), data_format="channels_last")
        outputs = self._kconv_op(hidden, self.pointwise_kernel, bias, fused, pointwise=True,
                                 data_format="channels_last")
        if channels_first:
            outputs = tf.transpose(outputs, [0, rank - 1] + list(range(1, rank - 1)))
        return self._finish(outputs, fused)


class _KconvTranspose(_Kconv):
    """Conv1DTranspose / Conv2DTranspose: kconv's transposed op, bias and activation fused."""

    def call(self, inputs):
        # The output shape as Keras's TensorFlow backend computes it (its conv_transpose): the layer's own
        # compute_output_shape, with the sizes known only at run time (the batch, usually) from tf.shape.
        dynamic = tf.shape(inputs)
        input_shape = [d if d is not None else dynamic[i] for i, d in enumerate(inputs.shape)]
        output_shape = self.compute_output_shape(input_shape)
        op = tf_ops.conv1d_transpose if self.rank == 1 else tf_ops.conv2d_transpose
        bias, fused = self._bias_and_fused_activation()
        outputs = op(inputs, self.kernel, output_shape, tuple(self.strides), self.padding.upper(),
                     data_format=_TF_LAYOUTS[self.rank][self.data_format], dilations=tuple(self.dilation_rate),
                     algorithm=self.algorithm, threads=self.threads, bias=bias, activation=fused)
        return self._finish(outputs, fused)


@keras.saving.register_keras_serializable(package="kconv")
class Conv1DTranspose(_KconvTranspose, keras.layers.Conv1DTranspose):
    """keras.layers.Conv1DTranspose on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


@keras.saving.register_keras_serializable(package="kconv")
class Conv2DTranspose(_KconvTranspose, keras.layers.Conv2DTranspose):
    """keras.layers.Conv2DTranspose on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


@keras.saving.register_keras_serializable(package="kconv")
class DepthwiseConv1D(_KconvDepthwise, keras.layers.DepthwiseConv1D):
    """keras.layers.DepthwiseConv1D on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


@keras.saving.register_keras_serializable(package="kconv")
class DepthwiseConv2D(_KconvDepthwise, keras.layers.DepthwiseConv2D):
    """keras.layers.DepthwiseConv2D on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


@keras.saving.register_keras_serializable(package="kconv")
class SeparableConv1D(_KconvSeparable, keras.layers.SeparableConv1D):
    """keras.layers.SeparableConv1D on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


@keras.saving.register_keras_serializable(package="kconv")
class SeparableConv2D(_KconvSeparable, keras.layers.SeparableConv2D):
    """keras.layers.SeparableConv2D on kconv's kernels; plus `algorithm` and `threads`."""

    def __init__(self, *args, algorithm="auto", threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._kconv_init(algorithm, threads)


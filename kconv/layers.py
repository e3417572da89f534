"""kconv's Keras 3 layers: drop-ins for keras.layers.Conv1D / Conv2D running on kconv's CPU kernels.

    import kconv
    x = kconv.Conv2D(32, 3, padding="same", activation="relu")(x)     # was keras.layers.Conv2D

The layers subclass keras.layers.Conv1D / Conv2D: every argument, default, weight (name, shape, order),
error, get_config entry and output shape is Keras's own; only the convolution runs on kconv (kconv.tf_ops).
Two more arguments: `algorithm` ("auto", "direct", "winograd", "winograd2/4/6"; see kconv.ops) and `threads` (None = kconv's
setting). They need the TensorFlow backend. Bias and the activation (relu, relu6, leaky_relu, elu, selu,
sigmoid, tanh, silu/swish, gelu with Keras's defaults) are fused into kconv's op; any other activation is
applied after it, as Keras does. The op is kconv's native TensorFlow op (kconv.tf_ops), so:

  * `jit_compile=True` falls back to jit_compile=False with a warning (supports_jit = False);
  * `model.export()` writes a SavedModel that runs in any process that has imported kconv; for a
    kconv-free SavedModel (TF Serving, TFLite), export `kconv.to_keras(model)`.

`.keras` files save and load (the layers are registered as "kconv>Conv1D" / "kconv>Conv2D"; import kconv
before keras.models.load_model).
"""
import keras

from . import tf_ops

__all__ = ["Conv1D", "Conv2D"]

_TF_LAYOUTS = {1: {"channels_last": "NWC", "channels_first": "NCW"},
               2: {"channels_last": "NHWC", "channels_first": "NCHW"}}


def _fusable_activations():
    """Keras's activation functions that kconv fuses into its forward pass, by the function Keras stores."""
    fused = {keras.activations.get(name): name for name in tf_ops.ACTIVATIONS}
    fused[keras.activations.get("swish")] = "silu"
    fused[keras.activations.get(None)] = "linear"
    return fused


_FUSED = _fusable_activations()


class _KconvConv:
    """What kconv's layers add to Keras's: the convolution itself, and `algorithm` / `threads`."""

    def _kconv_init(self, algorithm, threads):
        if keras.backend.backend() != "tensorflow":
            raise RuntimeError(f"kconv's Keras layers need the TensorFlow backend, Keras is running on "
                               f"{keras.backend.backend()!r}")
        tf_ops.check_algorithm(algorithm)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self.algorithm = algorithm
        self.threads = threads
        self.supports_jit = False     # XLA cannot compile kconv's ops

    def _kconv_op(self, inputs, kernel, bias=None, activation=None):
        padding = self.padding.upper()         # 'valid' / 'same' / 'causal' (1-D)
        op = tf_ops.conv1d if self.rank == 1 else tf_ops.conv2d
        return op(inputs, kernel, tuple(self.strides), padding, data_format=_TF_LAYOUTS[self.rank][self.data_format],
                  dilations=tuple(self.dilation_rate), algorithm=self.algorithm, threads=self.threads, bias=bias,
                  activation=activation)

    def convolution_op(self, inputs, kernel):
        return self._kconv_op(inputs, kernel)

    def call(self, inputs):
        # Keras's BaseConv.call is conv -> + bias -> activation; kconv fuses all three into one op when it
        # knows the activation (Keras's own function, with its defaults), else applies it after. Conv1D's
        # 'causal' padding is native too, so both ranks go through the same op.
        fused = _FUSED.get(self.activation)
        outputs = self._kconv_op(inputs, self.kernel, self.bias if self.use_bias else None, fused)
        if fused is None and self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"algorithm": self.algorithm, "threads": self.threads})
        return config


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

"""kconv's Keras 3 layers: drop-ins for keras.layers.Conv1D / Conv2D running on kconv's CPU kernels.

    import kconv
    x = kconv.Conv2D(32, 3, padding="same", activation="relu")(x)     # was keras.layers.Conv2D

The layers subclass keras.layers.Conv1D / Conv2D: every argument, default, weight (name, shape, order),
error, get_config entry and output shape is Keras's own; only the convolution runs on kconv (kconv.tf_ops).
Two more arguments: `algorithm` ("auto", "direct", "winograd", "winograd2/4/6"; see kconv.ops) and `threads` (None = kconv's
setting). They need the TensorFlow backend. The convolution is a numpy function, so:

  * `jit_compile=True` falls back to jit_compile=False with a warning (supports_jit = False);
  * a SavedModel / `model.export()` cannot contain it: convert with `kconv.to_keras(model)` first.

`.keras` files save and load (the layers are registered as "kconv>Conv1D" / "kconv>Conv2D"; import kconv
before keras.models.load_model).
"""
import keras
from keras import ops as kops

from . import tf_ops

__all__ = ["Conv1D", "Conv2D"]

_TF_LAYOUTS = {1: {"channels_last": "NWC", "channels_first": "NCW"},
               2: {"channels_last": "NHWC", "channels_first": "NCHW"}}


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
        self.supports_jit = False     # a numpy function cannot be compiled by XLA

    def convolution_op(self, inputs, kernel):
        padding = self.padding.upper()         # 'valid' / 'same' / 'causal' (1-D)
        op = tf_ops.conv1d if self.rank == 1 else tf_ops.conv2d
        return op(inputs, kernel, tuple(self.strides), padding, data_format=_TF_LAYOUTS[self.rank][self.data_format],
                  dilations=tuple(self.dilation_rate), algorithm=self.algorithm, threads=self.threads)

    def call(self, inputs):
        # Keras's BaseConv.call (Conv1D.call pads for 'causal' and calls ops.conv itself; kconv does causal
        # padding natively, so both ranks go through convolution_op).
        outputs = self.convolution_op(inputs, self.kernel)
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = kops.add(outputs, kops.reshape(self.bias, bias_shape))
        if self.activation is not None:
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

"""kconv.BatchNormalization: keras.layers.BatchNormalization as one kconv op each way.

Keras 3 builds batch normalization out of TensorFlow's elementwise ops: the batch's moments (Mean,
SquaredDifference, Mean), then x * inv + (beta - mean * inv) (Rsqrt, Mul, Mul, Sub, Mul, Add), and a backward
pass of about as many ops again, each one a trip through memory and a wake-up of TensorFlow's thread pool. In
a CNN with a BatchNorm after every convolution (ResNet, MobileNet) those ops take about half of a training
step on 2 cores, as much as the convolutions. Here the forward is one op (KconvBatchNorm: the moments, then
y, two passes over x) and so is the backward (KconvBatchNormGrad: two sums, then dx), on kconv's kernel
(pyx/batch_norm.pxi: float64 sums, the same bits for any thread count).

TensorFlow's own fused op (FusedBatchNormV3, which tf.keras 2 used) would do the same two passes; kconv's
kernel is used instead so that the layer's sums are float64 and its results independent of the thread count
like the rest of kconv, and readable beside the convolutions.

In inference inside a graph (predict, a SavedModel's serving function), a BatchNorm whose input comes straight
from one of kconv's convolutions (Conv1D/2D, Depthwise, Separable, with a linear activation) costs no pass of
its own: gamma * (conv - mean) / sqrt(variance + epsilon) + beta is the same convolution with its filters
scaled per output channel and a bias, so the layer traces that convolution instead and the original one is
left unused (pruned). It stays differentiable (frozen-BatchNorm fine-tuning gets the same gradients). A
convolution whose output another layer also reads, traced after the BatchNorm, then runs twice: once folded,
once for that reader (same values, more time).

It is keras.layers.BatchNormalization in every other respect: arguments, weights (gamma, beta, moving_mean,
moving_variance, in that order), config, the moving-average update (Keras's, with the biased batch variance),
results to rounding. kconv's op runs where it gives Keras's result: features on the last axis (Keras's
default), inputs of rank 2 or more, float32 or float64 (float16 / bfloat16 computed in float32, as Keras
does), no mask, no renorm, not synchronized, and the op library loaded; any other call runs Keras's own code.
"""
import keras
import tensorflow as tf

from . import _fold, _oplib, _threads

__all__ = ["BatchNormalization"]


def batch_norm(x, gamma, beta, mean, variance, epsilon=1e-3, training=True, threads=0):
    """y = gamma * (x - m) / sqrt(v + epsilon) + beta over x's last axis, differentiable in x, gamma and beta.
    training: m, v are the batch's mean and biased variance (the `mean` and `variance` arguments are not read);
    else m, v = mean, variance (constants). Returns (y, m, v). Needs kconv's op library."""
    lib = _oplib.load()
    if lib is None:
        raise RuntimeError("kconv.normalization.batch_norm needs kconv's TensorFlow op library "
                           f"({_oplib.info()['reason']})")

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        y, m, v, inv = lib.kconv_batch_norm(x, gamma, beta, mean, variance, epsilon=epsilon, training=training,
                                            threads=threads)

        def grad(dy, dm=None, dv=None):
            # m and v are statistics for the moving averages: no gradient flows back through them.
            return lib.kconv_batch_norm_grad(dy, x, m, inv, gamma, training=training, threads=threads)
        return (y, tf.stop_gradient(m), tf.stop_gradient(v)), grad

    return normalize(x, gamma, beta)


@keras.saving.register_keras_serializable(package="kconv")
class BatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization on kconv's fused batch-norm op (see the module's docstring); plus
    `threads` (None = kconv's setting), as kconv's convolution layers."""

    _kconv_args = ("threads",)     # kconv's own config entries (kconv.serving passes these on in convert)

    def __init__(self, *args, threads=None, **kwargs):
        super().__init__(*args, **kwargs)
        _threads.check(threads)
        self.threads = threads

    def get_config(self):
        config = super().get_config()
        config["threads"] = self.threads
        return config

    def _on_kconv(self, inputs, mask):
        """Whether this call runs kconv's op and gives Keras's result."""
        rank = len(inputs.shape)
        return (mask is None and not self.renorm and not self.synchronized and rank >= 2
                and self.axis in (-1, rank - 1) and inputs.shape[-1] is not None
                and keras.backend.standardize_dtype(inputs.dtype) in ("float32", "float64", "float16", "bfloat16")
                and _oplib.load() is not None)

    def call(self, inputs, training=None, mask=None):
        if not self._on_kconv(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        dtype = keras.backend.result_type(inputs.dtype, "float32")   # as Keras: half precision in float32
        x = tf.cast(inputs, dtype)
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, dtype) if self.scale else tf.ones([channels], dtype)
        beta = tf.cast(self.beta, dtype) if self.center else tf.zeros([channels], dtype)
        moving_mean = tf.cast(self.moving_mean, dtype)
        moving_variance = tf.cast(self.moving_variance, dtype)
        training = bool(training) and self.trainable
        conv = None if training else _fold.producing_conv(inputs)
        if conv is not None:
            # Inference right after one of kconv's convolutions (a graph, e.g. predict): y = a * conv + shift
            # is the convolution with its filters scaled by a and a bias, so the normalization costs no pass.
            scale = gamma * tf.math.rsqrt(moving_variance + self.epsilon)
            return tf.cast(_fold.conv_again(conv, scale, beta - moving_mean * scale), self.compute_dtype)
        y, mean, variance = batch_norm(x, gamma, beta, moving_mean, moving_variance, self.epsilon, training,
                                       self.threads or 0)
        if training:
            self.moving_mean.assign(tf.cast(moving_mean * self.momentum + mean * (1.0 - self.momentum),
                                            self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(moving_variance * self.momentum + variance * (1.0 - self.momentum),
                                                self.moving_variance.dtype))
        return tf.cast(y, self.compute_dtype)

"""kconv.ReLU: keras.layers.ReLU, folded into the kconv convolution before it where it can be.

ReLU (and ReLU6: max_value=6) right after one of kconv's convolutions with a linear output (a Conv2D without
activation, or one whose inference BatchNorm was folded into it: kconv.normalization) is a pass over the
output that kconv's op can do in its store instead: inside a graph this layer traces the convolution again
with the activation fused and the first node is pruned (kconv._fold). Training included: the fused op's
gradient is kconv's own. Anywhere else (eager calls, another producer, a negative slope or threshold, other
max values) it runs Keras's own code. Same arguments, config and results as keras.layers.ReLU.
"""
import keras

from . import _fold

__all__ = ["ReLU"]


@keras.saving.register_keras_serializable(package="kconv")
class ReLU(keras.layers.ReLU):
    """keras.layers.ReLU, fused into a preceding kconv convolution inside a graph (see the module's docstring)."""

    _kconv_args = ()

    def _fused_name(self):
        """kconv's name for this activation ("relu" / "relu6"), or None where kconv has none."""
        if self.negative_slope != 0 or self.threshold != 0:
            return None
        if self.max_value is None:
            return "relu"
        return "relu6" if float(self.max_value) == 6.0 else None

    def call(self, inputs):
        activation = self._fused_name()
        conv = _fold.producing_conv(inputs) if activation is not None else None
        if conv is None:
            return super().call(inputs)
        return keras.ops.cast(_fold.conv_again(conv, activation=activation), self.compute_dtype)

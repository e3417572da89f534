"""Serving a model that uses kconv layers.

`model.export(path)` of a kconv model writes a SavedModel with kconv's native ops in it: it loads and runs
in any process that has imported kconv (tf.saved_model.load; the loading process needs kconv installed).
For a SavedModel with no kconv in it (TF Serving, TFLite, ONNX converters, machines without kconv),
`to_keras(model)` returns a copy of the model in which every kconv layer is replaced by the equivalent
keras.layers layer with the same weights:

    serving_model = kconv.to_keras(model)
    serving_model.export("exported/")          # a SavedModel with no kconv in it
"""
import keras

from . import layers as _layers

__all__ = ["to_keras"]

_KERAS_TWINS = {_layers.Conv1D: keras.layers.Conv1D, _layers.Conv2D: keras.layers.Conv2D}
_KCONV_ONLY = ("algorithm", "threads")


def _keras_twin(layer):
    """The keras.layers layer equivalent to a kconv layer (same config, name and dtype policy; unbuilt)."""
    config = {k: v for k, v in layer.get_config().items() if k not in _KCONV_ONLY}
    return _KERAS_TWINS[type(layer)].from_config(config)


def _clone_layer(layer):
    if type(layer) in _KERAS_TWINS:
        return _keras_twin(layer)
    return layer.__class__.from_config(layer.get_config())


def _contains_kconv(model):
    return any(type(layer) in _KERAS_TWINS or (isinstance(layer, keras.Model) and _contains_kconv(layer))
               for layer in model.layers)


def to_keras(model):
    """A copy of `model` (Sequential or functional, nested models included) with kconv layers swapped for
    keras.layers.Conv1D / Conv2D; all weights (of every layer) are copied. A kconv layer on its own is
    converted too. The original model is not changed."""
    if type(model) in _KERAS_TWINS:
        twin = _keras_twin(model)
        if model.built:
            twin.build(_built_shape(model))
            twin.set_weights(model.get_weights())
        return twin
    if not isinstance(model, keras.Model):
        raise TypeError(f"to_keras expects a keras.Model or a kconv layer, got {type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(f"to_keras converts Sequential and functional models; {type(model).__name__} is a "
                         f"subclassed model: build it with keras.layers.Conv1D/Conv2D instead of kconv's, "
                         f"then set_weights(...) from the trained model (the weights are the same)")
    if not model.built:
        raise ValueError("to_keras needs a built model (call it on data, or give it an Input) to copy its weights")
    clone = keras.models.clone_model(model, clone_function=_clone_layer, recursive=True)
    clone.set_weights(model.get_weights())
    assert not _contains_kconv(clone), "to_keras left a kconv layer in the model"
    return clone


def _is_functional(model):
    return type(model).__name__ == "Functional"     # what keras.Model(inputs, outputs) builds


def _built_shape(layer):
    """An input shape to build a twin of a built layer with (only the channels matter)."""
    kernel_in = layer.kernel.shape[-2] * layer.groups
    shape = [None] * (layer.rank + 2)
    shape[-1 if layer.data_format == "channels_last" else 1] = kernel_in
    return tuple(shape)

"""Switching a model between kconv's layers and Keras's: `convert` and `to_keras`.

`convert(model)` returns a copy of a Keras model in which every convolution layer that kconv has a twin for
(keras.layers.Conv2D -> kconv.Conv2D, ...) is replaced by that twin, with the same config and weights, and so
is every keras.layers.BatchNormalization (kconv.BatchNormalization: one kconv op each way) and ReLU
(kconv.ReLU: folded into a kconv convolution before it): the one-call version of changing the import. `to_keras(model)` is its inverse:

    fast = kconv.convert(model)                  # keras.layers convolutions -> kconv's, same weights
    plain = kconv.to_keras(fast)                 # and back

Serving: `model.export(path)` of a kconv model writes a SavedModel with kconv's native ops in it: it loads and
runs in any process that has imported kconv (tf.saved_model.load; the loading process needs kconv installed).
For a SavedModel with no kconv in it (TF Serving, TFLite, ONNX converters, machines without kconv), export
the model `to_keras` returns:

    serving_model = kconv.to_keras(model)
    serving_model.export("exported/")          # a SavedModel with no kconv in it

The twins are found, not listed: every layer class in kconv.layers.__all__ is the twin of the public
keras.layers class it subclasses (the first one in its method resolution order), so a layer added to
kconv.layers is converted both ways with no change here. See `twins()`.
"""
import keras

from . import _threads
from . import layers as _layers

__all__ = ["convert", "to_keras", "twins"]

# Config entries kconv's layers add to their Keras twin's.
_KCONV_ONLY = ("algorithm", "threads")


def _keras_base(cls):
    """The public keras.layers class that kconv layer class `cls` subclasses (nearest first), or None."""
    for base in cls.__mro__[1:]:
        if getattr(keras.layers, base.__name__, None) is base:
            return base
    return None


def twins():
    """{kconv layer class: its keras.layers twin} for every layer class in kconv.layers.__all__.

    A class whose Keras twin cannot be found (no public keras.layers class among its bases) is left out;
    the tests check that none is."""
    table = {}
    for name in _layers.__all__:
        cls = getattr(_layers, name, None)
        if isinstance(cls, type) and issubclass(cls, keras.layers.Layer):
            base = _keras_base(cls)
            if base is not None:
                table[cls] = base
    return table


_TO_KERAS = twins()                                             # kconv class -> keras.layers class
_TO_KCONV = {keras_cls: cls for cls, keras_cls in _TO_KERAS.items()}  # keras.layers class -> kconv class


def _twin(layer, cls, extra):
    """An unbuilt `cls` with `layer`'s config (name and dtype policy included) less kconv's own entries, plus
    `extra`; built like `layer` and given its weights if `layer` is built and has weights (a layer without
    weights, such as ReLU, builds on its first call)."""
    config = {k: v for k, v in layer.get_config().items() if k not in _KCONV_ONLY}
    extra = {k: v for k, v in extra.items() if k in getattr(cls, "_kconv_args", ())}  # BatchNorm: no algorithm
    twin = cls.from_config({**config, **extra})
    if layer.built and layer.weights:
        build_config = layer.get_build_config()
        if build_config:
            twin.build_from_config(build_config)
        else:
            twin.build(_built_shape(layer))
        twin.set_weights(layer.get_weights())
    return twin


def _built_shape(layer):
    """An input shape to build a twin of a built layer with, from the input spec the layer set when it was
    built (Keras's convolutions record the channel axis there); used only where the layer has no build
    config."""
    spec = layer.input_spec
    spec = spec[0] if isinstance(spec, (list, tuple)) else spec
    ndim = None if spec is None else (spec.ndim or spec.min_ndim)
    if ndim is None:
        raise ValueError(f"cannot tell the input shape {layer.name!r} was built with (no build config, no input "
                         f"spec); build the converted layer yourself, then set_weights(layer.get_weights())")
    shape = [None] * ndim
    for axis, size in (spec.axes or {}).items():
        shape[axis] = size
    return tuple(shape)


def _walk(model):
    """Every layer of a model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def _contains(model, classes):
    return any(type(layer) in classes for layer in _walk(model))


def _is_functional(model):
    return type(model).__name__ == "Functional"     # what keras.Model(inputs, outputs) builds


def _qualname(cls):
    return ("kconv." if cls.__module__.startswith("kconv") else "keras.layers.") + cls.__name__


def _swap(model, table, extra, what):
    """The copy of `model` with every layer whose exact class is a key of `table` swapped for its twin."""
    if type(model) in table:                                    # a single layer
        return _twin(model, table[type(model)], extra)
    if not isinstance(model, keras.Model):
        raise TypeError(f"{what} expects a keras.Model (Sequential or functional) or a layer it converts ("
                        f"{', '.join(map(_qualname, table))}), got {type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or _is_functional(model)):
        raise ValueError(_subclassed_message(model, what, table))
    if not model.built:
        raise ValueError(f"{what} needs a built model to copy its weights: give it a keras.Input (or call it "
                         f"once on data, or model.build(input_shape)) first")

    clone = _copy(model, _layer_cloner(table, extra, what))
    clone.set_weights(model.get_weights())
    assert not _contains(clone, table), f"{what} left a layer of a converted class in the model"
    return clone


def _layer_cloner(table, extra, what):
    """clone_model's clone_function: twins for the layers of `table`, copies of the others, nested
    Sequential and functional models copied the same way; a layer shared by several models (or called
    twice) is copied once."""
    copies = {}

    def clone_layer(layer):
        if id(layer) not in copies:
            if type(layer) in table:
                copies[id(layer)] = _twin(layer, table[type(layer)], extra)
            elif isinstance(layer, keras.Sequential) or _is_functional(layer):
                copies[id(layer)] = _copy(layer, clone_layer)
            elif isinstance(layer, keras.Model) and _contains(layer, table):
                raise ValueError(_subclassed_message(layer, what, table, nested=True))
            else:
                copies[id(layer)] = layer.__class__.from_config(layer.get_config())
        return copies[id(layer)]

    return clone_layer


def _copy(model, clone_layer):
    """keras.models.clone_model, keeping the names of a functional model's inputs (clone_model names the
    new inputs after their tensors: an input named by Keras would change name)."""
    if isinstance(model, keras.Sequential):                     # clone_model keeps its Input's name
        return keras.models.clone_model(model, clone_function=clone_layer)
    inputs = keras.tree.map_structure(_input_like, model.input)
    return keras.models.clone_model(model, clone_function=clone_layer, input_tensors=inputs)


def _input_like(tensor):
    history = getattr(tensor, "_keras_history", None)          # (the InputLayer, 0, 0) for a model input
    name = history[0].name if history is not None else tensor.name
    return keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, sparse=tensor.sparse, name=name)


def _subclassed_message(model, what, table, nested=False):
    found = sorted({type(layer) for layer in _walk(model) if type(layer) in table}, key=lambda cls: cls.__name__)
    swaps = ", ".join(f"{_qualname(table[cls])} where it uses {_qualname(cls)}" for cls in found)
    where = " (nested in the model)" if nested else ""
    return (f"{what} converts Sequential and functional models (and models nested in them); "
            f"{model.name!r}{where} is a subclassed model ({type(model).__name__}), whose layers Keras cannot "
            f"rebuild. Convert it by hand: build the same model with {swaps or 'the twin layers'}, call it "
            f"once on data (or build it) so it has its weights, then new_model.set_weights(model.get_weights()) "
            f"from the trained model (the weights of twin layers are the same, in the same order)")


def convert(model, *, algorithm="auto", threads=None, convolutions_only=False):
    """A copy of `model` that runs its convolutions on kconv: every layer whose class is exactly a
    keras.layers class kconv has a twin for (keras.layers.Conv1D -> kconv.Conv1D, Conv2D -> kconv.Conv2D, and
    whatever else `twins()` lists) becomes that twin, with the same config (name, dtype policy, trainable
    included) and the same weights. Every other layer is copied with its weights.
    convolutions_only: swap only the convolution layers, keeping Keras's BatchNormalization and ReLU (by
    default they become kconv.BatchNormalization, one kconv op each way, and kconv.ReLU, which folds into a
    kconv convolution before it).

    model: a Sequential or functional model, built (it has an Input, or was called on data); models nested in
    it as layers are converted too. A single layer works as well (converted, built and given its weights if
    it is built). A subclassed model raises ValueError: Keras cannot rebuild its layers; build it with
    kconv's layers instead and set_weights from the trained model.
    algorithm, threads: given to every converted layer (see kconv.Conv2D); "auto" and None are kconv's
    defaults.

    Classes are matched exactly (`type(layer) is keras.layers.Conv2D`), not with isinstance: a subclass of a
    Keras layer (your own, with its own call or config) is kept as it is. So is a convolution inside a layer
    that is not a model (a keras.layers.TimeDistributed, a custom layer). The original model is not changed.
    As with keras.models.clone_model, the copy is compiled like the original where the original was compiled
    (with a fresh optimizer state); compile it yourself otherwise. `to_keras` is the inverse.
    """
    from . import tf_ops
    tf_ops.check_algorithm(algorithm)
    _threads.check(threads)
    if not isinstance(convolutions_only, bool):
        raise ValueError(f"convolutions_only must be True or False, got {convolutions_only!r}")
    table = {k: v for k, v in _TO_KCONV.items()
             if not convolutions_only or k not in (keras.layers.BatchNormalization, keras.layers.ReLU)}
    return _swap(model, table, {"algorithm": algorithm, "threads": threads}, "convert")


def to_keras(model):
    """A copy of `model` (Sequential or functional, nested models included) with every kconv layer swapped
    for its keras.layers twin (kconv.Conv2D -> keras.layers.Conv2D, ...: see `twins()`), same config less
    `algorithm` and `threads`; all weights (of every layer) are copied. A kconv layer on its own is converted
    too. The original model is not changed. The inverse of `convert`."""
    return _swap(model, _TO_KERAS, {}, "to_keras")

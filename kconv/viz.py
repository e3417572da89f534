"""Pictures of what a convnet learned (matplotlib, PNG; no display needed).

    from kconv import viz
    viz.filters_2d(model, "filters.png")                          # first Conv2D layer's filters as a grid
    viz.text_filters(model, vocabulary, token_ids, "text.png")    # Conv1D filters: heat maps of their top n-grams
    viz.feature_maps(model, datasets.photo(), "maps.png")         # a photo through the model's conv layers

Figures are drawn on matplotlib's Agg canvas directly (matplotlib.figure.Figure, not pyplot): no window,
no global backend switch, safe in threads and on headless machines. Each function writes `path` (creating
its folder) and returns it. They work with kconv.Conv1D/Conv2D and keras.layers.Conv1D/Conv2D alike.
"""
import os

import numpy as np

__all__ = ["filters_2d", "text_filters", "feature_maps", "conv_layers"]


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("kconv.viz needs matplotlib: pip install matplotlib "
                          "(or pip install \"kconv[examples]\")") from exc
    return Figure(figsize=(width, height), dpi=100)


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight")
    return path


def conv_layers(model, rank=None):
    """The model's convolution layers (keras ConvND and kconv ConvND), in order; nested models included."""
    import keras
    kinds = {1: (keras.layers.Conv1D,), 2: (keras.layers.Conv2D,)}.get(rank, (keras.layers.Conv1D,
                                                                           keras.layers.Conv2D))
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(conv_layers(layer, rank))
        elif isinstance(layer, kinds):
            found.append(layer)
    return found


def _layer(model, layer, rank):
    if layer is None:
        layers = conv_layers(model, rank)
        if not layers:
            raise ValueError(f"the model has no Conv{rank}D layer")
        return layers[0]
    if isinstance(layer, str):
        return model.get_layer(layer)
    return layer


# ----------------------------------------------------------------------------------------- 2-D filters

def filters_2d(model, path, layer=None, max_filters=64, title=None):
    """The filters of a Conv2D layer (default: the model's first) as an image grid: one tile per output
    channel, the input channels averaged unless there are 3 (then shown as RGB). Each tile is scaled on
    its own, zero at the middle grey (blue negative, red positive for one channel)."""
    conv = _layer(model, layer, 2)
    kernel = np.asarray(conv.kernel)                     # (kh, kw, cin, K)
    kh, kw, cin, k = kernel.shape
    n = min(k, max_filters)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = _figure(1.1 * cols, 1.1 * rows + 0.5)
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        w = kernel[:, :, :, i]
        if cin == 3:
            scale = np.abs(w).max() or 1.0
            ax.imshow(0.5 + 0.5 * w / scale, interpolation="nearest")
        else:
            w = w.mean(axis=2)
            scale = np.abs(w).max() or 1.0
            ax.imshow(w, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(i), fontsize=6, pad=1)
    fig.suptitle(title or f"{conv.name}: {n} of {k} filters, {kh}x{kw}", fontsize=9)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------- 1-D filters

def _token(vocabulary, i):
    word = vocabulary[i] if 0 <= i < len(vocabulary) else "?"
    return "·" if i == 0 or word == "" else word


def _top_grams(a, ids, ks, top):
    """The `top` distinct n-grams with the highest activations in a (docs, positions): [(ids, value)].
    n-grams with padding (0) or out-of-vocabulary (1) tokens only come if there are not enough others."""
    order = np.argsort(-a, axis=None)[:50 * top + 1000]
    for allowed in (lambda g: min(g) > 1, lambda g: max(g) > 0):
        grams, seen = [], set()
        for flat in order:
            d, p = np.unravel_index(flat, a.shape)
            gram = tuple(int(t) for t in ids[d, p:p + ks])
            if gram in seen or not allowed(gram):
                continue
            seen.add(gram)
            grams.append((gram, float(a[d, p])))
            if len(grams) == top:
                return grams
        if grams:
            return grams
    return [(tuple(int(t) for t in ids[0, :ks]), float(a[0, 0]))]


def text_filters(model, vocabulary, token_ids, path, layer=None, n_filters=8, top=5, max_docs=400,
                 embedding=None):
    """For `n_filters` filters of a Conv1D layer over an embedding (default: the model's first Conv1D),
    the `top` distinct n-grams of `token_ids` that excite each filter most, drawn as heat maps: one panel
    per filter, a row per n-gram, a column per tap, each cell's colour the tap's share of the activation
    (embedding of that word . filter tap) and its text the word. The filters shown are those with the
    highest peak activations.

    `vocabulary`: list of words indexed by token id (TextVectorization.get_vocabulary()); `token_ids`:
    (docs, length) int array of model inputs; `embedding`: the Embedding layer (default: the model's)."""
    import keras
    conv = _layer(model, layer, 1)
    if embedding is None:
        embeddings = [l for l in model.layers if isinstance(l, keras.layers.Embedding)]
        if not embeddings:
            raise ValueError("the model has no Embedding layer; pass embedding=")
        embedding = embeddings[0]
    table = np.asarray(embedding.embeddings)                     # (vocab, dim)
    kernel = np.asarray(conv.kernel)                              # (k, dim, filters)
    bias = np.asarray(conv.bias) if conv.use_bias else np.zeros(kernel.shape[-1], np.float32)
    ks = kernel.shape[0]
    ids = np.asarray(token_ids)[:max_docs]
    if ids.ndim != 2 or ids.size == 0:
        raise ValueError(f"token_ids must be a non-empty (docs, length) array, got shape {ids.shape}")
    # Pre-activations straight from the weights (the conv layer's own forward pass on the embedded docs).
    emb = table[ids]                                              # (docs, L, dim)
    acts = np.asarray(conv.convolution_op(emb.astype(np.float32), conv.kernel)) + bias   # (docs, L-k+1, F)
    peak = acts.max(axis=(0, 1))
    n = min(n_filters, kernel.shape[-1])
    chosen = np.argsort(-peak)[:n]
    cols = 2 if n > 1 else 1
    rows = int(np.ceil(n / cols))
    fig = _figure(cols * (1.25 * ks + 1.2), rows * (0.3 * top + 0.75) + 0.5)
    for panel, f in enumerate(chosen):
        grams = _top_grams(acts[:, :, f], ids, ks, top)
        heat = np.array([[table[t] @ kernel[j, :, f] for j, t in enumerate(g)] for g, _ in grams])
        ax = fig.add_subplot(rows, cols, panel + 1)
        scale = np.abs(heat).max() or 1.0
        ax.imshow(heat, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto")
        for r, (g, _) in enumerate(grams):
            for j, t in enumerate(g):
                ax.text(j, r, _token(vocabulary, t), ha="center", va="center", fontsize=7,
                        color="white" if abs(heat[r, j]) > 0.6 * scale else "black")
        ax.set_xticks([])
        ax.set_yticks(range(len(grams)))
        ax.set_yticklabels([f"{v:.2f}" for _, v in grams], fontsize=6)
        ax.set_title(f"filter {f}", fontsize=8, pad=2)
    fig.suptitle(f"{conv.name}: the n-grams that excite {n} of its {kernel.shape[-1]} filters most "
                 f"(colour: each word's share; left: activation)", fontsize=9)
    return _save(fig, path)


# ---------------------------------------------------------------------------------------- feature maps

def _downscale(image, factor):
    if factor <= 1:
        return image
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    image = image[:h, :w]
    return image.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3))


def feature_maps(model, image, path, max_channels=8, downscale=2, title=None):
    """A photo through the model's convolution stack: the photo (converted to the model's input channels:
    grey for one) and, per conv layer, the `max_channels` output maps that vary most (highest standard deviation). The conv and pooling
    layers are applied in order until the first layer that is neither (Flatten, Dense, ...); conv layers
    accept any image size, so the whole photo (downscaled by `downscale`) goes through."""
    import keras
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    image = _downscale(image, downscale)
    channels = model.inputs[0].shape[-1] if getattr(model, "inputs", None) else image.shape[-1]
    if channels == 1 and image.shape[-1] == 3:
        x = (image @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    elif channels == image.shape[-1]:
        x = image
    else:
        raise ValueError(f"the model takes {channels} channels, the image has {image.shape[-1]}")
    shown = x
    x = x[None]
    keep = (keras.layers.Conv2D, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
            keras.layers.BatchNormalization, keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout)
    maps = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(layer, keep):
            break
        x = layer(x)
        if isinstance(layer, keras.layers.Conv2D):
            maps.append((layer.name, np.asarray(x)[0]))
    if not maps:
        raise ValueError("the model starts with no Conv2D layer")
    cols = max_channels
    rows = len(maps) + 1
    aspect = shown.shape[0] / shown.shape[1]
    fig = _figure(1.6 * cols, 1.6 * cols * aspect * rows / cols * 1.0 + 1.5)
    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(shown[..., 0] if shown.shape[-1] == 1 else shown, cmap="gray" if shown.shape[-1] == 1 else None)
    ax.set_title(f"input {shown.shape[1]}x{shown.shape[0]}", fontsize=7)
    ax.axis("off")
    for r, (name, m) in enumerate(maps, start=1):
        strongest = np.argsort(-m.std(axis=(0, 1)))[:max_channels]      # the most varied maps
        for c, ch in enumerate(strongest):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.imshow(m[:, :, ch], cmap="magma")
            ax.axis("off")
            ax.set_title(f"{name}[{ch}] {m.shape[1]}x{m.shape[0]}" if c == 0 else f"[{ch}]", fontsize=6, pad=1)
    fig.suptitle(title or "A photo through the conv layers (the most varied channels of each)", fontsize=9)
    return _save(fig, path)

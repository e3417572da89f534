"""Full training steps: the same small Keras models built twice, once with kconv's layers and once with
keras.layers, same weights; model.train_on_batch timed interleaved, inputs rotated, medians."""
import numpy as np

from .timing import interleaved


def image_cnn(conv2d, seed=0):
    """The README's example: a small MNIST CNN."""
    import keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        conv2d(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        conv2d(64, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])


def text_cnn(conv1d, length=400, vocab=5000, dim=300, seed=0):
    """Kim (2014): embeddings -> Conv1D k=3, 4, 5 x 100 maps -> max over time -> concatenate -> dense."""
    import keras
    keras.utils.set_random_seed(seed)
    tokens = keras.Input((length,), dtype="int32")
    emb = keras.layers.Embedding(vocab, dim)(tokens)
    pooled = [keras.layers.GlobalMaxPooling1D()(conv1d(100, k, activation="relu")(emb)) for k in (3, 4, 5)]
    out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Concatenate()(pooled))
    return keras.Model(tokens, out)


MODELS = {
    "image-cnn (README model, 28x28x1)": ("image", 64),
    "text-cnn (Kim 2014, 400 tokens)": ("text", 32),
}


def time_models(repeats, warmup, batch=None, quick=False):
    import keras
    import kconv
    rows = []
    for name, (kind, default_batch) in MODELS.items():
        b = batch or (max(8, default_batch // 4) if quick else default_batch)
        rng = np.random.default_rng(0)
        if kind == "image":
            ours, theirs = image_cnn(kconv.Conv2D), image_cnn(keras.layers.Conv2D)
            data = [(rng.standard_normal((b, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, b)) for _ in range(3)]
            loss = "sparse_categorical_crossentropy"
        else:
            ours, theirs = text_cnn(kconv.Conv1D), text_cnn(keras.layers.Conv1D)
            data = [(rng.integers(0, 5000, (b, 400)).astype(np.int32), rng.integers(0, 2, b).astype(np.float32))
                    for _ in range(3)]
            loss = "binary_crossentropy"
        ours.set_weights(theirs.get_weights())
        want = theirs.predict(data[0][0], verbose=0)
        got = ours.predict(data[0][0], verbose=0)
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        for m in (ours, theirs):
            m.compile(keras.optimizers.SGD(1e-3), loss)
        state = {"i": 0}

        def step(model):
            state["i"] = (state["i"] + 1) % 3
            model.train_on_batch(*data[state["i"]])
        times = interleaved({"kconv": lambda: step(ours), "tf": lambda: step(theirs)},
                            repeats=repeats, warmup=max(warmup, 2))
        kc_t, tf_t = float(np.median(times["kconv"])), float(np.median(times["tf"]))
        rows.append(dict(set="model", layer=name, batch=b, pass_="train_on_batch", kconv_ms=kc_t * 1e3,
                         tf_ms=tf_t * 1e3, speedup=tf_t / kc_t, gflops=None, roof_pct=None,
                         algorithm="auto (per layer)", max_err=err))
    return rows

"""The benchmark's layers, as data.

A layer is (name, batch, spatial, C, K, kernel, stride, padding): spatial is (H, W) for a 2-D layer and (W,)
for a 1-D one; padding is "SAME" or "VALID" as in tf.nn. `batch` is the set's default; `--batch` replaces it.
Each set lists the *distinct* convolution geometries of its network once (ResNet-50 repeats most of its
layers; they are timed once here). Sizes are those of the networks at their usual input size.
"""

# VGG-16 (Simonyan & Zisserman 2014) at 224x224: 13 conv layers, 9 distinct; all 3x3, stride 1, SAME.
VGG16 = [
    ("vgg16 3x3 224x224 3->64", 4, (224, 224), 3, 64, 3, 1, "SAME"),
    ("vgg16 3x3 224x224 64->64", 4, (224, 224), 64, 64, 3, 1, "SAME"),
    ("vgg16 3x3 112x112 64->128", 4, (112, 112), 64, 128, 3, 1, "SAME"),
    ("vgg16 3x3 112x112 128->128", 4, (112, 112), 128, 128, 3, 1, "SAME"),
    ("vgg16 3x3 56x56 128->256", 4, (56, 56), 128, 256, 3, 1, "SAME"),
    ("vgg16 3x3 56x56 256->256", 4, (56, 56), 256, 256, 3, 1, "SAME"),
    ("vgg16 3x3 28x28 256->512", 4, (28, 28), 256, 512, 3, 1, "SAME"),
    ("vgg16 3x3 28x28 512->512", 4, (28, 28), 512, 512, 3, 1, "SAME"),
    ("vgg16 3x3 14x14 512->512", 4, (14, 14), 512, 512, 3, 1, "SAME"),
]

# ResNet-50 (He et al. 2015) as keras.applications.ResNet50 builds it (stride 2 on the first 1x1 of a
# stage's first block): 53 conv layers, 20 distinct. The 7x7 stem is ZeroPadding2D(3) + a VALID conv, so its
# input here is the padded 230x230.
RESNET50 = [
    ("resnet50 7x7/2 230x230 3->64", 4, (230, 230), 3, 64, 7, 2, "VALID"),
    # stage 2, 56x56
    ("resnet50 1x1 56x56 64->64", 4, (56, 56), 64, 64, 1, 1, "VALID"),
    ("resnet50 3x3 56x56 64->64", 4, (56, 56), 64, 64, 3, 1, "SAME"),
    ("resnet50 1x1 56x56 64->256", 4, (56, 56), 64, 256, 1, 1, "VALID"),
    ("resnet50 1x1 56x56 256->64", 4, (56, 56), 256, 64, 1, 1, "VALID"),
    # stage 3, 28x28
    ("resnet50 1x1/2 56x56 256->128", 4, (56, 56), 256, 128, 1, 2, "VALID"),
    ("resnet50 3x3 28x28 128->128", 4, (28, 28), 128, 128, 3, 1, "SAME"),
    ("resnet50 1x1 28x28 128->512", 4, (28, 28), 128, 512, 1, 1, "VALID"),
    ("resnet50 1x1/2 56x56 256->512", 4, (56, 56), 256, 512, 1, 2, "VALID"),
    ("resnet50 1x1 28x28 512->128", 4, (28, 28), 512, 128, 1, 1, "VALID"),
    # stage 4, 14x14
    ("resnet50 1x1/2 28x28 512->256", 4, (28, 28), 512, 256, 1, 2, "VALID"),
    ("resnet50 3x3 14x14 256->256", 4, (14, 14), 256, 256, 3, 1, "SAME"),
    ("resnet50 1x1 14x14 256->1024", 4, (14, 14), 256, 1024, 1, 1, "VALID"),
    ("resnet50 1x1/2 28x28 512->1024", 4, (28, 28), 512, 1024, 1, 2, "VALID"),
    ("resnet50 1x1 14x14 1024->256", 4, (14, 14), 1024, 256, 1, 1, "VALID"),
    # stage 5, 7x7
    ("resnet50 1x1/2 14x14 1024->512", 4, (14, 14), 1024, 512, 1, 2, "VALID"),
    ("resnet50 3x3 7x7 512->512", 4, (7, 7), 512, 512, 3, 1, "SAME"),
    ("resnet50 1x1 7x7 512->2048", 4, (7, 7), 512, 2048, 1, 1, "VALID"),
    ("resnet50 1x1/2 14x14 1024->2048", 4, (14, 14), 1024, 2048, 1, 2, "VALID"),
    ("resnet50 1x1 7x7 2048->512", 4, (7, 7), 2048, 512, 1, 1, "VALID"),
]

# MNIST-size layers: the Keras MNIST convnet (Conv2D(32, 3) -> pool -> Conv2D(64, 3)) and the README's
# example model's second layer (3x3 SAME, 32->64 on the pooled 13x13 map).
MNIST = [
    ("mnist 3x3 28x28 1->32", 64, (28, 28), 1, 32, 3, 1, "VALID"),
    ("mnist 3x3 13x13 32->64", 64, (13, 13), 32, 64, 3, 1, "VALID"),
    ("mnist 3x3 13x13 32->64 same", 64, (13, 13), 32, 64, 3, 1, "SAME"),
]

# Kim (2014) sentence CNN: filter widths 3, 4, 5 x 100 maps over 300-d word vectors; sentences padded to
# 400 tokens here; "narrow" (VALID) convolution as in the paper.
TEXT = [
    ("text k3 400x300->100", 32, (400,), 300, 100, 3, 1, "VALID"),
    ("text k4 400x300->100", 32, (400,), 300, 100, 4, 1, "VALID"),
    ("text k5 400x300->100", 32, (400,), 300, 100, 5, 1, "VALID"),
]

SETS = {"vgg16": VGG16, "resnet50": RESNET50, "mnist": MNIST, "text": TEXT}

# --quick: one layer of each kind at batch 1-16, so the whole run (TF import, roof, scaling, memory,
# models included) takes about a minute on 2 cores.
QUICK = [
    ("vgg16 3x3 28x28 512->512", 1, (28, 28), 512, 512, 3, 1, "SAME"),
    ("resnet50 3x3 14x14 256->256", 2, (14, 14), 256, 256, 3, 1, "SAME"),
    ("resnet50 1x1 14x14 1024->256", 2, (14, 14), 1024, 256, 1, 1, "VALID"),
    ("resnet50 1x1/2 28x28 512->256", 2, (28, 28), 512, 256, 1, 2, "VALID"),
    ("mnist 3x3 13x13 32->64", 16, (13, 13), 32, 64, 3, 1, "VALID"),
    ("text k3 400x300->100", 4, (400,), 300, 100, 3, 1, "VALID"),
    ("text k5 400x300->100", 4, (400,), 300, 100, 5, 1, "VALID"),
]

# --tiny (hidden; the CLI test): two small layers, a few seconds.
TINY = [
    ("tiny 3x3 12x12 16->16", 2, (12, 12), 16, 16, 3, 1, "SAME"),
    ("tiny k3 64x16->16", 2, (64,), 16, 16, 3, 1, "VALID"),
]


def select(spec, quick=False, tiny=False):
    """Layers for --layers SPEC: comma-separated set names (vgg16, resnet50, mnist, text, all) or text that
    layer names contain (e.g. "3x3", "1x1/2"). Without SPEC: all sets, or the quick / tiny set."""
    if tiny:
        base = TINY
    elif quick:
        base = QUICK
    else:
        base = [layer for rows in SETS.values() for layer in rows]
    if not spec:
        return list(base)
    chosen = []
    for part in (p.strip() for p in spec.split(",")):
        if not part or part == "models":
            continue
        if part == "all":
            rows = [layer for rows in SETS.values() for layer in rows]
        elif part in SETS:
            rows = SETS[part] if not (quick or tiny) else [l for l in base if l[0].startswith(part)] or SETS[part]
        else:
            pool = base + [layer for rows in SETS.values() for layer in rows]
            rows = [layer for layer in pool if part in layer[0]]
            if not rows:
                raise ValueError(f"--layers: {part!r} is neither a set ({', '.join(SETS)}, all, models) "
                                 f"nor part of a layer name")
        chosen += [layer for layer in rows if layer not in chosen and layer[0] not in {c[0] for c in chosen}]
    return chosen


def with_batch(layers, batch):
    return [(name, batch) + tuple(rest) for name, _, *rest in layers] if batch else list(layers)

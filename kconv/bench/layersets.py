"""The benchmark's layers, as data.

A `Layer` is one convolution geometry at one batch size: spatial is (H, W) for a 2-D layer and (W,) for a 1-D
one; padding is "SAME", "VALID" or (1-D) "CAUSAL", as in kconv.conv1d / Keras. Names say where a layer comes
from (the network, its input size) and what it is: "resnet20 3x3/2 32x32 16->32" is a 3x3 stride-2
convolution of a 32x32 map from 16 to 32 channels.

The default list (LAYERS) is grouped by the kind of layer a user meets; `--layers GROUP` picks groups:

    first    first layers: C = 1 (MNIST, a time series) and C = 3 (RGB)
    small    C = K = 16 / 32 at 28-56 px (CIFAR nets, the first stages of small nets)
    stride2  3x3 stride 2 and 1x1 stride 2 (ResNet stage entries and projection shortcuts)
    1x1      1x1 convolutions (bottlenecks)
    5x5      5x5 convolutions
    stem     the ImageNet 7x7 stride-2 stem
    text     Kim's sentence CNN, kernel widths 2..7
    tcn      dilated causal k=3 (TCN / WaveNet)
    late     the small late layers, at batch 1-8
    big      big 3x3 layers (VGG / ResNet 56x56x64, 28x28x128, 14x14x256)

Two more sets are there on request only (`--layers vgg16`, `--layers resnet50`): every distinct conv layer
of VGG-16 and of ResNet-50 at 224x224, batch 4.

A third, `--layers mobile`, holds the other layer kinds (`kind` is not "conv"), timed through the Keras
layers (kconv/bench/keraslayers.py) rather than the raw ops; its groups can be asked for alone:

    depthwise  DepthwiseConv2D 3x3, stride 1 and 2, at MobileNet-v1/v2 sizes (112x112x32 ... 14x14x256), batch 8
    separable  SeparableConv2D 3x3, C -> 2C (MobileNet-v1's depthwise + pointwise pairs), the same sizes
    transpose  Conv2DTranspose 2x2 and 3x3, stride 2, at U-Net decoder sizes, batch 8

For these, `c` is the input channels and `k` the output channels (= c for a depthwise layer, whose depth
multiplier is 1); `spatial` is the input's size (a transposed layer's output is `stride` times it).
"""
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Layer:
    name: str
    batch: int
    spatial: tuple
    c: int
    k: int
    kernel: int
    stride: int = 1
    padding: str = "SAME"
    dilation: int = 1
    group: str = ""
    kind: str = "conv"      # conv (tf.nn.conv1d/2d, convs.py) or depthwise, separable, transpose (keraslayers.py)

    @property
    def nd(self):
        return len(self.spatial)

    def to_dict(self):
        d = asdict(self)
        d["spatial"] = list(self.spatial)
        return d

    @classmethod
    def from_dict(cls, d):
        return cls(**dict(d, spatial=tuple(d["spatial"])))

    def with_batch(self, batch):
        return Layer(**dict(asdict(self), batch=batch)) if batch else self


def _L(group, name, batch, spatial, c, k, kernel, stride=1, padding="SAME", dilation=1, kind="conv"):
    return Layer(name, batch, tuple(spatial), c, k, kernel, stride, padding, dilation, group, kind)


LAYERS = [
    # first layers
    _L("first", "mnist 3x3 28x28 1->32", 64, (28, 28), 1, 32, 3, padding="VALID"),
    _L("first", "demo 5x5 28x28 1->32", 64, (28, 28), 1, 32, 5),
    _L("first", "resnet20 3x3 32x32 3->16", 32, (32, 32), 3, 16, 3),
    _L("first", "vgg-cifar 3x3 32x32 3->32", 32, (32, 32), 3, 32, 3),
    _L("first", "tcn k3 512x1->64 causal", 16, (512,), 1, 64, 3, padding="CAUSAL"),
    # C = K = 16 / 32 at 28-56 px
    _L("small", "resnet20 3x3 32x32 16->16", 32, (32, 32), 16, 16, 3),
    _L("small", "3x3 28x28 32->32", 32, (28, 28), 32, 32, 3),
    _L("small", "3x3 56x56 16->16", 8, (56, 56), 16, 16, 3),
    _L("small", "3x3 56x56 32->32", 8, (56, 56), 32, 32, 3),
    # stride 2
    _L("stride2", "resnet20 3x3/2 32x32 16->32", 32, (32, 32), 16, 32, 3, 2),
    _L("stride2", "resnet18 3x3/2 56x56 64->128", 8, (56, 56), 64, 128, 3, 2),
    _L("stride2", "resnet20 1x1/2 32x32 16->32", 32, (32, 32), 16, 32, 1, 2, "VALID"),
    _L("stride2", "resnet18 1x1/2 56x56 64->128", 8, (56, 56), 64, 128, 1, 2, "VALID"),
    # 1x1
    _L("1x1", "resnet50 1x1 56x56 64->256", 8, (56, 56), 64, 256, 1, padding="VALID"),
    _L("1x1", "resnet50 1x1 28x28 512->128", 8, (28, 28), 512, 128, 1, padding="VALID"),
    # 5x5
    _L("5x5", "5x5 14x14 32->64", 32, (14, 14), 32, 64, 5),
    _L("5x5", "5x5 28x28 32->32", 16, (28, 28), 32, 32, 5),
    # the 7x7 stride-2 stem
    _L("stem", "resnet50 7x7/2 224x224 3->64", 4, (224, 224), 3, 64, 7, 2),
    _L("stem", "rgb-stem 7x7/2 128x128 3->32", 16, (128, 128), 3, 32, 7, 2),
    # Kim (2014) sentence CNN over the demo's 128-d embeddings, 400 tokens, 100 maps, "narrow" (VALID)
    *[_L("text", f"kim k{k} 400x128->100", 32, (400,), 128, 100, k, padding="VALID") for k in range(2, 8)],
    # TCN / WaveNet: dilated causal k=3
    _L("tcn", "tcn k3 d1 512x64->64 causal", 16, (512,), 64, 64, 3, padding="CAUSAL"),
    _L("tcn", "tcn k3 d4 512x64->64 causal", 16, (512,), 64, 64, 3, padding="CAUSAL", dilation=4),
    _L("tcn", "tcn k3 d16 512x64->64 causal", 16, (512,), 64, 64, 3, padding="CAUSAL", dilation=16),
    # the small late layers, batch 1-8
    _L("late", "resnet20 3x3 8x8 64->64", 8, (8, 8), 64, 64, 3),
    _L("late", "vgg-cifar 3x3 4x4 128->128", 8, (4, 4), 128, 128, 3),
    _L("late", "resnet50 3x3 14x14 256->256 b2", 2, (14, 14), 256, 256, 3),
    _L("late", "resnet50 3x3 7x7 512->512 b1", 1, (7, 7), 512, 512, 3),
    _L("late", "resnet50 1x1 7x7 2048->512 b1", 1, (7, 7), 2048, 512, 1, padding="VALID"),
    # big 3x3
    _L("big", "3x3 56x56 64->64", 8, (56, 56), 64, 64, 3),
    _L("big", "3x3 28x28 128->128", 8, (28, 28), 128, 128, 3),
    _L("big", "3x3 14x14 256->256", 8, (14, 14), 256, 256, 3),
]

GROUPS = list(dict.fromkeys(layer.group for layer in LAYERS))

# --quick: one or two layers of each group (about half a minute on 2 cores).
QUICK_NAMES = [
    "mnist 3x3 28x28 1->32", "resnet20 3x3 32x32 3->16",
    "resnet20 3x3 32x32 16->16",
    "resnet20 3x3/2 32x32 16->32", "resnet20 1x1/2 32x32 16->32",
    "resnet50 1x1 56x56 64->256",
    "5x5 14x14 32->64",
    "resnet50 7x7/2 224x224 3->64",
    "kim k3 400x128->100", "kim k7 400x128->100",
    "tcn k3 d4 512x64->64 causal",
    "resnet20 3x3 8x8 64->64", "resnet50 3x3 7x7 512->512 b1",
    "3x3 56x56 64->64",
]
QUICK = [layer for layer in LAYERS if layer.name in QUICK_NAMES]

# --smoke (the CLI test: seconds): tiny layers of each dimensionality, with causal dilation.
SMOKE = [
    _L("smoke", "smoke 3x3 12x12 8->8", 2, (12, 12), 8, 8, 3),
    _L("smoke", "smoke k3 d2 64x8->8 causal", 2, (64,), 8, 8, 3, padding="CAUSAL", dilation=2),
]

# VGG-16 (Simonyan & Zisserman 2014) at 224x224: 13 conv layers, 9 distinct; all 3x3, stride 1, SAME.
VGG16 = [_L("vgg16", f"vgg16 3x3 {s}x{s} {c}->{k}", 4, (s, s), c, k, 3) for s, c, k in [
    (224, 3, 64), (224, 64, 64), (112, 64, 128), (112, 128, 128), (56, 128, 256), (56, 256, 256),
    (28, 256, 512), (28, 512, 512), (14, 512, 512)]]

# ResNet-50 (He et al. 2015) as keras.applications.ResNet50 builds it (stride 2 on the first 1x1 of a stage's
# first block): 53 conv layers, 20 distinct. The 7x7 stem is ZeroPadding2D(3) + a VALID conv on 230x230.
RESNET50 = [_L("resnet50", f"resnet50 {kk}x{kk}{'/2' if st > 1 else ''} {s}x{s} {c}->{k}", 4, (s, s), c, k, kk, st,
               "SAME" if kk == 3 else "VALID") for kk, st, s, c, k in [
    (7, 2, 230, 3, 64),
    (1, 1, 56, 64, 64), (3, 1, 56, 64, 64), (1, 1, 56, 64, 256), (1, 1, 56, 256, 64),
    (1, 2, 56, 256, 128), (3, 1, 28, 128, 128), (1, 1, 28, 128, 512), (1, 2, 56, 256, 512), (1, 1, 28, 512, 128),
    (1, 2, 28, 512, 256), (3, 1, 14, 256, 256), (1, 1, 14, 256, 1024), (1, 2, 28, 512, 1024),
    (1, 1, 14, 1024, 256),
    (1, 2, 14, 1024, 512), (3, 1, 7, 512, 512), (1, 1, 7, 512, 2048), (1, 2, 14, 1024, 2048),
    (1, 1, 7, 2048, 512)]]

# MobileNet v1/v2 (Howard et al. 2017, Sandler et al. 2018) at 224x224: the depthwise 3x3 layers (stride 1 and
# the stride-2 ones entering the next size) and v1's depthwise-separable pairs (3x3 depthwise, then 1x1 C -> 2C),
# batch 8; and U-Net decoder upsamplings (Conv2DTranspose, stride 2, SAME: 2x2 as in the paper, 3x3 as
# common variants use), batch 8. All with bias and ReLU, which Keras applies after TF's op and kconv fuses where
# it can.
MOBILE_SIZES = ((112, 32), (56, 64), (28, 128), (14, 256))
MOBILE = [
    *[_L("depthwise", f"dw 3x3 {s}x{s}x{c}", 8, (s, s), c, c, 3, kind="depthwise") for s, c in MOBILE_SIZES],
    *[_L("depthwise", f"dw 3x3/2 {s}x{s}x{c}", 8, (s, s), c, c, 3, 2, kind="depthwise") for s, c in MOBILE_SIZES],
    *[_L("separable", f"sep 3x3 {s}x{s} {c}->{2 * c}", 8, (s, s), c, 2 * c, 3, kind="separable")
      for s, c in MOBILE_SIZES],
    *[_L("transpose", f"convT {kk}x{kk}/2 {s}x{s} {c}->{c // 2}", 8, (s, s), c, c // 2, kk, 2, kind="transpose")
      for kk in (2, 3) for s, c in ((16, 256), (32, 128), (64, 64))],
]
MOBILE_GROUPS = list(dict.fromkeys(layer.group for layer in MOBILE))

# --smoke's other kinds (in its default list; alone with --smoke --layers mobile): a tiny layer of each kind,
# one of them 1-D.
SMOKE_MOBILE = [
    _L("smoke", "smoke dw 3x3/2 12x12x8", 2, (12, 12), 8, 8, 3, 2, kind="depthwise"),
    _L("smoke", "smoke sep k3 32x8->16", 2, (32,), 8, 16, 3, kind="separable"),
    _L("smoke", "smoke convT 2x2/2 6x6 8->4", 2, (6, 6), 8, 4, 2, 2, kind="transpose"),
]

EXTRA_SETS = {"vgg16": VGG16, "resnet50": RESNET50, "mobile": MOBILE}


def select(spec, quick=False, smoke=False):
    """Layers for --layers SPEC: comma-separated group names (see the module doc), set names (vgg16, resnet50,
    mobile), "all" (every default layer), "none", or text that layer names contain (e.g. "3x3/2", "kim").
    Without SPEC: the default list, or the quick one, or the smoke one and SMOKE_MOBILE. With --quick, a group
    name picks that group's quick layers (its full list if it has none there). With --smoke, "mobile" and its
    groups pick the tiny SMOKE_MOBILE layers of those kinds."""
    base = SMOKE if smoke else QUICK if quick else LAYERS
    if spec is None:   # --smoke checks the whole harness: the other kinds' tiny layers too
        return list(base) + (SMOKE_MOBILE if smoke else [])
    everything = LAYERS + SMOKE + (SMOKE_MOBILE if smoke else []) + [l for rows in EXTRA_SETS.values() for l in rows]
    chosen = []
    for part in (p.strip() for p in spec.split(",")):
        if not part or part == "none":
            continue
        if part == "all":
            rows = list(LAYERS)
        elif part in GROUPS:
            rows = [layer for layer in base if layer.group == part] or [l for l in LAYERS if l.group == part]
        elif smoke and (part == "mobile" or part in MOBILE_GROUPS):
            rows = [layer for layer in SMOKE_MOBILE if part == "mobile" or layer.kind == part]
        elif part in EXTRA_SETS:
            rows = EXTRA_SETS[part]
        elif part in MOBILE_GROUPS:
            rows = [layer for layer in MOBILE if layer.group == part]
        else:
            rows = [layer for layer in everything if part in layer.name]
            if not rows:
                raise ValueError(f"--layers: {part!r} is neither a group ({', '.join(GROUPS + MOBILE_GROUPS)}), a set "
                                 f"({', '.join(EXTRA_SETS)}), all, none, nor part of a layer name")
        for layer in rows:
            if layer.name not in {c.name for c in chosen}:
                chosen.append(layer)
    return chosen


def with_batch(layers, batch):
    return [layer.with_batch(batch) for layer in layers]

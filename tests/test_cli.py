"""The command line: `python -m kconv info`, `python -m kconv bench --smoke` (tiny models and layers, about
half a minute with thread scaling and memory) and usage errors. Runs the CLI in subprocesses with PYTHONPATH
at the repository root, as a user would; the selectors are also tested in-process. Timings on a shared
machine are noise: nothing here asserts on speed, only on the shape of the report, the files, the agreement
of kconv with TensorFlow, and that each layer graph ran exactly the one kconv kernel pass it times."""
import csv
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PASSES = {"forward", "input grad", "filter grad"}
KERAS_PASSES = {"forward", "train step"}


def run_cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "kconv", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("bench")
    proc = run_cli("bench", "--smoke", "--scaling", "--memory", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def markdown_tables(text):
    """{first header cell: (the line before the table's blank line, header cells, body rows as cell lists)}."""
    lines = text.splitlines()
    tables = {}
    i = 0
    while i < len(lines):
        if lines[i].startswith("| ") and i + 1 < len(lines) and re.fullmatch(r"\|(:?-+:?\|)+", lines[i + 1]):
            head = [c.strip() for c in lines[i].strip("|").split("|")]
            rule = lines[i + 1]
            rows, j = [], i + 2
            while j < len(lines) and lines[j].startswith("|"):
                assert len(lines[j]) == len(lines[i]) == len(rule), "columns are padded to one width"
                rows.append([c.strip() for c in lines[j].strip("|").split("|")])
                j += 1
            assert all(len(r) == len(head) for r in rows)
            context = [line for line in lines[max(0, i - 4):i] if line.strip()]
            tables[head[0]] = (context, head, rows)
            i = j
        else:
            i += 1
    return tables


def ratio(cell):
    assert cell.endswith("x"), cell
    return float(cell[:-1])


def test_bench_prints_well_formed_model_and_layer_tables(smoke_run):
    proc, _ = smoke_run
    tables = markdown_tables(proc.stdout)
    assert {"model", "layer", "Keras layer", "threads", "contender"} <= set(tables)
    for context, _, _ in tables.values():   # machine, ISA and roof beside every table
        assert any(line.startswith("machine: ") and " ISA: " in line and " roof: " in line and "GFLOP/s" in line
                   for line in context), context
    assert proc.stdout.index("| model") < proc.stdout.index("| layer ") < proc.stdout.index("| Keras layer")

    _, head, rows = tables["model"]
    for column in ("batch", "train kconv ms", "train keras ms", "train ratio", "predict kconv ms",
                   "predict keras ms", "predict ratio", "max err"):
        assert column in head
    body, geo = rows[:-1], rows[-1]
    assert len(body) == 2 and geo[0].startswith("geomean")
    for r in body:
        cells = dict(zip(head, r))
        assert float(cells["train kconv ms"]) > 0 and float(cells["predict keras ms"]) > 0
        assert ratio(cells["train ratio"]) > 0 and ratio(cells["predict ratio"]) > 0
        assert float(cells["max err"]) < 1e-4
    assert ratio(dict(zip(head, geo))["train ratio"]) > 0

    _, head, rows = tables["layer"]
    for column in ("batch", "pass", "kconv ms", "TF ms", "ratio", "kconv GFLOP/s", "kconv % roof", "TF % roof",
                   "kconv algorithm", "max err"):
        assert column in head
    body = [dict(zip(head, r)) for r in rows if not r[0].startswith("geomean")]
    geo = [r for r in rows if r[0].startswith("geomean")]
    assert len(body) == 6 and {r["pass"] for r in body} == PASSES
    assert {r["layer"] for r in body} == {"smoke 3x3 12x12 8->8", "smoke k3 d2 64x8->8 causal"}
    for r in body:
        assert float(r["kconv ms"]) > 0 and float(r["TF ms"]) > 0 and ratio(r["ratio"]) > 0
        assert float(r["kconv GFLOP/s"]) >= 0 and float(r["TF % roof"]) >= 0
        assert r["kconv algorithm"].startswith(("direct", "winograd"))
        assert float(r["max err"]) < 1e-4
    assert [g[0] for g in geo] == ["geomean forward", "geomean input grad", "geomean filter grad",
                                   "geomean all passes"]
    assert "geomean ratio: train_on_batch" in proc.stdout and "geomean ratio over 2 layers" in proc.stdout
    assert "s in all (smoke run; roof " in proc.stdout
    assert "kconv has no such layer" not in proc.stdout

    # the other kinds, through the Keras layers: forward and train step of each
    _, head, rows = tables["Keras layer"]
    for column in ("batch", "pass", "kconv ms", "TF ms", "ratio", "kconv GFLOP/s", "kconv % roof", "max err"):
        assert column in head
    body = [dict(zip(head, r)) for r in rows if not r[0].startswith("geomean")]
    assert len(body) == 6 and {r["pass"] for r in body} == KERAS_PASSES
    assert {r["Keras layer"] for r in body} == {"smoke dw 3x3/2 12x12x8", "smoke sep k3 32x8->16",
                                                "smoke convT 2x2/2 6x6 8->4"}
    for r in body:
        assert float(r["kconv ms"]) > 0 and float(r["TF ms"]) > 0 and ratio(r["ratio"]) > 0
        assert float(r["max err"]) < 1e-4
    geo = [r[0] for r in rows if r[0].startswith("geomean")]
    assert geo == [f"geomean {k} {p}" for k in ("depthwise", "separable", "transpose")
                   for p in ("forward", "train step")]


def test_bench_writes_csv_json_markdown_and_png(smoke_run):
    _, out = smoke_run
    with open(out / "models.csv", newline="") as f:
        models = list(csv.DictReader(f))
    assert [m["key"] for m in models] == ["resnet20", "tcn"]
    for m in models:
        assert float(m["train_kconv_ms"]) > 0 and float(m["train_keras_ms"]) > 0 and float(m["predict_ratio"]) > 0
    with open(out / "layers.csv", newline="") as f:
        layers = list(csv.DictReader(f))
    assert len(layers) == 6 and {r["pass"] for r in layers} == PASSES
    for r in layers:
        assert float(r["kconv_ms"]) > 0 and float(r["tf_ms"]) > 0 and float(r["ratio"]) > 0
        assert float(r["kconv_gflops"]) > 0 and float(r["kconv_roof_pct"]) > 0 and float(r["max_err"]) < 1e-4
        assert int(r["inner"]) >= 1 and int(r["calls"]) >= 1

    data = json.loads((out / "results.json").read_text())
    assert data["command"].startswith("python -m kconv bench") and data["mode"] == "smoke"
    machine = data["machine"]
    assert machine["roof_gflops"] > 0 and machine["roof_end_gflops"] > 0 and machine["threads"] >= 1
    assert machine["isa"] and machine["cpu"] and machine["tensorflow"]
    assert len(data["models"]) == 2 and len(data["layers"]) == 6 and len(data["keras_layers"]) == 6
    assert {r["kind"] for r in data["keras_layers"]} == {"depthwise", "separable", "transpose"}
    assert all(v > 0 for v in data["keras_layers_geomean"].values()) and len(data["keras_layers_geomean"]) == 6
    with open(out / "keras_layers.csv", newline="") as f:
        kinds = list(csv.DictReader(f))
    assert len(kinds) == 6 and {r["pass"] for r in kinds} == KERAS_PASSES
    assert all(float(r["ratio"]) > 0 and float(r["max_err"]) < 1e-4 for r in kinds)
    assert set(data["geomean"]) == {"train", "predict"} | PASSES
    assert {s["threads"] for s in data["scaling"]} >= {1}
    # kconv alone, its counts interleaved within each scaling process (none on a one-CPU machine)
    counts = {s["threads"] for s in data["scaling"]}
    interleaved = data["scaling_interleaved"]
    assert {s["threads"] for s in interleaved} == (counts if len(counts) > 1 else set())
    assert all(s["kconv_ms"] > 0 and s["speedup"] > 0 for s in interleaved)
    assert {s["pass"] for s in interleaved} <= PASSES | {"step (3 passes)"}
    assert {m["contender"] for m in data["memory"]} == {"kconv", "tf"}
    assert all(m["extra_mib"] >= 0 for m in data["memory"])

    md = (out / "results.md").read_text()
    assert md.count("| smoke ") == 12 and "| ResNet-20" in md
    assert md.count("machine: ") == 5 + bool(interleaved)
    assert ("## Thread scaling, kconv alone" in md) == bool(interleaved)

    if machine["op_path"] == "native":
        # each layer graph ran exactly one kconv kernel pass: TensorFlow pruned the forward and the other
        # gradient, so the figure is the pass it names
        kernel = {"forward": "forward", "input grad": "input", "filter grad": "filter"}
        for r in data["layers"]:
            if r["kernel_passes"] is not None:
                assert r["kernel_passes"] == {kernel[r["pass"]]: 1}, r

    png = out / "speedup.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _args(*argv):
    from kconv.bench.cli import build_parser
    return build_parser().parse_args(list(argv))


def test_selectors():
    from kconv.bench import layersets, models
    from kconv.bench.cli import selection
    m, l = selection(_args())
    assert [x.key for x in m] == [x.key for x in models.MODELS] and l == layersets.LAYERS
    m, l = selection(_args("--quick"))
    assert [x.key for x in m] == models.QUICK_KEYS and l == layersets.QUICK
    assert {x.group for x in layersets.QUICK} == set(layersets.GROUPS)   # quick covers every group
    m, l = selection(_args("--models", "resnet20,tcn"))          # --models alone: no layers
    assert [x.key for x in m] == ["resnet20", "tcn"] and l == []
    m, l = selection(_args("--layers", "stride2,kim k3"))        # --layers alone: no models
    assert m == [] and {x.group for x in l} == {"stride2", "text"} and len(l) == 5
    m, l = selection(_args("--layers", "late", "--quick", "--batch", "3"))
    assert l and all(x.group == "late" and x.batch == 3 for x in l) and len(l) < len(layersets.select("late"))
    m, l = selection(_args("--models", "ResNet", "--layers", "vgg16", "--no-models"))
    assert m == [] and len(l) == 9
    m, l = selection(_args("--smoke"))
    assert [x.key for x in m] == models.SMOKE_KEYS and l == layersets.SMOKE + layersets.SMOKE_MOBILE
    m, l = selection(_args("--layers", "mobile"))                # the other kinds: on request only
    assert m == [] and l == layersets.MOBILE and not set(l) & set(layersets.LAYERS)
    assert not [x for x in layersets.LAYERS if x.kind != "conv"]
    m, l = selection(_args("--layers", "depthwise,transpose"))
    assert {x.kind for x in l} == {"depthwise", "transpose"} and len(l) == 14
    m, l = selection(_args("--smoke", "--layers", "mobile"))
    assert l == layersets.SMOKE_MOBILE
    for bad in (("--layers", "nope"), ("--models", "nope"), ("--models", "none", "--layers", "none"),
                ("--no-models", "--no-layers")):
        with pytest.raises(ValueError):
            selection(_args(*bad))


def test_layers_cover_the_geometries_asked_for():
    from kconv.bench.layersets import LAYERS
    have = lambda **kw: [x for x in LAYERS if all(getattr(x, k) == v for k, v in kw.items())]  # noqa: E731
    assert have(c=1) and have(c=3, nd=2) and have(kernel=3, stride=2) and have(kernel=1, stride=2)
    assert have(kernel=1, stride=1) and have(kernel=5) and have(kernel=7, stride=2, c=3)
    assert {x.kernel for x in have(nd=1, group="text")} == set(range(2, 8))
    assert [x for x in have(padding="CAUSAL", kernel=3) if x.dilation > 1]
    assert all(x.batch <= 8 for x in have(group="late")) and have(group="late", batch=1)
    assert {(x.spatial, x.c) for x in have(group="big")} == {((56, 56), 64), ((28, 28), 128), ((14, 14), 256)}
    assert [x for x in have(group="small") if x.c == x.k == 16] and [x for x in have(group="small") if x.c == x.k == 32]
    assert len({x.name for x in LAYERS}) == len(LAYERS)


def test_mobile_set_covers_depthwise_separable_and_transposed_layers():
    from kconv.bench.layersets import MOBILE, SMOKE_MOBILE
    sizes = {((112, 112), 32), ((56, 56), 64), ((28, 28), 128), ((14, 14), 256)}
    of = lambda kind, **kw: [x for x in MOBILE if x.kind == kind and all(getattr(x, k) == v  # noqa: E731
                                                                          for k, v in kw.items())]
    for stride in (1, 2):
        assert {(x.spatial, x.c) for x in of("depthwise", stride=stride, kernel=3)} == sizes
    assert {(x.spatial, x.c) for x in of("separable", stride=1, kernel=3)} == sizes
    assert all(x.k == x.c for x in of("depthwise")) and all(x.batch == 8 for x in MOBILE)
    assert {x.kernel for x in of("transpose", stride=2)} == {2, 3}
    assert len({x.name for x in MOBILE + SMOKE_MOBILE}) == len(MOBILE + SMOKE_MOBILE)
    assert {x.kind for x in SMOKE_MOBILE} == {"depthwise", "separable", "transpose"}


def test_model_twins_differ_only_in_their_conv_class():
    pytest.importorskip("tensorflow")
    import numpy as np
    from kconv.bench import models
    kinds = set()
    for spec in models.MODELS:
        ours, theirs = models.twins(spec, smoke=True)
        assert models.conv_layers(ours) and all(map(models.is_kconv, models.conv_layers(ours))), spec.key
        assert len(models.conv_layers(ours)) == len(models.conv_layers(theirs))
        assert not any(map(models.is_kconv, models.conv_layers(theirs)))
        assert [type(l).__name__ for l in ours.layers] == [type(l).__name__ for l in theirs.layers]
        kinds |= {type(l).__name__ for l in models.conv_layers(ours)}
        for a, b in zip(ours.get_weights(), theirs.get_weights()):
            assert a.shape == b.shape and np.array_equal(a, b)
        x, _ = spec.inputs(np.random.default_rng(0), 2, smoke=True)
        assert ours(x).shape == theirs(x).shape
    assert {"Conv1D", "Conv2D", "DepthwiseConv2D", "Conv2DTranspose"} <= kinds


def test_model_twins_by_convert_are_the_twins_built_on_kconv_classes():
    """The two routes to the kconv twin (kconv.serving.convert of the keras.layers twin; the builder run on
    kconv's classes from the same seed, then set_weights) give the same model: same layer classes, weights and
    outputs, so the models' figures mean what they meant when the builders took kconv's classes. (The
    builders take only the convolutions from their namespace: convert keeps Keras's BatchNorm and ReLU here.)"""
    pytest.importorskip("tensorflow")
    import numpy as np
    from kconv.bench import models
    for spec in models.MODELS:
        converted, theirs = models.twins(spec, smoke=True, route="convert", convolutions_only=True)
        built, _ = models.twins(spec, smoke=True, route="build")
        assert [type(l) for l in converted.layers] == [type(l) for l in built.layers], spec.key
        assert [l.get_config().get("algorithm") for l in models.conv_layers(converted)] == \
            [l.get_config().get("algorithm") for l in models.conv_layers(built)]
        for a, b in zip(converted.get_weights(), built.get_weights()):
            assert np.array_equal(a, b)
        x, _ = spec.inputs(np.random.default_rng(1), 2, smoke=True)
        assert np.array_equal(np.asarray(converted(x)), np.asarray(built(x))), spec.key


def test_markdown_table_pads_and_aligns():
    from kconv.bench.cli import markdown_table
    text = markdown_table(["name", "ms"], [["a", "1.5"], ["longer", "10.25"]], "lr")
    lines = text.splitlines()
    assert lines[1] == "|:-------|------:|" and len({len(x) for x in lines}) == 1
    assert lines[3] == "| longer | 10.25 |" and lines[2] == "| a      |   1.5 |"


def test_model_table_warns_when_a_timed_model_diverged():
    from kconv.bench.cli import model_section
    row = dict(model="TCN", batch=16, train_kconv_ms=1.0, train_keras_ms=1.0, train_ratio=1.0, predict_kconv_ms=1.0,
               predict_keras_ms=1.0, predict_ratio=1.0, max_err=0.0, diverged=[])
    assert "WARNING" not in model_section("machine", [row], 9)
    text = model_section("machine", [dict(row, diverged=["kconv", "keras"])], 9)
    assert "WARNING: TCN: the weights of kconv and keras became non-finite" in text


def test_thread_scaling_keeps_each_contenders_fastest_process():
    from kconv.bench.cli import fastest_runs, scaling_section
    runs = [dict(threads=1, pass_="forward", kconv_ms=10.0, tf_ms=12.0, kconv_gflops=100.0),
            dict(threads=2, pass_="forward", kconv_ms=8.0, tf_ms=6.0, kconv_gflops=125.0),     # a disturbed run
            dict(threads=1, pass_="forward", kconv_ms=11.0, tf_ms=11.0, kconv_gflops=90.9),
            dict(threads=2, pass_="forward", kconv_ms=5.0, tf_ms=7.0, kconv_gflops=200.0)]
    rows = {r["threads"]: r for r in fastest_runs("k6", runs)}
    assert (rows[1]["kconv_ms"], rows[1]["tf_ms"], rows[1]["kconv_gflops"]) == (10.0, 11.0, 100.0)
    assert (rows[2]["kconv_ms"], rows[2]["tf_ms"], rows[2]["kconv_gflops"]) == (5.0, 6.0, 200.0)
    assert rows[2]["ratio"] == 6.0 / 5.0
    text = scaling_section("machine", list(rows.values()), 117.0, 230.0, passes=2)
    assert "fastest process" in text and "2.00x |" in text and "1.83x |" in text    # 10 / 5 and 11 / 6
    assert "step (3 passes)" not in text            # only the forward was timed


def test_thread_scaling_adds_a_training_steps_three_passes():
    from kconv.bench.cli import scaling_section
    times = {1: (4.0, 3.0, 5.0), 2: (2.0, 1.5, 2.5)}        # forward, input grad, filter grad: 12 and 6 ms
    rows = [dict(layer="k6", threads=t, pass_=p, kconv_ms=ms, tf_ms=2 * ms, ratio=2.0, kconv_gflops=100.0 * t)
            for t in times for p, ms in zip(("forward", "input grad", "filter grad"), times[t])]
    text = scaling_section("machine", rows, 117.0, 230.0)
    step = [line for line in text.splitlines() if "step (3 passes)" in line and line.startswith("|")]
    assert len(step) == 2
    assert "12.00" in step[0] and "24.00" in step[0] and "1.00x" in step[0]
    assert "6.00" in step[1] and "200.0" in step[1] and "2.00x |" in step[1]     # 12 / 6 ms, both contenders


def test_interleaved_scaling_takes_each_processs_own_ratio():
    from kconv.bench.cli import interleaved_section, interleaved_rows
    passes = ("forward", "input grad", "filter grad")

    def process(one, two):      # one process's rows: the three passes at 1 and 2 threads
        return [dict(layer="k6", threads=t, pass_=p, kconv_ms=ms, kconv_gflops=1000.0 / ms)
                for t, times in ((1, one), (2, two)) for p, ms in zip(passes, times)]
    # the second process ran in slower minutes (both counts), the third in faster ones
    rows = interleaved_rows([process((4.0, 3.0, 5.0), (2.0, 1.5, 2.5)),
                             process((8.0, 6.0, 10.0), (4.0, 3.0, 5.0)),
                             process((2.0, 1.5, 2.5), (1.25, 1.0, 1.25))])
    by = {(r["threads"], r["pass_"]): r for r in rows}
    assert len(rows) == 8 and by[(1, "step (3 passes)")]["kconv_ms"] == 12.0       # the median process
    assert by[(2, "forward")]["kconv_ms"] == 2.0 and by[(2, "forward")]["speedup"] == 2.0   # 2.0, 2.0, 1.6
    assert by[(2, "filter grad")]["speedup"] == 2.0                                 # 2.0, 2.0, 2.0
    assert by[(2, "step (3 passes)")]["speedup"] == 2.0                             # 12/6, 24/12, 6/3.5
    assert by[(1, "forward")]["speedup"] == 1.0
    assert abs(by[(2, "step (3 passes)")]["kconv_gflops"] - 3000.0 / 6.0) < 1e-9    # 3 GFLOP in 6 ms
    text = interleaved_section("machine", rows, 117.0, 230.0, processes=3)
    assert "kconv alone" in text and "3 processes" in text and " 2.00x |" in text and " 1.00x |" in text
    assert interleaved_rows([]) == []


def test_info_prints_versions_and_build():
    proc = run_cli("info", "--no-roof", timeout=120)
    assert proc.returncode == 0, proc.stderr
    keys = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert {"kconv", "numpy", "tensorflow", "isa", "openmp", "threads"} <= keys


@pytest.mark.parametrize("args", [
    ("bench", "--bogus"),
    ("bench", "--batch", "0"),
    ("bench", "--threads", "two"),
    ("bench", "--layers", "no-such-layer"),
    ("bench", "--models", "no-such-model"),
    ("bench", "--quick", "--smoke"),
    ("bench", "--algorithm", "fft"),
    ("frobnicate",),
    (),
])
def test_bad_options_give_a_usage_error(args):
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr

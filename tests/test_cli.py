"""The command line: `python -m kconv info`, `python -m kconv bench` (on the hidden --tiny set, seconds) and
usage errors. Runs the CLI in subprocesses with PYTHONPATH at the repository root, as a user would. Timings
on a shared machine are noise: nothing here asserts on speed."""
import csv
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "kconv", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("bench")
    proc = run_cli("bench", "--quick", "--tiny", "--repeats", "2", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, out


def test_bench_prints_a_well_formed_table(tiny_run):
    proc, _ = tiny_run
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("layer "))
    for column in ("kconv ms", "TF ms", "speedup", "GFLOP/s", "% roof", "max err", "algorithm"):
        assert column in lines[head]
    assert set(lines[head + 1]) == {"-"}
    body = lines[head + 2:head + 6]
    assert [line.split()[0] for line in body] == ["tiny"] * 4
    for line in body:
        assert any(p in line for p in (" forward ", " train "))
        assert "x " in line   # the speedup column
    assert "fp32 FMA roof" in proc.stdout
    assert "geometric-mean speedup" in proc.stdout
    assert "thread scaling" in proc.stdout and "peak memory" in proc.stdout


def test_bench_writes_csv_json_and_png(tiny_run):
    _, out = tiny_run
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert {r["pass"] for r in rows} == {"forward", "train"}
    for r in rows:
        assert float(r["kconv_ms"]) > 0 and float(r["tf_ms"]) > 0 and float(r["speedup"]) > 0
        assert float(r["gflops"]) > 0 and float(r["roof_pct"]) > 0
        assert float(r["max_err"]) < 1e-4     # kconv agrees with TensorFlow
        assert r["algorithm"].startswith(("direct", "winograd"))
    data = json.loads((out / "results.json").read_text())
    assert data["roof_gflops"] > 0 and data["threads"] >= 1 and data["tensorflow"]
    assert len(data["rows"]) == 4 and data["command"].startswith("python -m kconv bench")
    assert {s["threads"] for s in data["scaling"]} >= {1}
    assert {m["contender"] for m in data["memory"]} == {"kconv", "tf"}
    assert all(m["extra_mib"] >= 0 for m in data["memory"])
    assert (out / "results.md").read_text().count("| tiny") == 4
    png = (out / "speedup.png")
    if pytest.importorskip("matplotlib"):
        assert png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    ("frobnicate",),
    (),
])
def test_bad_options_give_a_usage_error(args):
    proc = run_cli(*args, timeout=120)
    assert proc.returncode == 2
    assert "usage:" in proc.stderr

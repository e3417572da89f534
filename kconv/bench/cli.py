"""python -m kconv bench : kconv against TensorFlow's own convolution, on this machine, in one command.

    python -m kconv bench --quick                 # ~1 minute: one layer of each kind, scaling, memory, models
    python -m kconv bench                         # every distinct conv layer of VGG-16 and ResNet-50, MNIST, text
    python -m kconv bench --layers resnet50 --batch 8 --threads 2 --out results/

Every layer is timed against tf.nn.conv2d / conv1d (oneDNN) in the same process: interleaved, after
warm-up, median of repeats, 3 input sets rotated so the cache does not flatter either side. Passes:
"forward", and "train" = forward + both gradients (kconv.ops.conv*_backprop_input/filter against
tf.compat.v1.nn.conv2d_backprop_input/filter; 1-D: tf.GradientTape). speedup = TF time / kconv time.
GFLOP/s counts a direct convolution's flops (train: 3x forward), so Winograd can pass the roof; % roof is
against kconv.measure_roof(threads), this machine's fp32 FMA peak measured by the suite at start. max err =
max|kconv - TF| / max|TF|. For Winograd layers, "products" is the share of the forward time spent in the
alpha^2 GEMMs (timed alone as one kconv matmul of the same flops), the rest being transforms.
Thread scaling and peak memory run in fresh subprocesses (see kconv/bench/_worker.py for the method).
Outputs in --out: results.csv, results.json, results.md (the table in Markdown) and speedup.png.
"""
import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from . import layersets
from .._config import cpu_name
from .convs import algorithm_of, flops, products_seconds, time_layer

COLUMNS = ["set", "layer", "batch", "pass", "kconv_ms", "tf_ms", "speedup", "gflops", "roof_pct", "algorithm",
           "max_err", "products_pct", "transforms_pct"]


def build_parser():
    p = argparse.ArgumentParser(prog="kconv bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one layer of each kind, small batches: about a minute")
    p.add_argument("--layers", default=None, metavar="SPEC",
                   help="comma-separated sets (vgg16, resnet50, mnist, text, models, all) or text in layer names "
                        "(e.g. '3x3', '1x1/2'); default: all sets + models")
    p.add_argument("--batch", type=_positive, default=None, help="batch size for every layer and model "
                   "(default: each set's own: 4 for VGG/ResNet, 64 MNIST, 32 text)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="threads for kconv and TensorFlow's intra-op pool (default: kconv's default, all cores)")
    p.add_argument("--out", default="kconv-bench", help="folder for results.csv/.json/.md and speedup.png "
                   "(default: ./kconv-bench)")
    p.add_argument("--repeats", type=_positive, default=None, help="timed runs per contender (default 9, quick 5)")
    p.add_argument("--algorithm", default="auto", help="kconv algorithm: auto, direct, winograd, winograd2/4/6")
    p.add_argument("--no-scaling", action="store_true", help="skip thread scaling")
    p.add_argument("--no-memory", action="store_true", help="skip peak memory")
    p.add_argument("--no-models", action="store_true", help="skip the Keras training steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)   # the CLI test: seconds
    return p


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


class _Progress:
    """A rich progress bar on stderr (rich comes with Keras, so it is there whenever TensorFlow is; tqdm is
    not a Keras/TF dependency). Falls back to one line per step without rich or a terminal."""

    def __init__(self, total, enabled):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from rich.console import Console
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                           TimeElapsedColumn)
                console = Console(stderr=True)
                if console.is_terminal:
                    self.bar = Progress(TextColumn("{task.description:40s}"), BarColumn(), MofNCompleteColumn(),
                                        TimeElapsedColumn(), console=console, transient=True)
                    self.bar.start()
                    self.task = self.bar.add_task("", total=total)
            except ImportError:
                pass
        self.total, self.done = total, 0

    def step(self, text):
        """Announce the step about to run; the previous one is done."""
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, description=text[:40])
        elif self.enabled:
            print(f"[{self.done + 1}/{self.total}] {text}", file=sys.stderr, flush=True)
        self.done += 1

    def close(self):
        if self.bar is not None:
            self.bar.update(self.task, completed=self.total)
            self.bar.stop()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        layers = layersets.with_batch(layersets.select(args.layers, quick=args.quick, tiny=args.tiny), args.batch)
    except ValueError as e:
        parser.error(str(e))
    want_models = not args.no_models and not args.tiny and (
        args.layers is None or "models" in [p.strip() for p in args.layers.split(",")])
    if not layers and not want_models:
        parser.error("--layers selected nothing")
    fast = args.quick or args.tiny
    repeats = args.repeats or (3 if args.tiny else 5 if args.quick else 9)
    warmup = 1 if fast else 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t_start = time.perf_counter()
    try:
        import tensorflow as tf
    except ImportError:
        print("kconv bench compares against TensorFlow, which is not installed: pip install 'kconv[tf]'",
              file=sys.stderr)
        return 2
    import kconv
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    threads = args.threads or kconv.get_num_threads()
    cores = kconv.get_num_threads() if args.threads is None else max(args.threads, kconv.get_num_threads())
    scaling_layer = None if args.no_scaling or not layers else _scaling_layer(layers)
    memory_layer = None if args.no_memory or not layers else _scaling_layer(layers)
    scale_counts = _thread_counts(cores) if scaling_layer else []

    steps = 1 + len(layers) + len(scale_counts) + (2 if memory_layer else 0) + \
        (len(__import__("kconv.bench.models", fromlist=["MODELS"]).MODELS) if want_models else 0)
    progress = _Progress(steps, not args.no_progress)
    progress.step("measuring the FMA roof")
    roof = kconv.measure_roof(threads)
    roof1 = kconv.measure_roof(1) if scale_counts else None
    cfg = kconv.config()
    header = (f"kconv {cfg['version']} ({cfg['isa']}, OpenMP {'on' if cfg['openmp'] else 'off'}, {threads} threads, "
              f"algorithm={args.algorithm}) vs TensorFlow {tf.__version__} (oneDNN) on {cpu_name()}, "
              f"{os.cpu_count()} CPUs; fp32 FMA roof {roof:.1f} GFLOP/s on {threads} threads")
    rows = []
    try:
        for layer in layers:
            progress.step(layer[0])
            algo = algorithm_of(layer, args.algorithm)
            split = None
            for row in time_layer(tf, layer, repeats, warmup, threads=args.threads, algorithm=args.algorithm):
                row.update(set=layer[0].split()[0], layer=layer[0], batch=layer[1], algorithm=algo,
                           roof_pct=100 * row["gflops"] / roof)
                if algo.startswith("winograd") and row["pass_"] == "forward":
                    tile = int(algo.split("F(")[1].split("x")[0].split(",")[0])
                    share = products_seconds(layer, tile, args.threads, repeats) / (row["kconv_ms"] / 1e3)
                    split = min(100.0, 100 * share)
                    row.update(products_pct=split, transforms_pct=100 - split)
                rows.append(row)
        scaling = []
        for n in scale_counts:
            progress.step(f"threads {n}: {scaling_layer[0]}")
            result = _subprocess(dict(task="scaling", threads=n, layer=scaling_layer, repeats=repeats, warmup=warmup))
            for r in result["rows"]:
                scaling.append(dict(layer=scaling_layer[0], threads=n, pass_=r["pass_"], kconv_ms=r["kconv_ms"],
                                    tf_ms=r["tf_ms"], speedup=r["speedup"], gflops=r["gflops"]))
        memory = []
        if memory_layer:
            for who in ("kconv", "tf"):
                progress.step(f"peak memory: {who}")
                memory.append(dict(layer=memory_layer[0], **_subprocess(dict(task="memory", contender=who,
                                                                             layer=memory_layer))))
        if want_models:
            from .models import MODELS, time_models
            for name in MODELS:
                progress.step(f"model: {name}")
            rows += time_models(repeats, warmup, batch=args.batch, quick=fast)
    finally:
        progress.close()

    elapsed = time.perf_counter() - t_start
    command = "python -m kconv bench " + " ".join(sys.argv[1:] if argv is None else argv)
    text = render(header, rows, scaling, memory, roof, roof1, elapsed)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    paths = write_outputs(args.out, header, command, rows, scaling, memory, roof, roof1, cfg, tf.__version__,
                          threads, elapsed)
    print("\nwrote " + ", ".join(paths))
    return 0


def _scaling_layer(layers):
    """The layer used for thread scaling and memory: the selected layer with the most flops that is cheap
    enough for a few seconds a thread count (the largest under 2 GFLOP, else the smallest)."""
    cheap = [layer for layer in layers if flops(layer) <= 2e9]
    return max(cheap, key=flops) if cheap else min(layers, key=flops)


def _thread_counts(cores):
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return counts + [cores]


def _subprocess(task):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run([sys.executable, "-m", "kconv.bench._worker", json.dumps(task)], env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"benchmark subprocess failed ({task['task']}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(value, spec, empty=""):
    return empty if value is None else format(value, spec)


def table_lines(rows):
    """The layer table, fixed width, one row per layer and pass."""
    width = max([28] + [len(r["layer"]) for r in rows])
    head = (f"{'layer':{width}s} {'batch':>5s} {'pass':14s} {'kconv ms':>9s} {'TF ms':>9s} {'speedup':>8s} "
            f"{'GFLOP/s':>8s} {'% roof':>6s} {'max err':>8s}  {'algorithm':22s} products/transforms")
    lines = [head, "-" * len(head)]
    for r in rows:
        split = f"{r['products_pct']:.0f}% / {r['transforms_pct']:.0f}%" if r.get("products_pct") is not None else ""
        lines.append(f"{r['layer']:{width}s} {r['batch']:5d} {r['pass_']:14s} {r['kconv_ms']:9.2f} {r['tf_ms']:9.2f} "
                     f"{r['speedup']:7.2f}x {_fmt(r.get('gflops'), '8.1f', ' ' * 8)} "
                     f"{_fmt(r.get('roof_pct'), '5.0f', '     ')}{'%' if r.get('roof_pct') is not None else ' '} "
                     f"{r['max_err']:8.1e}  {r['algorithm']:22s} {split}".rstrip())
    return lines


def summary_lines(rows):
    lines = []
    for pass_name in ("forward", "train", "train_on_batch"):
        ratios = [r["speedup"] for r in rows if r["pass_"] == pass_name]
        if ratios:
            lines.append(f"{pass_name}: geometric-mean speedup {float(np.exp(np.mean(np.log(ratios)))):.2f}x over "
                         f"{len(ratios)} rows, range {min(ratios):.2f}x - {max(ratios):.2f}x")
    return lines


def render(header, rows, scaling, memory, roof, roof1, elapsed):
    out = [header, ""] + table_lines(rows) + [""] + summary_lines(rows)
    if scaling:
        out += ["", f"thread scaling on {scaling[0]['layer']} (a fresh process per count: TF intra-op = kconv "
                    f"threads = n; roof {roof1:.1f} GFLOP/s on 1 thread, {roof:.1f} on all)",
                f"{'threads':>7s} {'pass':8s} {'kconv ms':>9s} {'TF ms':>9s} {'speedup':>8s} {'GFLOP/s':>8s} "
                f"{'kconv x1':>9s} {'TF x1':>7s}"]
        base = {r["pass_"]: r for r in scaling if r["threads"] == scaling[0]["threads"]}
        for r in scaling:
            b = base[r["pass_"]]
            out.append(f"{r['threads']:7d} {r['pass_']:8s} {r['kconv_ms']:9.2f} {r['tf_ms']:9.2f} {r['speedup']:7.2f}x "
                       f"{r['gflops']:8.1f} {b['kconv_ms'] / r['kconv_ms']:8.2f}x {b['tf_ms'] / r['tf_ms']:6.2f}x")
    if memory:
        out += ["", f"peak memory, one training step's convolutions on {memory[0]['layer']} (one subprocess per "
                    f"contender; extra = peak RSS during the step - RSS before it, {memory[0]['method']})",
                f"{'contender':10s} {'extra MiB':>10s} {'process peak MiB':>17s}"]
        for m in memory:
            out.append(f"{m['contender']:10s} {m['extra_mib']:10.1f} {m['process_peak_mib']:17.1f}")
    out += ["", f"{elapsed:.0f} s in all"]
    return "\n".join(out)


def write_outputs(folder, header, command, rows, scaling, memory, roof, roof1, cfg, tf_version, threads, elapsed):
    paths = []
    csv_path = os.path.join(folder, "results.csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _csv_value(r.get("pass_" if c == "pass" else c)) for c in COLUMNS})
    paths.append(csv_path)

    json_path = os.path.join(folder, "results.json")
    with open(json_path, "w") as f:
        json.dump(dict(command=command, header=header, machine=dict(cpu=cpu_name(), cpus=os.cpu_count(),
                                                                     platform=platform.platform()),
                       kconv={k: str(v) for k, v in cfg.items()}, tensorflow=tf_version, numpy=np.__version__,
                       threads=threads, roof_gflops=roof, roof_1thread_gflops=roof1, seconds=elapsed,
                       rows=[_rename(r) for r in rows], scaling=[_rename(r) for r in scaling], memory=memory),
                  f, indent=1)
    paths.append(json_path)

    md_path = os.path.join(folder, "results.md")
    with open(md_path, "w") as f:
        f.write(f"`{command}`\n\n{header}\n\n")
        f.write("| layer | batch | pass | kconv ms | TF ms | speedup | GFLOP/s | % roof | algorithm | max err |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            f.write(f"| {r['layer']} | {r['batch']} | {r['pass_']} | {r['kconv_ms']:.2f} | {r['tf_ms']:.2f} | "
                    f"{r['speedup']:.2f}x | {_fmt(r.get('gflops'), '.1f')} | {_fmt(r.get('roof_pct'), '.0f')} | "
                    f"{r['algorithm']} | {r['max_err']:.1e} |\n")
        f.write("\n" + "\n".join(summary_lines(rows)) + "\n")
    paths.append(md_path)

    png = plot(os.path.join(folder, "speedup.png"), rows, header)
    if png:
        paths.append(png)
    return paths


def _rename(r):
    return {("pass" if k == "pass_" else k): v for k, v in r.items()}


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def plot(path, rows, title):
    """Horizontal bars: speedup vs TensorFlow per layer, forward and train side by side (1.0 = parity)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install 'kconv[bench]')", file=sys.stderr)
        return None
    names = list(dict.fromkeys(r["layer"] for r in rows))
    passes = list(dict.fromkeys(r["pass_"] for r in rows))
    lookup = {(r["layer"], r["pass_"]): r["speedup"] for r in rows}
    height = 0.8 / max(len(passes), 1)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.35 * len(names) * max(1, len(passes) / 2)))
    for i, p in enumerate(passes):
        ys = [j + i * height for j, n in enumerate(names) if (n, p) in lookup]
        xs = [lookup[(n, p)] for n in names if (n, p) in lookup]
        ax.barh(ys, xs, height=height, label=p)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks([j + height * (len(passes) - 1) / 2 for j in range(len(names))])
    ax.set_yticklabels(names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speedup vs TensorFlow (TF time / kconv time; > 1: kconv faster)")
    ax.set_title(title if len(title) < 110 else title[:107] + "...", fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

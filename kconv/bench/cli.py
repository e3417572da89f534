"""python -m kconv bench : kconv against TensorFlow on this machine, compiled, in one command.

    python -m kconv bench --quick                  # ~1-2 minutes: 4 models, 14 layers
    python -m kconv bench                          # 8 models, 36 layers, thread scaling, peak memory
    python -m kconv bench --models resnet20,tcn    # only those models
    python -m kconv bench --layers stride2,late    # only those layer groups (or text in layer names)
    python -m kconv bench --layers mobile          # depthwise, separable and transposed layers
    python -m kconv bench --out results/           # CSV, JSON, Markdown (+ PNG chart with matplotlib)

1. Whole models (kconv/bench/models.py): the demo's image and text CNNs, a CIFAR ResNet-20, a VGG-style CIFAR
   net, a dilated causal TCN, a net with an ImageNet-style RGB 7x7/2 stem, a MobileNet-v2-style net
   (depthwise 3x3) and a small U-Net (transposed 2x2/2 upsampling), each built on keras.layers and converted to
   kconv's layers (kconv.serving.convert: same weights); compiled train_on_batch and predict_on_batch timed as
   Keras runs them.
2. Layers (kconv/bench/layersets.py, convs.py): each pass (forward = conv + bias + ReLU, input gradient,
   filter gradient) inside tf.function, against TensorFlow's own ops inside tf.function, with the fusion each
   gets (TF: Conv + BiasAdd + Relu fused by grappler; kconv: bias and activation fused in its op).
3. Other layer kinds, on request (--layers mobile, or its groups depthwise, separable, transpose;
   kconv/bench/keraslayers.py): kconv's DepthwiseConv2D / SeparableConv2D / Conv2DTranspose layer against
   keras.layers' (TensorFlow's tf.nn.depthwise_conv2d / separable_conv2d / conv2d_transpose), same weights,
   with bias and ReLU, forward and a train step (forward + the gradients of x and of every weight), each in
   tf.function.

Timing (GUIDE section 6, "Fair timing"): after warm-up, contenders run in alternating blocks, each after a
pause and one discarded warm call; figures are medians over rounds; inputs rotate. ratio = TensorFlow (or
keras.layers) time / kconv time: > 1 means kconv is faster. GFLOP/s counts a direct convolution's flops
(2 per multiply-add; the same count for each pass), so Winograd can pass the roof; % roof is against
kconv.measure_roof(), this machine's fp32 FMA peak measured at start. max err = max |kconv - TF| / max |TF|.
Every table is printed with the machine, instruction set, threads and roof it was measured on, and a
geometric mean. No eager (call-by-call) figures are reported: Keras runs models compiled.

A full run adds thread scaling (one fresh process per thread count, kconv against TensorFlow; and kconv alone,
its thread counts interleaved within one process) and the peak memory of one training step's convolutions
(one process per contender); see kconv/bench/_worker.py. --quick skips them unless
--scaling / --memory ask. Outputs in --out: models.csv, layers.csv, results.json, results.md, speedup.png.
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

from . import layersets, models as model_zoo
from .._args import ALGORITHMS
from .._config import cpu_name
from .timing import geomean

# Timing settings per mode: (rounds, pause s, block s) for models and for layers; scaling_passes: fresh
# processes per thread count. Full-run model blocks of 0.4 s give the 100 ms MobileNet train step 4 calls a
# block (0.15 s gave it 1: its ratio moved 0.90-1.04x between runs, 0.97-1.01x in blocks of 5 calls).
SETTINGS = {
    "full": dict(model_rounds=9, model_pause=0.05, model_block=0.4, layer_rounds=7, layer_pause=0.05,
                 layer_block=0.04, scaling_passes=2),
    "quick": dict(model_rounds=5, model_pause=0.05, model_block=0.1, layer_rounds=5, layer_pause=0.05,
                  layer_block=0.02, scaling_passes=1),
    "smoke": dict(model_rounds=2, model_pause=0.01, model_block=0.01, layer_rounds=2, layer_pause=0.01,
                  layer_block=0.005, scaling_passes=1),
}

MODEL_COLUMNS = ["model", "key", "batch", "train_kconv_ms", "train_keras_ms", "train_ratio", "predict_kconv_ms",
                 "predict_keras_ms", "predict_ratio", "max_err", "kconv_convs", "train_calls", "predict_calls",
                 "rounds"]
LAYER_COLUMNS = ["layer", "group", "batch", "pass", "kconv_ms", "tf_ms", "ratio", "kconv_gflops", "kconv_roof_pct",
                 "tf_gflops", "tf_roof_pct", "algorithm", "max_err", "inner", "calls", "rounds"]
KERAS_LAYER_COLUMNS = ["layer", "group", "kind", "keras_class", "batch", "pass", "kconv_ms", "tf_ms", "ratio",
                       "kconv_gflops", "kconv_roof_pct", "tf_gflops", "tf_roof_pct", "max_err", "inner", "calls",
                       "rounds"]


def build_parser():
    p = argparse.ArgumentParser(prog="kconv bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a subset: 4 models and 14 layers, 1-2 minutes")
    mode.add_argument("--smoke", action="store_true",
                      help="tiny models and layers, seconds: checks the harness (the figures mean nothing)")
    p.add_argument("--models", default=None, metavar="SPEC",
                   help="comma-separated models (" + ", ".join(m.key for m in model_zoo.MODELS) +
                        "), all, none, or text in a model's name. Given alone, no layers run")
    p.add_argument("--layers", default=None, metavar="SPEC",
                   help="comma-separated groups (" + ", ".join(layersets.GROUPS + layersets.MOBILE_GROUPS) +
                        "), sets (" +
                        ", ".join(layersets.EXTRA_SETS) + "), all, none, or text in layer names (e.g. '3x3/2', "
                        "'kim'). Given alone, no models run")
    p.add_argument("--convolutions-only", action="store_true",
                   help="the kconv twins swap only their convolutions (Keras's BatchNormalization and ReLU kept)")
    p.add_argument("--no-models", action="store_true", help="skip the models (same as --models none)")
    p.add_argument("--no-layers", action="store_true", help="skip the layers (same as --layers none)")
    p.add_argument("--batch", type=_positive, default=None,
                   help="batch size for every model and layer (default: each one's own)")
    p.add_argument("--threads", type=_positive, default=None,
                   help="threads for kconv and TensorFlow's intra-op pool (default: all the CPUs allowed)")
    p.add_argument("--inter-op", type=_positive, default=None, metavar="N",
                   help="TensorFlow's inter-op threads, for both contenders (default: TensorFlow's own; 1 makes "
                        "one thread the caller of every kconv op: see the README's Threads section)")
    p.add_argument("--rounds", "--repeats", dest="rounds", type=_positive, default=None,
                   help="timed blocks per contender (default 7, --quick 5)")
    p.add_argument("--algorithm", default="auto", choices=ALGORITHMS,
                   help="kconv's algorithm for the layers (default auto; the models always run auto)")
    p.add_argument("--scaling", action=argparse.BooleanOptionalAction, default=None,
                   help="thread scaling on one layer (default: on, off with --quick/--smoke)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="peak memory of one training step (default: on, off with --quick/--smoke)")
    p.add_argument("--out", default="kconv-bench", help="folder for the results (default: ./kconv-bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    """A rich progress bar on stderr (rich comes with Keras), else one line per step; `write` prints a finished
    table to stdout without tearing the bar."""

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
                                        TimeElapsedColumn(), console=console, transient=True,
                                        redirect_stdout=False, redirect_stderr=False)
                    self.bar.start()
                    self.task = self.bar.add_task("", total=total)
            except ImportError:
                pass
        self.total, self.done, self.written = total, 0, False

    def step(self, text):
        """Announce the step about to run; the previous one is done."""
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, description=text[:40])
        elif self.enabled:
            print(f"[{self.done + 1}/{self.total}] {text}", file=sys.stderr, flush=True)
        self.done += 1

    def write(self, text):
        if self.bar is not None:
            self.bar.stop()
        print(("\n" if self.written else "") + text, flush=True)
        self.written = True
        if self.bar is not None:
            self.bar.start()

    def close(self):
        if self.bar is not None:
            self.bar.update(self.task, completed=self.total)
            self.bar.stop()


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    if args.rounds:
        settings.update(model_rounds=args.rounds, layer_rounds=args.rounds)
    try:
        chosen_models, layers = selection(args)
    except ValueError as e:
        parser.error(str(e))
    # convolutions (convs.py) and the other kinds (keraslayers.py); scaling and memory run on a convolution
    kind_layers = [layer for layer in layers if layer.kind != "conv"]
    layers = [layer for layer in layers if layer.kind == "conv"]
    want_scaling = bool(layers) and (args.scaling if args.scaling is not None else mode == "full")
    want_memory = bool(layers) and (args.memory if args.memory is not None else mode == "full")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t_start = time.perf_counter()
    try:
        import tensorflow as tf
    except ImportError:
        print("kconv bench compares against TensorFlow, which is not installed: pip install 'kconv[tf]'",
              file=sys.stderr)
        return 2
    tf.get_logger().setLevel("ERROR")   # retracing notices from the many small graphs the suite traces
    import keras
    import kconv
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        kconv.set_num_threads(args.threads)
    if args.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
    threads = kconv.get_num_threads()
    scale_layer = _scaling_layer(layers) if want_scaling else None
    scale_counts = _thread_counts(threads) if want_scaling else []

    steps = (1 + len(chosen_models) + len(layers) + len(kind_layers) + settings["scaling_passes"] * len(scale_counts)
             + (2 if want_memory else 0))
    progress = _Progress(steps, not args.no_progress)
    progress.step("measuring the FMA roof")
    op = kconv.load_op_library()
    roof = kconv.measure_roof(threads)
    roof1 = kconv.measure_roof(1) if scale_counts else None
    cfg = kconv.config()
    machine = dict(cpu=cpu_name(), cpus=os.cpu_count(), isa=cfg["isa"], threads=threads,
                   tf_intra_op=tf.config.threading.get_intra_op_parallelism_threads() or threads,
                   tf_inter_op=tf.config.threading.get_inter_op_parallelism_threads() or None,
                   roof_gflops=roof, roof_1thread_gflops=roof1, tensorflow=tf.__version__,
                   keras=keras.__version__, kconv=cfg["version"], op_path=op["path"], op_reason=op.get("reason"),
                   openmp=cfg["openmp"], platform=platform.platform(), numpy=np.__version__)
    header = machine_line(machine)
    sections, model_rows, layer_rows, kind_rows, scaling, memory = [], [], [], [], [], []
    interleaved = []
    try:
        t0 = time.perf_counter()
        for spec in chosen_models:
            progress.step(f"model: {spec.key}")
            model_rows.append(model_zoo.time_model(spec, settings["model_rounds"], settings["model_pause"],
                                                   settings["model_block"], batch=args.batch, smoke=args.smoke,
                                                   convolutions_only=args.convolutions_only))
        if model_rows:
            sections.append(model_section(header, model_rows, settings["model_rounds"], time.perf_counter() - t0))
            progress.write(sections[-1])
        if layers:
            from .convs import time_layer
            t0 = time.perf_counter()
            for layer in layers:
                progress.step(layer.name)
                for row in time_layer(tf, layer, settings["layer_rounds"], settings["layer_pause"],
                                      settings["layer_block"], algorithm=args.algorithm):
                    row.update(kconv_roof_pct=100 * row["kconv_gflops"] / roof,
                               tf_roof_pct=100 * row["tf_gflops"] / roof)
                    layer_rows.append(row)
            sections.append(layer_section(header, layer_rows, settings["layer_rounds"], args.algorithm,
                                          time.perf_counter() - t0))
            progress.write(sections[-1])
        if kind_layers:
            from . import keraslayers
            t0, missing = time.perf_counter(), []
            for layer in kind_layers:
                progress.step(layer.name)
                try:
                    rows = keraslayers.time_layer(tf, layer, settings["layer_rounds"], settings["layer_pause"],
                                                  settings["layer_block"])
                except keraslayers.Unavailable as e:
                    missing.append(f"{layer.name} ({e})")
                    continue
                for row in rows:
                    row.update(kconv_roof_pct=100 * row["kconv_gflops"] / roof,
                               tf_roof_pct=100 * row["tf_gflops"] / roof)
                    kind_rows.append(row)
            sections.append(keras_layer_section(header, kind_rows, settings["layer_rounds"], missing,
                                                time.perf_counter() - t0))
            progress.write(sections[-1])
        runs, processes = [], []
        for _ in range(settings["scaling_passes"] if scale_counts else 0):   # 1, 2, .., 1, 2, ..: drift on all
            for n in scale_counts:
                progress.step(f"threads {n}: {scale_layer.name}")
                # each process also times kconv alone at every count (convs.time_threads: kconv's op reads
                # its thread setting when it runs, whatever TensorFlow's pools)
                result = _subprocess(dict(task="scaling", threads=n, layer=scale_layer.to_dict(),
                                          rounds=settings["layer_rounds"], pause=settings["layer_pause"],
                                          block=settings["layer_block"], algorithm=args.algorithm,
                                          interleave=scale_counts if len(scale_counts) > 1 else None))
                runs += [dict(r, threads=n) for r in result["rows"]]
                if result.get("interleaved"):
                    processes.append(result["interleaved"])
        scaling = fastest_runs(scale_layer.name, runs) if runs else []
        if scaling:
            sections.append(scaling_section(header, scaling, roof1, roof, settings["scaling_passes"]))
            progress.write(sections[-1])
        interleaved = interleaved_rows(processes)
        if interleaved:
            sections.append(interleaved_section(header, interleaved, roof1, roof, len(processes)))
            progress.write(sections[-1])
        if want_memory:
            mem_layer = _scaling_layer(layers)
            for who in ("kconv", "tf"):
                progress.step(f"peak memory: {who}")
                memory.append(dict(layer=mem_layer.name, **_subprocess(dict(task="memory", contender=who,
                                                                            layer=mem_layer.to_dict()))))
            sections.append(memory_section(header, memory))
            progress.write(sections[-1])
    finally:
        progress.close()

    # The roof again: on a shared or virtual machine the cores a process gets can change during a run (seen
    # here: 2-thread roofs of 150 and 460 GFLOP/s on one VM, an hour apart). Ratios hold; % roof does not then.
    machine["roof_end_gflops"] = roof_end = kconv.measure_roof(threads)
    elapsed = time.perf_counter() - t_start
    command = "python -m kconv bench " + " ".join(sys.argv[1:] if argv is None else argv)
    if abs(roof_end - roof) > 0.2 * roof:
        print(f"\nnote: the FMA roof changed during the run ({roof:.0f} GFLOP/s at the start, {roof_end:.0f} at the "
              f"end): this machine's cores are shared or throttled, so read the ratios (measured side by side), "
              f"not % roof.")
    print(f"\n{elapsed:.0f} s in all ({mode} run; roof {roof:.1f} GFLOP/s at the start, {roof_end:.1f} at the end)")
    os.makedirs(args.out, exist_ok=True)
    paths = write_outputs(args.out, command, header, sections, machine, settings, mode, model_rows, layer_rows,
                          scaling, memory, elapsed, kind_rows, interleaved)
    print("wrote " + ", ".join(paths))
    return 0


def selection(args):
    """(models, layers) that the parsed arguments ask for: --models alone runs no layers and --layers alone no
    models; neither runs both defaults. ValueError for a selector that matches nothing it knows, or when
    nothing is left to run."""
    models_spec, layers_spec = args.models, args.layers
    if models_spec is not None and layers_spec is None:
        layers_spec = "none"
    if layers_spec is not None and models_spec is None:
        models_spec = "none"
    chosen_models = [] if args.no_models else model_zoo.select(models_spec, args.quick, args.smoke)
    layers = [] if args.no_layers else layersets.with_batch(
        layersets.select(layers_spec, args.quick, args.smoke), args.batch)
    if not chosen_models and not layers:
        raise ValueError("nothing to run: the selectors chose no model and no layer")
    return chosen_models, layers


# ----------------------------------------------------------------------------------------------- report

def machine_line(m):
    op = "native op" if m["op_path"] == "native" else f"tf.numpy_function FALLBACK ({m.get('op_reason')})"
    return (f"machine: {m['cpu']}, {m['cpus']} CPUs | ISA: {m['isa']} | threads: kconv {m['threads']}, "
            f"TensorFlow intra-op {m['tf_intra_op']}"
            f"{', inter-op ' + str(m['tf_inter_op']) if m.get('tf_inter_op') else ''} | "
            f"roof: {m['roof_gflops']:.1f} GFLOP/s fp32 FMA on "
            f"{m['threads']} threads | TensorFlow {m['tensorflow']}, Keras {m['keras']}, kconv {m['kconv']} ({op})")


def _num(value, digits=None):
    """Milliseconds and rates with about 3 significant digits."""
    if value is None:
        return ""
    if digits is not None:
        return f"{value:.{digits}f}"
    a = abs(value)
    return f"{value:.3f}" if a < 1 else f"{value:.2f}" if a < 100 else f"{value:.1f}"


def markdown_table(head, rows, align):
    """A Markdown table padded into columns (readable as text too). align: 'l' or 'r' per column."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(head)]

    def line(values):
        return "| " + " | ".join(v.ljust(w) if a == "l" else v.rjust(w)
                                 for v, w, a in zip(values, widths, align)) + " |"
    rule = "|" + "|".join((":" + "-" * (w + 1)) if a == "l" else ("-" * (w + 1) + ":")
                          for w, a in zip(widths, align)) + "|"
    return "\n".join([line(head), rule] + [line(r) for r in cells])


def model_section(header, rows, rounds, seconds=None):
    head = ["model", "batch", "train kconv ms", "train keras ms", "train ratio", "predict kconv ms",
            "predict keras ms", "predict ratio", "max err", "kconv convs", "kconv BN"]
    body = [[r["model"], r["batch"], _num(r["train_kconv_ms"]), _num(r["train_keras_ms"]), f"{r['train_ratio']:.2f}x",
             _num(r["predict_kconv_ms"]), _num(r["predict_keras_ms"]), f"{r['predict_ratio']:.2f}x",
             f"{r['max_err']:.1e}", r.get("kconv_convs", ""), r.get("kconv_bn", "")] for r in rows]
    g_train, g_pred = geomean(r["train_ratio"] for r in rows), geomean(r["predict_ratio"] for r in rows)
    body.append([f"geomean ({len(rows)} models)", "", "", "", f"{g_train:.2f}x", "", "", f"{g_pred:.2f}x", "", "", ""])
    return "\n".join([
        "## Whole models: compiled train_on_batch / predict_on_batch, kconv layers vs keras.layers twin",
        "", header, "",
        markdown_table(head, body, "lrrrrrrrrrr"), "",
        f"geomean ratio: train_on_batch {g_train:.2f}x (range {min(r['train_ratio'] for r in rows):.2f}x - "
        f"{max(r['train_ratio'] for r in rows):.2f}x), predict_on_batch {g_pred:.2f}x (range "
        f"{min(r['predict_ratio'] for r in rows):.2f}x - {max(r['predict_ratio'] for r in rows):.2f}x) over "
        f"{len(rows)} models.",
        f"ratio = keras.layers time / kconv time (> 1: kconv faster); ms per call, median of {rounds} alternating "
        f"blocks (each after a pause and a discarded warm call); same weights; max err of predict_on_batch; "
        f"kconv convs = the kconv twin's conv layers on kconv / all its conv layers; kconv BN = its "
        f"BatchNormalization layers on kconv / all (--convolutions-only keeps Keras's BatchNorm and ReLU)"
        + (f". {seconds:.0f} s." if seconds is not None else "."),
        *[f"WARNING: {r['model']}: the weights of {' and '.join(r['diverged'])} became non-finite while timed "
          f"(training diverged): its row times NaN arithmetic." for r in rows if r.get("diverged")]])


def layer_section(header, rows, rounds, algorithm, seconds=None):
    head = ["layer", "batch", "pass", "kconv ms", "TF ms", "ratio", "kconv GFLOP/s", "kconv % roof", "TF % roof",
            "kconv algorithm", "max err"]
    body = [[r["layer"], r["batch"], r["pass_"], _num(r["kconv_ms"]), _num(r["tf_ms"]), f"{r['ratio']:.2f}x",
             _num(r["kconv_gflops"], 1), _num(r["kconv_roof_pct"], 0), _num(r["tf_roof_pct"], 0), r["algorithm"],
             "" if r["max_err"] is None else f"{r['max_err']:.1e}"] for r in rows]
    passes = list(dict.fromkeys(r["pass_"] for r in rows))
    summary = []
    for p in passes:
        ratios = [r["ratio"] for r in rows if r["pass_"] == p]
        body.append([f"geomean {p}", "", "", "", "", f"{geomean(ratios):.2f}x", "", "", "", "", ""])
        summary.append(f"{p} {geomean(ratios):.2f}x (range {min(ratios):.2f}x - {max(ratios):.2f}x)")
    if len(passes) > 1:
        body.append(["geomean all passes", "", "", "", "", f"{geomean(r['ratio'] for r in rows):.2f}x",
                     "", "", "", "", ""])
        summary.append(f"all passes {geomean(r['ratio'] for r in rows):.2f}x")
    n_layers = len(dict.fromkeys(r["layer"] for r in rows))
    return "\n".join([
        "## Layers: each pass in tf.function, kconv vs TensorFlow's own ops",
        "", header, "",
        markdown_table(head, body, "lrlrrrrrrlr"), "",
        f"geomean ratio over {n_layers} layers: " + ", ".join(summary) + ".",
        f"ratio = TF time / kconv time (> 1: kconv faster); ms per pass, median of {rounds} alternating blocks. "
        f"forward = conv + bias + ReLU (TF: grappler-fused Conv+BiasAdd+Relu; kconv: fused epilogue, "
        f"algorithm={algorithm}); input grad / filter grad = one gradient of the convolution by GradientTape "
        f"(the other passes pruned). Inputs and weights differ from pass to pass, and kconv keeps no filter "
        f"transforms between calls (kconv.ops.set_filter_cache(False)): a training step's passes. "
        f"GFLOP/s counts direct-convolution flops, so Winograd can pass 100 % roof"
        + (f". {seconds:.0f} s." if seconds is not None else ".")])


def keras_layer_section(header, rows, rounds, missing=(), seconds=None):
    """The other kinds' table (keraslayers.py): kconv's Keras layer against keras.layers', forward and train step."""
    from .keraslayers import TF_OPS
    title = ("## Other layer kinds: kconv's Keras layer vs keras.layers' (TensorFlow's " +
             " / ".join(TF_OPS.values()) + "), same weights, each pass in tf.function")
    notes = ([f"Not run, kconv has no such layer: {', '.join(missing)}."] if missing else [])
    if not rows:
        return "\n".join([title, "", header, "", *notes])
    head = ["Keras layer", "batch", "pass", "kconv ms", "TF ms", "ratio", "kconv GFLOP/s", "kconv % roof",
            "TF % roof", "max err"]
    body = [[r["layer"], r["batch"], r["pass_"], _num(r["kconv_ms"]), _num(r["tf_ms"]), f"{r['ratio']:.2f}x",
             _num(r["kconv_gflops"], 1), _num(r["kconv_roof_pct"], 0), _num(r["tf_roof_pct"], 0),
             "" if r["max_err"] is None else f"{r['max_err']:.1e}"] for r in rows]
    summary = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        for p in dict.fromkeys(r["pass_"] for r in rows):
            ratios = [r["ratio"] for r in rows if r["pass_"] == p and r["kind"] == kind]
            if ratios:
                body.append([f"geomean {kind} {p}", "", "", "", "", f"{geomean(ratios):.2f}x", "", "", "", ""])
                summary.append(f"{kind} {p} {geomean(ratios):.2f}x (range {min(ratios):.2f}x - {max(ratios):.2f}x)")
    return "\n".join([
        title, "", header, "",
        markdown_table(head, body, "lrlrrrrrrr"), "",
        "geomean ratio: " + ", ".join(summary) + ".",
        f"ratio = keras.layers time / kconv time (> 1: kconv faster); ms per pass, median of {rounds} alternating "
        f"blocks. Both layers with bias and ReLU (Keras: TF's op, BiasAdd, Relu as grappler leaves them; kconv: "
        f"its layer as it runs, fused where it can), called by stateless_call with the same weight tensors, which "
        f"rotate with the inputs. forward = the layer's output; train step = forward + the gradients of x and of "
        f"every weight given dy. max err of the train step: the same layers without the ReLU (a pre-activation "
        f"within rounding of 0 can land on either side of its kink and move a gradient by a whole term). GFLOP/s "
        f"counts a direct computation's flops (train step: 3x the forward's)"
        + (f". {seconds:.0f} s." if seconds is not None else "."), *notes])


def fastest_runs(layer, runs):
    """One row per (threads, pass) from the scaling processes' rows: each contender's fastest time over the
    processes (the run least disturbed by the machine's other tenants), the ratio taken between those."""
    rows = {}
    for r in runs:
        key = (r["threads"], r["pass_"])
        row = rows.setdefault(key, dict(layer=layer, threads=r["threads"], pass_=r["pass_"], kconv_ms=r["kconv_ms"],
                                        tf_ms=r["tf_ms"], kconv_gflops=r["kconv_gflops"]))
        if r["kconv_ms"] < row["kconv_ms"]:
            row.update(kconv_ms=r["kconv_ms"], kconv_gflops=r["kconv_gflops"])
        row["tf_ms"] = min(row["tf_ms"], r["tf_ms"])
    for row in rows.values():
        row["ratio"] = row["tf_ms"] / row["kconv_ms"]
    return list(rows.values())


def step_rows(rows):
    """Per thread count with every pass timed, a row for a training step's convolutions: the three passes'
    times added (kconv and TF each), GFLOP/s over the three passes' flops."""
    by_threads = {}
    for r in rows:
        by_threads.setdefault(r["threads"], []).append(r)
    steps = []
    for threads, group in by_threads.items():
        if {r["pass_"] for r in group} != {"forward", "input grad", "filter grad"}:
            continue
        kconv_ms, tf_ms = sum(r["kconv_ms"] for r in group), sum(r["tf_ms"] for r in group)
        gflop = sum(r["kconv_gflops"] * r["kconv_ms"] for r in group)     # GFLOP/s x ms = MFLOP
        steps.append(dict(layer=group[0]["layer"], threads=threads, pass_="step (3 passes)", kconv_ms=kconv_ms,
                          tf_ms=tf_ms, ratio=tf_ms / kconv_ms, kconv_gflops=gflop / kconv_ms))
    return steps


def scaling_section(header, rows, roof1, roof, passes=1):
    steps = step_rows(rows)
    rows = sorted(rows + steps, key=lambda r: r["threads"])     # stable: each count's passes, then its step
    base = {r["pass_"]: r for r in rows if r["threads"] == rows[0]["threads"]}
    head = ["threads", "pass", "kconv ms", "TF ms", "ratio", "kconv GFLOP/s", "kconv speedup", "TF speedup"]
    body = [[r["threads"], r["pass_"], _num(r["kconv_ms"]), _num(r["tf_ms"]), f"{r['ratio']:.2f}x",
             _num(r["kconv_gflops"], 1), f"{base[r['pass_']]['kconv_ms'] / r['kconv_ms']:.2f}x",
             f"{base[r['pass_']]['tf_ms'] / r['tf_ms']:.2f}x"] for r in rows]
    return "\n".join([
        f"## Thread scaling: {rows[0]['layer']} (a fresh process per count"
        + (f", the counts run {passes} times in turn, each contender's fastest process shown" if passes > 1 else "")
        + ": TF intra-op = kconv threads = n)",
        "", header, "",
        markdown_table(head, body, "rlrrrrrr"), "",
        f"speedup = time on {rows[0]['threads']} thread(s) / time on n; roof {roof1:.1f} GFLOP/s on 1 thread, "
        f"{roof:.1f} on all."
        + (" step (3 passes) = the three passes' times added: a training step's convolutions." if steps else "")])


def interleaved_rows(processes):
    """One row per (threads, pass) from the processes' convs.time_threads rows, plus a step row per count
    when all three passes ran: kconv ms the median over processes, speedup the median over processes of
    each process's own ratio (time on the fewest threads / time on n, both measured in that process)."""
    if not processes:
        return []
    per = []
    for rows in processes:
        by = {(r["threads"], r["pass_"]): r["kconv_ms"] for r in rows}
        counts = sorted({t for t, _ in by})
        passes = list(dict.fromkeys(p for _, p in by))
        if set(passes) == {"forward", "input grad", "filter grad"}:
            for t in counts:
                by[(t, "step (3 passes)")] = sum(by[(t, p)] for p in passes)
            passes.append("step (3 passes)")
        per.append((by, counts, passes))
    _, counts, passes = per[0]
    flop = {r["pass_"]: r["kconv_gflops"] * r["kconv_ms"] for r in processes[0]}     # MFLOP per pass
    out = []
    for t in counts:
        for p in passes:
            ms = float(np.median([by[(t, p)] for by, _, _ in per]))
            speedup = float(np.median([by[(counts[0], p)] / by[(t, p)] for by, _, _ in per]))
            mflop = flop.get(p, sum(flop.values()))
            out.append(dict(layer=processes[0][0]["layer"], threads=t, pass_=p, kconv_ms=ms, kconv_gflops=mflop / ms,
                            speedup=speedup, processes=len(per)))
    return out


def interleaved_section(header, rows, roof1, roof, processes=1):
    head = ["threads", "pass", "kconv ms", "kconv GFLOP/s", "kconv speedup"]
    body = [[r["threads"], r["pass_"], _num(r["kconv_ms"]), _num(r["kconv_gflops"], 1), f"{r['speedup']:.2f}x"]
            for r in rows]
    return "\n".join([
        f"## Thread scaling, kconv alone: {rows[0]['layer']} (its thread counts in alternating blocks within one "
        f"process{'' if processes == 1 else f', {processes} processes'}, those of the table above)",
        "", header, "",
        markdown_table(head, body, "rlrrr"), "",
        f"Each pass in tf.function as in the layer table, kconv.set_num_threads(n) before each call; kconv ms = the "
        f"median over processes of each process's median block; speedup = time on {rows[0]['threads']} thread(s) / "
        f"time on n, taken within each process (both counts timed in the same minutes), the median over processes. "
        f"roof {roof1:.1f} GFLOP/s on 1 thread, {roof:.1f} on all."
        + (" step (3 passes) = the three passes' times added: a training step's convolutions."
           if any(r["pass_"] == "step (3 passes)" for r in rows) else "")])


def memory_section(header, rows):
    head = ["contender", "extra MiB", "process peak MiB"]
    body = [[m["contender"], f"{m['extra_mib']:.1f}", f"{m['process_peak_mib']:.1f}"] for m in rows]
    return "\n".join([
        f"## Peak memory: one training step's convolutions on {rows[0]['layer']}",
        "", header, "", markdown_table(head, body, "lrr"), "",
        f"One process per contender, one cold step (forward + both gradients; kconv through its numpy API, with no "
        f"TensorFlow in the process; TF eagerly); extra = peak RSS during the step - RSS before it "
        f"({rows[0]['method']})."])


def _scaling_layer(layers):
    """The layer for thread scaling and memory: the selected layer with the most flops that is cheap enough
    (the largest under 2 GFLOP, else the smallest)."""
    from .convs import flops
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


# ----------------------------------------------------------------------------------------------- files

def write_outputs(folder, command, header, sections, machine, settings, mode, model_rows, layer_rows, scaling,
                  memory, elapsed, kind_rows=(), interleaved=()):
    paths = []
    if model_rows:
        paths.append(_write_csv(os.path.join(folder, "models.csv"), MODEL_COLUMNS, model_rows))
    if layer_rows:
        paths.append(_write_csv(os.path.join(folder, "layers.csv"), LAYER_COLUMNS, layer_rows))
    if kind_rows:
        paths.append(_write_csv(os.path.join(folder, "keras_layers.csv"), KERAS_LAYER_COLUMNS, kind_rows))

    json_path = os.path.join(folder, "results.json")
    with open(json_path, "w") as f:
        json.dump(dict(command=command, header=header, mode=mode, machine=machine, settings=settings,
                       seconds=elapsed, models=model_rows, layers=[_rename(r) for r in layer_rows],
                       keras_layers=[_rename(r) for r in kind_rows],
                       keras_layers_geomean={f"{k} {p}": geomean(r["ratio"] for r in kind_rows
                                                                  if r["kind"] == k and r["pass_"] == p)
                                             for k in dict.fromkeys(r["kind"] for r in kind_rows)
                                             for p in dict.fromkeys(r["pass_"] for r in kind_rows)},
                       scaling=[_rename(r) for r in scaling],
                       scaling_interleaved=[_rename(r) for r in interleaved], memory=memory,
                       geomean=dict(train=geomean(r["train_ratio"] for r in model_rows),
                                    predict=geomean(r["predict_ratio"] for r in model_rows),
                                    **{p: geomean(r["ratio"] for r in layer_rows if r["pass_"] == p)
                                       for p in dict.fromkeys(r["pass_"] for r in layer_rows)})),
                  f, indent=1, default=str)
    paths.append(json_path)

    md_path = os.path.join(folder, "results.md")
    with open(md_path, "w") as f:
        f.write(f"`{command}` ({elapsed:.0f} s)\n\n" + "\n\n".join(sections) + "\n")
    paths.append(md_path)

    title = (f"{machine['cpu']}, {machine['isa']}, {machine['threads']} threads, roof {machine['roof_gflops']:.0f} "
             f"GFLOP/s; TensorFlow {machine['tensorflow']}, kconv {machine['kconv']}")
    png = plot(os.path.join(folder, "speedup.png"), model_rows, layer_rows, title, kind_rows)
    if png:
        paths.append(png)
    return paths


def _write_csv(path, columns, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({c: _csv_value(r.get("pass_" if c == "pass" else c)) for c in columns})
    return path


def _rename(r):
    return {("pass" if k == "pass_" else k): v for k, v in r.items()}


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def plot(path, model_rows, layer_rows, title, kind_rows=()):
    """Horizontal bars of the ratios (> 1: kconv faster): models (train, predict) above, layers (three passes)
    below, then the other kinds (forward, train step)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install 'kconv[bench]')", file=sys.stderr)
        return None
    panels = []
    if model_rows:
        panels.append(("models: keras.layers time / kconv time", [r["model"] for r in model_rows],
                       {"train_on_batch": [r["train_ratio"] for r in model_rows],
                        "predict_on_batch": [r["predict_ratio"] for r in model_rows]}))
    if layer_rows:
        names = list(dict.fromkeys(r["layer"] for r in layer_rows))
        passes = list(dict.fromkeys(r["pass_"] for r in layer_rows))
        lookup = {(r["layer"], r["pass_"]): r["ratio"] for r in layer_rows}
        panels.append(("layers: TF time / kconv time", names,
                       {p: [lookup.get((n, p), 0.0) for n in names] for p in passes}))
    if kind_rows:
        names = list(dict.fromkeys(r["layer"] for r in kind_rows))
        passes = list(dict.fromkeys(r["pass_"] for r in kind_rows))
        lookup = {(r["layer"], r["pass_"]): r["ratio"] for r in kind_rows}
        panels.append(("other kinds: keras.layers time / kconv layer time", names,
                       {p: [lookup.get((n, p), 0.0) for n in names] for p in passes}))
    sizes = [len(names) for _, names, _ in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.5 + 0.32 * sum(sizes) + 0.8 * len(panels)),
                             gridspec_kw=dict(height_ratios=[max(s, 2) for s in sizes]), squeeze=False)
    for ax, (label, names, series) in zip(axes[:, 0], panels):
        height = 0.8 / max(len(series), 1)
        for i, (name, values) in enumerate(series.items()):
            ax.barh([j + i * height for j in range(len(names))], values, height=height, label=name)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_ylim(len(names) - 1 + len(series) * height, -height)
        ax.set_yticks([j + height * (len(series) - 1) / 2 for j in range(len(names))])
        ax.set_yticklabels(names, fontsize=7)
        ax.set_xlabel(label + " (> 1: kconv faster)", fontsize=8)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

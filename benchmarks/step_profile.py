"""Where a compiled training step spends its time: each op type, kconv's twin against the keras.layers twin.

    python benchmarks/step_profile.py [--models text,image] [--steps 10] [--predict] [--timeline]

For each model of `python -m kconv bench`'s suite (kconv/bench/models.py; same weights, same compile), runs
`--steps` compiled train_on_batch calls of each twin under TensorFlow's profiler (tf.profiler.experimental)
and reads the ops back from its trace (the XPlane protobuf TensorFlow writes): ms per step for each op type,
grouped into convolution forward / input gradient / filter gradient / bias and activation gradients / the rest.

Two more columns say how the step used the cores. "busy threads" is the ops' summed time over the step's
wall time: how many ops ran at once on average (a 2-CPU machine running one op at a time on all its cores
reads 1.0). The conv ops' time is each op's own wall time; while two run at once (TensorFlow runs a
layer's input and filter gradients, and a text CNN's parallel branches, on its two inter-op threads) each
goes at about one core's speed, so their sum against TensorFlow's is what the one-thread per-pass table
predicts, not the all-threads one. `--timeline` prints the ops of the last step that took over 0.3 ms, by
thread, start and end: which ran beside which. README (Known limits) quotes it.

The profiler adds a little to every op; both twins pay it. Step times here are not the model table's (that
one times without the profiler, in alternating blocks): use this for where the time goes, not for ratios.
"""
import argparse
import collections
import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np

GROUPS = [   # (group, op types): kconv's native ops and what TensorFlow's grappler / oneDNN run for Keras
    ("conv forward", ("KconvConv", "_MklNativeFusedConv2D", "_MklNativeConv2D", "_FusedConv2D", "Conv2D",
                      "_MklFusedConv2D", "_MklConv2D", "KconvDepthwiseConv", "DepthwiseConv2dNative",
                      "_MklNativeFusedDepthwiseConv2dNative", "_MklNativeDepthwiseConv2dNative")),
    ("conv input grad", ("KconvConvBackpropInput", "_MklNativeConv2DBackpropInput", "Conv2DBackpropInput",
                         "_MklConv2DBackpropInput", "DepthwiseConv2dNativeBackpropInput")),
    ("conv filter grad", ("KconvConvBackpropFilter", "_MklNativeConv2DBackpropFilter", "Conv2DBackpropFilter",
                          "_MklConv2DBackpropFilter", "_MklNativeConv2DBackpropFilterWithBias",
                          "DepthwiseConv2dNativeBackpropFilter")),
    ("bias / activation grads", ("KconvBiasActivationGrad", "BiasAddGrad", "ReluGrad", "Relu6Grad")),
]


def group_of(op_type):
    for name, types in GROUPS:
        if op_type in types:
            return name
    return "other ops"


def trace_events(logdir):
    """[(start_ms, end_ms, thread, op name, op type)] of every TensorFlow op in the trace under logdir."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise RuntimeError(f"TensorFlow's profiler wrote no trace under {logdir}")
    space = xplane_pb2.XSpace()
    with open(files[0], "rb") as f:
        space.ParseFromString(f.read())
    events = []
    for plane in space.planes:
        if not plane.name.startswith("/host:CPU"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for e in line.events:
                name = names.get(e.metadata_id, "").strip()
                # TensorFlow's ops are "node:Type"; executor scopes ("ExecutorState::Process") and function
                # calls ("EagerLocalExecute: __inference_...") wrap them and would count their time twice
                if ":" not in name or "::" in name:
                    continue
                node, op_type = (part.strip() for part in name.rsplit(":", 1))
                if op_type.startswith("__inference") or not op_type:
                    continue
                start = (line.timestamp_ns * 1000 + e.offset_ps) / 1e9
                events.append((start, start + e.duration_ps / 1e9, line.name, node, op_type))
    return sorted(events)


def profile_steps(model, step, steps, logdir):
    """Runs step(model) `steps` times under the profiler; (wall ms per step, events)."""
    import tensorflow as tf
    for _ in range(3):
        step(model)                     # traced and warm before the profiler starts
    time.sleep(0.05)
    tf.profiler.experimental.start(logdir)
    t0 = time.perf_counter()
    for _ in range(steps):
        step(model)
    wall = (time.perf_counter() - t0) / steps * 1e3
    tf.profiler.experimental.stop()
    return wall, trace_events(logdir)


def summarize(wall, events, steps):
    by_type, count = collections.Counter(), collections.Counter()
    for t0, t1, _, _, op_type in events:
        by_type[op_type] += (t1 - t0) / steps
        count[op_type] += 1 / steps
    by_group = collections.Counter()
    for op_type, ms in by_type.items():
        by_group[group_of(op_type)] += ms
    return dict(wall=wall, by_type=by_type, count=count, by_group=by_group, busy=sum(by_type.values()) / wall)


def print_model(title, res, top):
    kc, ke = res["kconv"], res["keras"]
    print(f"\n{title}: train step, ms per step under the profiler: kconv {kc['wall']:.1f}, keras.layers "
          f"{ke['wall']:.1f}; busy threads (ops' time / wall) kconv {kc['busy']:.2f}, keras {ke['busy']:.2f}")
    print(f"| {'group':26s} | kconv ms | keras ms | keras / kconv |")
    print(f"|:{'-' * 26}-|---------:|---------:|--------------:|")
    for name in [g for g, _ in GROUPS] + ["other ops"]:
        a, b = kc["by_group"].get(name, 0.0), ke["by_group"].get(name, 0.0)
        ratio = f"{b / a:.2f}x" if a > 0 and b > 0 else ""
        print(f"| {name:26s} | {a:8.2f} | {b:8.2f} | {ratio:>13s} |")
    print(f"\n| {'op type':36s} | kconv ms | n | keras ms | n |")
    print(f"|:{'-' * 36}-|---------:|--:|---------:|--:|")
    types = sorted(set(kc["by_type"]) | set(ke["by_type"]),
                   key=lambda t: -max(kc["by_type"].get(t, 0), ke["by_type"].get(t, 0)))
    for t in types[:top]:
        print(f"| {t:36s} | {kc['by_type'].get(t, 0):8.2f} | {kc['count'].get(t, 0):2.0f} "
              f"| {ke['by_type'].get(t, 0):8.2f} | {ke['count'].get(t, 0):2.0f} |")


def print_timeline(who, events, wall):
    """The ops of the last step over 0.3 ms: start and end (ms from the first), thread, op."""
    end = max(e[1] for e in events)
    last = [e for e in events if e[0] >= end - wall and e[1] - e[0] > 0.3]
    if not last:
        return
    base = last[0][0]
    threads = {name: i for i, name in enumerate(sorted({e[2] for e in last}))}
    print(f"\n{who}: the last step's ops over 0.3 ms (ms from its first; T = thread)")
    for t0, t1, line, node, op_type in last:
        print(f"  {t0 - base:7.2f} {t1 - base:7.2f}  T{threads[line]}  {t1 - t0:6.2f}  {op_type:32s} {node[-50:]}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="text,image", help="models of the suite (kconv bench --models)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--predict", action="store_true", help="profile predict_on_batch instead of training")
    parser.add_argument("--timeline", action="store_true", help="print the last step's ops, thread by thread")
    parser.add_argument("--top", type=int, default=14, help="op types listed per model")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    import keras
    import tensorflow as tf
    import kconv
    from kconv._config import cpu_name
    from kconv.bench import models as suite

    threads = kconv.get_num_threads()
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs | ISA: {kconv.config()['isa']} | threads: kconv {threads}, "
          f"TensorFlow intra-op {tf.config.threading.get_intra_op_parallelism_threads() or threads} | roof: "
          f"{kconv.measure_roof(threads):.1f} GFLOP/s fp32 FMA on {threads} threads | TensorFlow {tf.__version__}, "
          f"Keras {keras.__version__}, kconv {kconv.config()['version']} ({kconv.load_op_library()['path']} op)")
    logroot = tempfile.mkdtemp(prefix="kconv_step_profile_")
    try:
        for spec in suite.select(args.models):
            rng = np.random.default_rng(0)
            ours, theirs = suite.twins(spec)
            data = [tuple(tf.constant(a) for a in spec.inputs(rng, spec.batch)) for _ in range(3)]
            for m in (ours, theirs):
                m.compile(optimizer=keras.optimizers.SGD(spec.learning_rate, momentum=0.9), loss=spec.loss,
                          jit_compile=False)
            turn = {"i": 0}

            def step(model):
                turn["i"] = (turn["i"] + 1) % 3
                if args.predict:
                    model.predict_on_batch(data[turn["i"]][0])
                else:
                    model.train_on_batch(*data[turn["i"]])

            res, events = {}, {}
            for who, model in (("kconv", ours), ("keras", theirs)):
                logdir = os.path.join(logroot, f"{spec.key}_{who}")
                wall, events[who] = profile_steps(model, step, args.steps, logdir)
                res[who] = summarize(wall, events[who], args.steps)
            print_model(f"{spec.title}, batch {spec.batch}" + (" (predict)" if args.predict else ""), res,
                        args.top)
            if args.timeline:
                for who in ("kconv", "keras"):
                    print_timeline(who, events[who], res[who]["wall"])
    finally:
        shutil.rmtree(logroot, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One layer, kconv against TensorFlow, each pass compiled: the graphs, the algorithm kconv plans, the flops,
the errors, the timing.

Three passes, each a `tf.function` for both contenders:

    forward       TF: tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, ...), b)), which grappler's remapper fuses
                  into one oneDNN call (Conv + BiasAdd + Relu); kconv: kconv.conv2d(x, w, ..., bias=b,
                  activation="relu"), the epilogue fused into the native op's output store.
    input grad    dx of the convolution: a GradientTape over the forward, with respect to x only, given dy.
    filter grad   dw, the same with respect to w only.

For the gradients both sides differentiate the plain convolution (no bias, no activation) with a
GradientTape restricted to one gradient: TensorFlow prunes the unused forward and the other gradient, so TF
runs one Conv2DBackpropInput / Conv2DBackpropFilter and kconv one KconvConvBackpropInput / ...Filter (the suite
checks kconv's kernel pass counters). 1-D layers go through tf.nn.conv1d (as Keras's Conv1D does); a causal
layer is tf.pad + a VALID convolution on TF's side (as Keras does it) and padding="CAUSAL" on kconv's.

A tf.function call costs TensorFlow tens to hundreds of microseconds before any op runs, the same for both,
but enough to flatten a small layer's ratio. So a graph runs `inner` passes in a chain, with `inner` chosen so
that one graph call lasts a few milliseconds; the figure is per pass. Each pass of the chain has its own inputs
(so grappler merges none of them) and waits for the previous one through a control dependency taken on an
Identity of the previous result, not on the result itself: a control edge out of the Relu would stop
grappler's remapper from fusing it into the convolution (checked by optimizing the graphs: a chained TF
forward has one _FusedConv2D per pass and nothing else, like a single one).

The timed graphs capture their inputs (`captured_chain`): passed as arguments, every tensor costs the call
Python-side work (flattening, signature matching), ~30 us a pass on a 2-CPU Zen 5 VM against ~3 us captured
(an empty pass, tf.identity of the bias, chained 16 times: 40 -> 9 us a pass; one pass a call: 180 -> 97 us).
That overhead, the same for both contenders, pulled small layers' ratios toward 1.0.

Inputs, weights included, differ from pass to pass, and calls alternate between two graphs. But each node of a
graph sees the same captured weights on every call, and kconv's op keeps a node's transformed Winograd filters
when its weights come twice in a row (inference): timed so, the forward skipped its filters' transform (uprobes
on the transform: none in 200 chained Kim k6 forwards) where a training step pays it. So the timed functions
run with kconv's kept transforms off (`training_weights`, kconv.ops.set_filter_cache(False)): the forward is a
training step's forward; predict_on_batch in the model table covers inference. TensorFlow keeps nothing of the
kind here (its chained passes take as long with their weights passed as arguments, less the arguments' cost).
"""
import contextlib
import math

import numpy as np

from .timing import blocks, calls_for, estimate

PASSES = ("forward", "input grad", "filter grad")


def out_spatial(layer):
    if layer.padding == "CAUSAL":
        return tuple(layer.spatial)
    span = layer.dilation * (layer.kernel - 1) + 1
    if layer.padding == "SAME":
        return tuple(-(-n // layer.stride) for n in layer.spatial)
    return tuple((n - span) // layer.stride + 1 for n in layer.spatial)


def flops(layer):
    """A direct convolution's flops (2 per multiply-add), the same for each pass. Winograd does fewer
    multiplications, so its GFLOP/s on this count can pass the roof."""
    return 2.0 * layer.batch * math.prod(out_spatial(layer)) * layer.c * layer.k * layer.kernel ** layer.nd


def shapes(layer):
    nd = layer.nd
    x = (layer.batch,) + tuple(layer.spatial) + (layer.c,)
    w = (layer.kernel,) * nd + (layer.c, layer.k)
    y = (layer.batch,) + out_spatial(layer) + (layer.k,)
    return x, w, y


def algorithms(layer, algorithm="auto"):
    """What kconv plans for each pass: {"forward": "direct" | "winograd F(4x4,3x3)" ...}. Asks kconv.ops for
    its plan (kconv's numpy API plans the same way as its op library); "?" if kconv cannot say."""
    try:
        from kconv import ops
        x, w, _ = shapes(layer)
        conv = ops._describe(layer.nd, x, w, layer.stride, layer.padding, "NHWC" if layer.nd == 2 else "NWC",
                             layer.dilation)
        tiles = tuple(ops._plan(conv, np.dtype(np.float32), algorithm, None).tiles)
    except Exception:   # an internal that moved: the table says "?" rather than the suite failing
        return {p: "?" for p in PASSES}

    def name(m):
        if not m:
            return "direct"
        k = layer.kernel
        return f"winograd F({m}x{m},{k}x{k})" if layer.nd == 2 else f"winograd F({m},{k})"
    return {p: name(m) for p, m in zip(PASSES, tiles)}


def _tf_conv(tf, layer):
    """TensorFlow's convolution as Keras's layers run it."""
    if layer.nd == 2:
        return lambda x, w: tf.nn.conv2d(x, w, layer.stride, layer.padding, dilations=layer.dilation)
    if layer.padding == "CAUSAL":
        left = layer.dilation * (layer.kernel - 1)
        return lambda x, w: tf.nn.conv1d(tf.pad(x, [[0, 0], [left, 0], [0, 0]]), w, layer.stride, "VALID",
                                         dilations=layer.dilation)
    return lambda x, w: tf.nn.conv1d(x, w, layer.stride, layer.padding, dilations=layer.dilation)


def _kconv_conv(layer, algorithm, threads):
    import kconv
    fn = kconv.conv2d if layer.nd == 2 else kconv.conv1d
    return lambda x, w, **kw: fn(x, w, layer.stride, layer.padding, dilations=layer.dilation, algorithm=algorithm,
                                 threads=threads, **kw)


def pass_functions(tf, layer, algorithm="auto", threads=None):
    """{pass: {"kconv": f, "tf": f}}: each f takes one input set (x, w, b, dy) and returns the pass's result."""
    tf_conv = _tf_conv(tf, layer)
    kc_conv = _kconv_conv(layer, algorithm, threads)

    def gradient(conv, wrt):
        def f(x, w, b, dy):
            with tf.GradientTape() as tape:
                tape.watch(x if wrt == "x" else w)
                y = conv(x, w)
            return tape.gradient(y, x if wrt == "x" else w, output_gradients=dy)
        return f

    return {
        "forward": {"kconv": lambda x, w, b, dy: kc_conv(x, w, bias=b, activation="relu"),
                    "tf": lambda x, w, b, dy: tf.nn.relu(tf.nn.bias_add(tf_conv(x, w), b))},
        "input grad": {"kconv": gradient(kc_conv, "x"), "tf": gradient(tf_conv, "x")},
        "filter grad": {"kconv": gradient(kc_conv, "w"), "tf": gradient(tf_conv, "w")},
    }


def _chain(tf, fn, sets):
    """fn on each input set, each pass after the previous one; the passes' results."""
    outs, done = [], None
    for args in sets:
        if done is not None:
            with tf.control_dependencies(done):
                args = [tf.identity(a) for a in args]
        y = fn(*args)
        outs.append(y)
        done = [tf.identity(t) for t in y] if isinstance(y, (list, tuple)) else [tf.identity(y)]
    return outs


def chained(tf, fn):
    """A tf.function that runs fn on each of the input sets it is given, one after another. fn returns a
    tensor or a list of tensors (the next pass waits for all of them)."""
    return tf.function(lambda sets: _chain(tf, fn, sets), autograph=False)


def captured_chain(tf, fn, sets):
    """A tf.function of no arguments that runs fn on each of `sets` (captured by the graph), one after
    another, and returns the passes' results (a pass whose result is not returned is pruned: grappler drops
    the control edges through Identity)."""
    return tf.function(lambda: _chain(tf, fn, sets), autograph=False)


def make_inputs(tf, layer, count, seed=0):
    """`count` independent input sets (x, w, b, dy) as tensors."""
    rng = np.random.default_rng(seed)
    xs, ws, ys = shapes(layer)
    scale = np.float32(1 / np.sqrt(layer.kernel ** layer.nd * layer.c))
    sets = []
    for _ in range(count):
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32) * scale
        b = rng.standard_normal((layer.k,), dtype=np.float32) * np.float32(0.1)
        dy = rng.standard_normal(ys, dtype=np.float32)
        sets.append(tuple(tf.constant(a) for a in (x, w, b, dy)))
    return sets


def max_rel_error(got, want):
    """max |kconv - TF| / max |TF|."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))


def _pass_counts():
    try:
        from kconv._backend import core
        return dict(core.pass_counts())
    except Exception:   # counters are a test hook; without them the check is skipped
        return None


def time_pass(tf, fns, single, sets, turn, more_inputs, rounds, pause, block_s, graph_s, max_inner):
    """Seconds per pass of each contender, timed as the module says: fns {who: pass function}, single their
    one-pass graphs (already warm), sets the input sets (rotating from index `turn`; more_inputs(count, seed)
    adds sets when a graph call chains more passes than there are). Returns (kconv s, tf s, inner, calls)."""
    turn = {who: turn for who in single}

    def call_single(who):
        turn[who] = (turn[who] + 1) % len(sets)
        return single[who]([sets[turn[who]]])
    # passes chained in one graph call: enough for about graph_s seconds
    one = min(estimate(lambda who=who: call_single(who), 3) for who in single)
    inner = int(min(max_inner, max(1, math.ceil(graph_s / one))))
    if len(sets) < inner + 1:   # distinct inputs for every pass of a call, and one to rotate
        sets.extend(more_inputs(inner + 1 - len(sets), len(sets)))
    # two graphs a contender, on sets start.. and start+1..: calls alternate between them, so no pass sees
    # the weights of the pass before it (kconv keeps only the last weights' transform)
    start = turn[next(iter(single))]
    graphs = {who: [captured_chain(tf, fn, [sets[(start + r + j) % len(sets)] for j in range(inner)])
                    for r in (0, 1)] for who, fn in fns.items()}
    state = {who: 0 for who in graphs}

    def call(who):
        state[who] ^= 1
        return graphs[who][state[who]]()
    for who in graphs:   # trace both
        call(who)
        call(who)
    per_call = {who: estimate(lambda who=who: call(who), 2) for who in single}
    n = min(calls_for(t, block_s) for t in per_call.values())   # the same for both; the slower sets it
    times = blocks({who: (lambda who=who: call(who)) for who in single}, rounds=rounds, calls=n, pause=pause)
    return float(np.median(times["kconv"])) / inner, float(np.median(times["tf"])) / inner, inner, n


@contextlib.contextmanager
def training_weights():
    """kconv's kept filter transforms off (as in a training step, whose weights change every call) while the
    passes are timed; the previous setting back after. Also a decorator."""
    import kconv
    before = kconv.ops.set_filter_cache(False)
    try:
        yield
    finally:
        kconv.ops.set_filter_cache(before)


@training_weights()
def time_layer(tf, layer, rounds=5, pause=0.05, block_s=0.05, graph_s=0.003, max_inner=16, algorithm="auto",
               threads=None, check=True):
    """Rows, one per pass: ms per pass of kconv and of TF (median of `rounds` alternating blocks, each after a
    `pause` and a discarded warm call, each block about `block_s` seconds of graph calls, each graph call
    chaining `inner` passes for about `graph_s` seconds), ratio = TF time / kconv time, GFLOP/s of each (the
    caller relates them to the roof), max relative error of kconv against TF, and kernel_passes: the kconv
    kernel passes one single-pass graph ran ({"input": 1} for the input gradient: TF pruned the rest)."""
    fns = pass_functions(tf, layer, algorithm, threads)
    algos = algorithms(layer, algorithm)
    f = flops(layer)
    sets = make_inputs(tf, layer, 3)
    rows = []
    for pass_name in PASSES:
        single = {who: chained(tf, fn) for who, fn in fns[pass_name].items()}
        # warm up (trace, plan, first touch), and check kconv against TensorFlow on the first set. No graph sees
        # the same weights twice in a row: kconv keeps the transform of weights that repeat (inference).
        outs = {who: g([sets[0]])[0] for who, g in single.items()}
        err = max_rel_error(outs["kconv"], outs["tf"]) if check else None
        del outs
        for g in single.values():
            g([sets[1]])
        before = _pass_counts()
        single["kconv"]([sets[2]])
        after = _pass_counts()
        kernel_passes = None if before is None else {k: after[k] - before[k] for k in after if after[k] != before[k]}
        single["tf"]([sets[2]])
        kc_t, tf_t, inner, n = time_pass(
            tf, fns[pass_name], single, sets, 2, lambda count, seed: make_inputs(tf, layer, count, seed=seed),
            rounds, pause, block_s, graph_s, max_inner)
        rows.append(dict(layer=layer.name, group=layer.group, batch=layer.batch, pass_=pass_name,
                         kconv_ms=kc_t * 1e3, tf_ms=tf_t * 1e3, ratio=tf_t / kc_t, kconv_gflops=f / kc_t / 1e9,
                         tf_gflops=f / tf_t / 1e9, algorithm=algos[pass_name], max_err=err, inner=inner,
                         calls=n, rounds=rounds, kernel_passes=kernel_passes))
    return rows


@training_weights()
def time_threads(tf, layer, counts, rounds=5, pause=0.05, block_s=0.02, graph_s=0.003, max_inner=16,
                 algorithm="auto"):
    """kconv's own thread scaling in one process: each pass's chained graph (as time_layer's) timed at each
    of `counts` threads in alternating blocks, kconv.set_num_threads(n) before each call (the op reads the
    setting when it runs). Timed in one process, the counts share its minutes: a process per count (the
    suite's other scaling table, which TensorFlow needs, its pools fixed when it starts) lets the machine's
    other tenants load one count and not the other, which moved Kim k6's step speedup by +-0.07 between runs
    of the same build (2-CPU Zen 5 VM). Rows: threads, pass_, kconv_ms (median of `rounds` blocks),
    kconv_gflops, inner, calls."""
    import kconv
    before = kconv.get_num_threads()
    fns = pass_functions(tf, layer, algorithm)
    f = flops(layer)
    sets = make_inputs(tf, layer, 3)
    rows = []
    try:
        for pass_name in PASSES:
            fn = fns[pass_name]["kconv"]
            single = chained(tf, fn)
            kconv.set_num_threads(max(counts))
            for s in sets:                      # trace, plan, first touch
                single([s])
            one = estimate(lambda: single([sets[1]]), 3)
            inner = int(min(max_inner, max(1, math.ceil(graph_s / one))))
            if len(sets) < inner + 1:
                sets.extend(make_inputs(tf, layer, inner + 1 - len(sets), seed=len(sets)))
            graphs = [captured_chain(tf, fn, [sets[(r + j) % len(sets)] for j in range(inner)]) for r in (0, 1)]
            state = [0]

            def call():
                state[0] ^= 1
                return graphs[state[0]]()
            call()
            call()

            def at(n):
                def run():
                    kconv.set_num_threads(n)
                    return call()
                return run
            contenders = {n: at(n) for n in counts}
            per_call = {n: estimate(fn_n, 2) for n, fn_n in contenders.items()}
            calls = {n: calls_for(t, block_s) for n, t in per_call.items()}
            times = blocks(contenders, rounds=rounds, calls=calls, pause=pause)
            for n in counts:
                ms = float(np.median(times[n])) / inner * 1e3
                rows.append(dict(layer=layer.name, threads=n, pass_=pass_name, kconv_ms=ms,
                                 kconv_gflops=f / ms / 1e6, inner=inner, calls=calls[n], rounds=rounds))
    finally:
        kconv.set_num_threads(before)
    return rows

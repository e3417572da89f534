"""Train a kconv model under tf.distribute: MirroredStrategy, and MultiWorkerMirroredStrategy on localhost.

    python examples/distributed.py mirrored       # one process, the CPU split into 2 logical devices, model.fit
    python examples/distributed.py multiworker    # starts 2 worker processes on 127.0.0.1, a custom loop
    TF_CONFIG='{...}' python examples/distributed.py worker   # one worker of a real cluster (run on each machine)

Synthetic data, a few seconds of training; it prints the losses. Under MultiWorkerMirroredStrategy Keras 3's
model.fit fails for any model (Keras's own layers too), so the worker runs the usual custom loop:
strategy.run + GradientTape + optimizer.apply_gradients, which sums the gradients across workers.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np

GLOBAL_BATCH, STEPS, EPOCHS = 32, 8, 2


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((GLOBAL_BATCH * STEPS, 16, 16, 3)).astype(np.float32)
    y = (x[:, :8].mean(axis=(1, 2, 3)) > x[:, 8:].mean(axis=(1, 2, 3))).astype(np.int64)   # learnable
    return x, y


def build_model():
    import keras

    import kconv

    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((16, 16, 3)),
        kconv.Conv2D(16, 3, activation="relu"),
        kconv.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Reshape((14 * 14, 16)),
        kconv.Conv1D(16, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling1D(),
        keras.layers.Dense(2),
    ])


def mirrored():
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]        # before TensorFlow initialises its devices
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():                                # variables are created inside the scope
        model = build_model()
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x, y = data()
    model.fit(x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, verbose=2)   # 16 samples per replica


def worker():
    import tensorflow as tf
    import keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()             # reads TF_CONFIG
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x, y = data()

    def dataset_fn(context):                              # each worker reads its own shard
        batch = context.get_per_replica_batch_size(GLOBAL_BATCH)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(context.num_input_pipelines,
                                                              context.input_pipeline_id)
        return ds.batch(batch)

    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.Adam()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    @tf.function
    def train_step(xb, yb):
        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(yb, model(xb, training=True))) / GLOBAL_BATCH
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss
        return strategy.reduce("SUM", strategy.run(step, args=(xb, yb)), axis=None)

    for epoch in range(EPOCHS):
        losses = [float(train_step(xb, yb)) for xb, yb in strategy.distribute_datasets_from_function(dataset_fn)]
        print(f"worker {task} epoch {epoch + 1}: loss {np.mean(losses):.4f}", flush=True)
    # Serving: export from one worker, after converting to Keras's own layers (kconv.to_keras(model).export).


def multiworker():
    """Two workers on this machine: free loopback ports, one thread each, both waited for (or killed)."""
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // 2)), TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker"], env=env))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    sys.exit(max(codes))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    {"mirrored": mirrored, "multiworker": multiworker, "worker": worker}[sys.argv[1] if len(sys.argv) > 1
                                                                          else "mirrored"]()

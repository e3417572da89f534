"""kconv's benchmark suite against TensorFlow: `python -m kconv bench` (see kconv.bench.cli)."""
from .cli import main  # noqa: F401

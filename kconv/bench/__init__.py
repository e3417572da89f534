"""kconv's benchmark suite against TensorFlow: `python -m kconv bench` (see kconv.bench.cli)."""


def main(argv=None):
    from .cli import main as cli_main
    return cli_main(argv)

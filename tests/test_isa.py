"""Every compiled instruction-set build that this CPU can run passes the kernel tests, not just the
one kconv picks by default (each has its own register tile, so its own edge cases).

The selected build runs the whole suite; each other runnable build reruns the kernel test files in
a subprocess with KCONV_ISA set.
"""

import os
import subprocess
import sys

import pytest

import kconv

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
KERNEL_TEST_FILES = ["test_matmul.py", "test_conv2d.py", "test_conv1d.py", "test_threads.py"]


def _runnable_isas():
    cfg = kconv.config()
    cpu = {"avx512": cfg.get("cpu_avx512", False), "avx2": cfg.get("cpu_avx2", False), "generic": True}
    return [isa for isa in cfg.get("isas_built", ()) if cpu.get(isa, False)]


def test_selected_build_is_the_one_asked_for():
    """KCONV_ISA (when set) picks the build; config() reports it."""
    wanted = os.environ.get("KCONV_ISA")
    if wanted:
        assert kconv.config()["isa"] == wanted.lower()
    else:
        assert kconv.config()["isa"] == _runnable_isas()[0]


@pytest.mark.parametrize("isa", [i for i in _runnable_isas() if i != kconv.config()["isa"]])
def test_other_builds_pass_the_kernel_tests(isa, tmp_path):
    env = dict(os.environ, KCONV_ISA=isa)
    root = os.path.dirname(os.path.dirname(os.path.abspath(kconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", TESTS_DIR]
    cmd += [os.path.join(TESTS_DIR, f) for f in KERNEL_TEST_FILES]
    cmd += ["-k", "not omp_num_threads and not default_without"]  # those start interpreters of their own
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    summary = [line for line in out.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert out.returncode == 0, f"KCONV_ISA={isa}:\n" + "\n".join(summary[:30]) + "\n" + out.stdout[-1500:]

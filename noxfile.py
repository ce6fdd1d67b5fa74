"""Sessions: tests (CPU backends), tests_gpu (CUDA machines), bench, lint, docs.

    nox -s tests          # numpy, array-api-strict (CPU_DEVICE, device1), torch-cpu, jax
    nox -s tests_gpu      # cupy and torch-cuda; skips cleanly where no CUDA device is usable
    nox -s bench          # pytest-benchmark suite with PyTorch baselines, and 2-process scaling
    nox -s lint           # ruff
    nox -s docs           # doctests of the modules, then the mkdocs site
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"

# On this project's machines torch==2.13.0 resolves to a local CPU-only wheel; elsewhere add
# --index-url https://download.pytorch.org/whl/cpu to get the CPU build instead of CUDA wheels.
TORCH_CPU = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    """The whole suite on every CPU backend (torch and jax installed so none of them skip)."""
    session.install("-e", ".[test,jax,mpi,dask]", TORCH_CPU)
    session.run("python", "-m", "pytest", "-m", "not gpu", "-n", "auto", "--dist", "loadgroup",
                *session.posargs)


@nox.session
def tests_gpu(session: nox.Session) -> None:
    """Only the gpu-marked tests (cupy, torch-cuda). Without a usable CUDA device they skip."""
    session.install("-e", ".[test]")
    probe = "import portanet as pn; print('cupy' in pn.available_backends())"
    has_cupy = session.run("python", "-c", probe, silent=True).strip() == "True"
    if not has_cupy:
        session.log("no usable CuPy/CUDA here: install portanet[cuda] on a CUDA machine.")
    # exit code 5 (nothing collected) would mean the gpu tests vanished: let it fail loudly
    session.run("python", "-m", "pytest", "-m", "gpu", "-rs", *session.posargs,
                success_codes=[0])


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks, one backend per process (thread pools must not fight), then the ratio table.

    pytest-benchmark JSON lands in .benchmarks/; ``portanet bench --jit-compile`` prints the
    comparison with the PyTorch baseline and the matmul floor, eager and compiled steps (jax.jit,
    torch.compile) in rows of their own with their compile time apart, and saves
    bench-mlp.json / bench-cnn.json and their plots in .benchmarks/.
    """
    session.install("-e", ".[test,jax,plot,mpi]", TORCH_CPU)
    probe = "import portanet as pn; print(','.join(pn.available_backends()))"
    backends = session.run("python", "-c", probe, silent=True).strip().split(",")
    os.makedirs(".benchmarks", exist_ok=True)  # pytest-benchmark writes --benchmark-json into it
    for name in backends:
        session.run("python", "-m", "pytest", "benchmarks", "--benchmark-enable",
                    f"--benchmark-json=.benchmarks/{name}.json",
                    "--benchmark-columns=min,median,iqr,ops,rounds", *session.posargs,
                    env={"PORTANET_BENCH_BACKEND": name})
    # the baseline ran in the torch process only: join the per-backend JSON for the ratios
    session.run("python", "benchmarks/_common.py", *[f".benchmarks/{n}.json" for n in backends])
    session.run("portanet", "bench", "--model", "mlp", "--batch-sizes", "128,1024",
                "--jit-compile", "--json", "bench-mlp.json", "--plot", ".benchmarks/bench-mlp.png")
    session.run("portanet", "bench", "--model", "cnn", "--batch-sizes", "128",
                "--jit-compile", "--json", "bench-cnn.json", "--plot", ".benchmarks/bench-cnn.png")
    # data-parallel scaling: 2 processes (mpiexec) against 1, one thread each
    session.run("portanet", "bench", "--distributed", "2", "--json", "bench-distributed.json")


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "portanet", "tests", "benchmarks", "docs", "noxfile.py")


@nox.session
def docs(session: nox.Session) -> None:
    """Run the docstring examples, then build the site (docs/mkdocs.yml) into site/."""
    session.install("-e", ".[docs,test]")
    session.run("python", "-m", "pytest", "--doctest-modules", "portanet", "-p", "no:cacheprovider",
                "--ignore=portanet/cli.py")
    session.run("mkdocs", "build", "--strict", "-f", "docs/mkdocs.yml", "-d", "../site")

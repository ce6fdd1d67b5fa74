"""PyTorch tensors as arrays: devices ``cpu`` and ``cuda:N``.

Uses ``array_api_compat.torch`` as the namespace (torch's own functions differ from the standard
in names and promotion rules), torch's native generator and ``erf``, and the fused kernels that
torch's own autograd and optimizers use for ReLU and SGD (see ``portanet/fused.py``).
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any, ClassVar

import numpy as np

from ._adapter import Adapter


class TorchAdapter(Adapter):
    name = "torch"
    module_name = "torch"
    install_hint = (
        "pip install torch  (CPU-only build: pip install torch "
        "--index-url https://download.pytorch.org/whl/cpu)"
    )
    erf_native = True

    def namespace(self):
        import array_api_compat.torch as xp

        return xp

    def devices(self):
        torch = self.library()
        found = [torch.device("cpu")]
        if torch.cuda.is_available():
            found += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return found

    def device_name(self, device):
        return str(device)

    def parse_device(self, spec):
        torch = self.library()
        if spec is None:
            return self.default_device()
        if isinstance(spec, int):
            spec = f"cuda:{spec}"
        try:
            dev = torch.device(spec)
        except (RuntimeError, TypeError):
            raise self._bad_device(spec) from None
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available()
                               else 0)
        if dev not in self.devices():
            if dev.type == "cuda" and not torch.cuda.is_available():
                from ..errors import BackendError

                raise BackendError(
                    f"device {str(spec)!r} asks for CUDA, but this torch ({torch.__version__}) "
                    "sees no usable CUDA device. Install a CUDA build of torch on a machine with "
                    "an NVIDIA GPU, or fall back to device='cpu'."
                )
            raise self._bad_device(spec)
        return dev

    def threads(self):
        return self.library().get_num_threads()

    def set_threads(self, n):
        self.library().set_num_threads(n)

    def generator(self, seed, device):
        torch = self.library()
        return torch.Generator(device=device).manual_seed(seed)

    def generator_kind(self, gen):
        # a CPU generator is a Mersenne Twister (5056 bytes); a CUDA one is Philox (seed and
        # offset, 16 bytes): their states do not translate
        return f"torch.{gen.device.type}"

    def generator_bytes(self, gen):
        return gen.get_state().numpy().copy()  # get_state() is a CPU uint8 tensor on any device

    def restore_generator(self, gen, data):
        gen.set_state(self.library().from_numpy(np.array(data, dtype=np.uint8)))

    def uniform(self, gen, shape, dtype, device):
        return self.library().rand(shape, generator=gen, dtype=dtype, device=device)

    def normal(self, gen, shape, dtype, device):
        return self.library().randn(shape, generator=gen, dtype=dtype, device=device)

    def permutation(self, gen, n, device):
        torch = self.library()
        return torch.randperm(n, generator=gen, device=device, dtype=torch.int64)

    def erf(self, x):
        return self.library().special.erf(x)

    # -- fused kernels: the calls nn.ReLU, its autograd node and torch.optim.SGD make ----------
    @functools.cached_property
    def _torch(self):
        return self.library()

    def relu(self, x):
        return self._torch.relu(x)

    def relu_backward(self, dy, y):
        # The kernel ReLU's autograd node runs: dy where y > threshold, else 0, in one pass.
        return self._torch.ops.aten.threshold_backward(dy, y, 0.0)

    def gelu_backward(self, dy, x):
        # The kernel GELU's autograd node runs (approximate="none"), in one pass.
        return self._torch.ops.aten.gelu_backward(dy, x)

    def add_scaled_(self, p, d, alpha):
        if isinstance(alpha, self._torch.Tensor):  # a 0-d device scalar (a CUDA graph's step)
            return p.addcmul_(d, alpha)
        return p.add_(d, alpha=alpha)

    def softmax_cross_entropy(self, z, ids):
        if z.ndim != 2:  # nll_loss wants the class axis second: other shapes run portably
            return None
        torch = self._torch
        log_s = torch.log_softmax(z, dim=-1)
        safe = ids.clamp(0, z.shape[-1] - 1).to(torch.int64)  # nll_loss must not see a bad id
        valid = safe == ids
        loss = torch.where(valid, torch.nn.functional.nll_loss(log_s, safe, reduction="none"),
                           math.nan)
        grad = log_s.exp_()  # softmax, into log_s's array (nll_loss has read it)
        grad.scatter_add_(-1, safe.unsqueeze(-1), valid.unsqueeze(-1).to(z.dtype).neg_())
        return loss, grad

    # -- weight layout: nn.Linear's (out, in) ------------------------------------------------
    # MKL's CPU GEMM is tuned for the operand order nn.Linear uses. With W (in, out) stored row
    # by row, the MLP's last layer (512 -> 10) is slow: at batch 1024 (2 threads, float32)
    # x @ W took 0.46-0.68 ms and x^T @ dz 0.89-1.01 ms, against 0.22-0.32 ms and 0.19-0.20 ms
    # with W stored column by column and dL/dW computed as (dz^T @ x)^T. The wide layers are
    # the same either way. CUDA's nn.Linear uses this layout too, so the GEMMs are PyTorch's own.
    weight_order = "F"

    def in_weight_order(self, w):
        return w.mT.contiguous().mT  # contiguous() returns w.mT itself when it already is

    def column_major(self, a):
        return a.ndim == 2 and not a.is_contiguous() and a.mT.is_contiguous()

    def flat_update_on(self, device):
        # On CUDA an update is launch-bound (a dozen kernels per parameter): one buffer makes it
        # a dozen in all. Not measured yet (no GPU was lent to the session that wrote it).
        return getattr(device, "type", "cpu") == "cuda"

    def copy_like(self, a, like):
        # empty_like keeps like's strides (preserve_format); copy_ casts the dtype.
        return self._torch.empty_like(like).copy_(a)

    def synchronize(self, device, outputs=None):
        # CUDA: wait for every stream of the device, which covers whatever computes outputs.
        # CPU ops return finished tensors: nothing to wait for.
        torch = self.library()
        if getattr(device, "type", "cpu") == "cuda":
            torch.cuda.synchronize(device)

    compiler = "torch.compile"
    _codes: ClassVar[dict[tuple, Any]] = {}  # (code, family) -> its copy (see compile)
    # "auto" stays eager: on CPU the step is GEMM-bound and the eager backend already beats
    # PyTorch eager (docs/benchmarks.md has the compiled figures).
    compile_by_default = False

    def compile(self, fn, donate_argnums=(), family=None):
        # torch has no donation: its caching allocator reuses freed buffers anyway.
        # dynamic=False: one graph per input shape, like jax.jit (the last partial batch of an
        # epoch is a second shape, compiled once).
        torch = self.library()
        # Dynamo keeps its graphs on the function's code object, at most 8 per code
        # (recompile_limit), and every model's step is the same code (engine/step.py's
        # closure): from the 9th architecture in a process on, the step ran eagerly. One copy
        # of the code per family (architecture) keeps a cache per architecture, and models
        # of one architecture still share their graphs.
        code = self._codes.setdefault((fn.__code__, family), fn.__code__.replace())
        fn = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__,
                                fn.__closure__)
        compiled = torch.compile(fn, dynamic=False)
        # Read the cached properties now, not first inside the trace: Python 3.11's
        # functools.cached_property takes an RLock there, and dynamo breaks the graph on it.
        self.xp, self._torch  # noqa: B018

        def call(*args):
            # Dynamo specializes a Python float argument to its value: the optimizer's learning
            # rate and bias corrections, new at every step, recompiled the step at every step
            # until dynamo's recompile limit (8) and then ran it eagerly. As 0-d float64
            # tensors they are inputs of one graph (a 0-d tensor does not promote a float32
            # array, as a Python float does not).
            return compiled(*_floats_as_tensors(torch, args))

        return call

    def compiler_on(self, device):
        # On CUDA the whole step is recorded as one CUDA graph: a small model's step is
        # launch-bound there, and a graph replays all its kernels with one launch.
        return "torch.cuda.graph" if getattr(device, "type", "cpu") == "cuda" else self.compiler

    def graph_recorder(self, device):
        return _CudaGraphRecorder(self.library(), device)

    def to_numpy(self, x):
        return x.detach().cpu().numpy()

    def from_numpy(self, a, device):
        torch = self.library()
        return torch.from_numpy(a).to(device) if device.type != "cpu" else torch.from_numpy(a)


def _floats_as_tensors(torch, tree):
    """``tree`` (tuples, lists, dicts) with each Python float a 0-d float64 CPU tensor."""
    if isinstance(tree, dict):
        return {k: _floats_as_tensors(torch, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)) and not hasattr(tree, "_fields"):
        return type(tree)(_floats_as_tensors(torch, v) for v in tree)
    if isinstance(tree, float):
        return torch.tensor(tree, dtype=torch.float64)
    return tree


class _CudaGraphRecorder:
    """torch's CUDA graphs behind the calls of ``engine/cuda_graph.py``'s ``Recorder``."""

    def __init__(self, torch, device):
        self.torch = torch
        self.device = device
        self.stream = torch.cuda.Stream(device)  # recordings run here (never the default one)

    def warm_up(self, body):
        # On the current stream, where its outputs are used (the graph records on a side one).
        return body()

    def record(self, body, generators):
        torch = self.torch
        graph = torch.cuda.CUDAGraph()
        generators = [g for g in generators if g.device.type == "cuda"]
        if generators and not hasattr(graph, "register_generator_state"):
            raise RuntimeError(
                f"this torch ({torch.__version__}) cannot register the model's random generators "
                "(dropout, augmentation) with a CUDA graph. Upgrade torch, or use "
                "jit_compile=False on a model that draws random numbers.")
        for g in generators:
            graph.register_generator_state(g)
        with torch.cuda.graph(graph, stream=self.stream):
            out = body()
        return graph.replay, out

    def vector(self, n, like):
        return self.torch.empty(n, dtype=like.dtype, device=like.device)

    def write(self, vector, values):
        # From pinned memory, non_blocking: the host queues the copy and goes on; torch's
        # caching host allocator keeps the block until the copy has run.
        host = self.torch.tensor(values, dtype=vector.dtype).pin_memory()
        vector.copy_(host, non_blocking=True)

    def copy(self, dst, src):
        dst.copy_(src)

    def clone(self, a):
        return a.clone()

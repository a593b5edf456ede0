"""Device performance settings in one place: precision, memory layout, determinism, step capture.

The training loop calls these with plain arguments (device, model, optimizer, loss, batch), so
the CPU path never changes: every setting here acts on CUDA only, and on the CPU the functions
return the eager, fp32 behaviour the package has always had (bit-identical results).

- ``precision``: ``fp32`` or ``bf16``. bf16 is autocast around the forward pass and the loss;
  the parameters, the gradients and Adam's moments stay fp32. On the CPU bf16 is *refused*
  (:func:`check_precision`), not ignored: the precision changes what a cell computes and is
  recorded with it, so silently running fp32 under a config that says bf16 would mislabel
  the results, and CPU bf16 autocast is slower than fp32 on most CPUs anyway.
- ``channels_last``: the NHWC layout for models with 2-D convolutions on CUDA, where cuDNN's
  fastest (tensor-core) kernels expect it. MLPs are left alone.
- ``deterministic`` (default on): cuDNN deterministic, ``torch.use_deterministic_algorithms``
  (errors, not warnings, on an op without a deterministic kernel) and the cuBLAS workspace
  setting it requires. Off: ``cudnn.benchmark`` picks the fastest kernels per shape, which
  may differ run to run, so the same seed can select different points.
- ``compile``: ``off`` (eager), ``graph`` (the whole step, forward + backward + Adam, captured
  as one CUDA graph for the fixed batch shape and replayed) or ``compile``
  (``torch.compile(mode="reduce-overhead")`` on the model for the fixed shape). A batch-64
  step of a small network is bound by kernel launches, not arithmetic; replaying a captured
  graph launches once. The last, smaller batch of an epoch always runs eagerly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
import torch.nn as nn

from asknlearn.errors import ConfigError

PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("off", "graph", "compile")
# cuBLAS needs a fixed workspace for reproducible matmuls under use_deterministic_algorithms
# (https://docs.nvidia.com/cuda/cublas/#results-reproducibility); it must be set before the
# first cuBLAS handle is created, i.e. before the first matmul on the GPU.
CUBLAS_WORKSPACE = ":4096:8"

LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _device(device: torch.device | str) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def check_precision(precision: str, device: torch.device | str) -> str:
    """``precision`` if it is valid on ``device``; a ConfigError naming the valid ones if not."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not valid; valid: {', '.join(PRECISIONS)}")
    dev = _device(device)
    if precision == "bf16" and dev.type != "cuda":
        raise ConfigError(f"precision='bf16' needs a CUDA device but this cell runs on {dev}; "
                          "valid on the CPU: fp32 (bf16 would change the results the config "
                          "records and is slower than fp32 on most CPUs)")
    return precision


def check_compile(mode: str) -> str:
    """``mode`` if it is a known step-capture mode, else a ConfigError naming the valid ones."""
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile={mode!r} is not valid; valid: {', '.join(COMPILE_MODES)}")
    return mode


def set_cublas_workspace() -> bool:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` unless the user set it; True if this call set it.

    Call it before any CUDA work (the cell calls :func:`configure` before moving data)."""
    if os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        return False
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
    return True


def configure(device: torch.device | str, deterministic: bool = True) -> dict[str, object]:
    """Apply the process-wide determinism switches for ``device``; returns what was set.

    CUDA, deterministic: cuDNN deterministic, no cuDNN autotuning, deterministic algorithms
    everywhere (an op without a deterministic kernel raises instead of silently varying) and
    the cuBLAS workspace. CUDA, not deterministic: ``cudnn.benchmark`` on, since the shapes of
    a training run are fixed and autotuning pays after the first batch.
    CPU: nothing is changed; the CPU kernels the package uses are already deterministic, and
    leaving the global flags alone keeps the CPU path bit-identical to before.
    """
    dev = _device(device)
    if dev.type != "cuda":
        return {"device": str(dev), "deterministic": deterministic, "applied": False}
    if deterministic:
        set_cublas_workspace()
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    return {"device": str(dev), "deterministic": deterministic, "applied": True,
            "cudnn.benchmark": not deterministic,
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The forward-pass context for ``precision``: bf16 autocast on CUDA, else a no-op."""
    dev = _device(device)
    if precision == "bf16" and dev.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def has_conv2d(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, device: torch.device | str, enabled: bool = True) -> bool:
    """Whether ``model`` on ``device`` should run in channels_last: a CNN on CUDA."""
    return enabled and _device(device).type == "cuda" and has_conv2d(model)


def to_channels_last(model: nn.Module, device: torch.device | str, enabled: bool = True) -> bool:
    """Convert a CNN's weights to channels_last on CUDA, in place; True if converted."""
    if not use_channels_last(model, device, enabled):
        return False
    model.to(memory_format=torch.channels_last)
    return True


def batch_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` in the layout the model expects (a 4-D input made channels_last when asked)."""
    if channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


# ---------------------------------------------------------------------------- the step
class TrainStep:
    """One training step ``step(xb, yb) -> (loss, logits)``: zero_grad, forward under the
    precision's autocast, backward, optimizer step.

    ``mode`` (:data:`COMPILE_MODES`) is the mode actually used: any capture mode falls back to
    ``off`` on the CPU. Full batches of ``batch_size`` rows take the captured path; any other
    size (the last batch of an epoch) runs eagerly on the same model and optimizer, so the
    two paths share one set of weights and Adam moments.

    Graph capture needs warm-up steps on a side stream before capturing. They would change
    the weights, the BatchNorm statistics, Adam's moments and the CUDA RNG, so all four are
    restored afterwards: the first real step starts from exactly the state it would have had.
    The returned tensors of a graph step are static buffers that the next step overwrites;
    use them (e.g. accumulate the accuracy) before the next call.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn, *,
                 batch_size: int, device: torch.device | str, precision: str = "fp32",
                 mode: str = "off", warmup: int = 3):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.batch_size = batch_size
        self.device = _device(device)
        self.precision = check_precision(precision, self.device)
        check_compile(mode)
        self.mode = mode if self.device.type == "cuda" else "off"
        self.warmup = warmup
        self._graph: torch.cuda.CUDAGraph | None = None
        self._compiled: nn.Module | None = None
        if self.mode == "graph":
            # Adam keeps its step count on the host unless capturable; a captured step needs
            # it on the device. Only allowed before the first step has created any state.
            if optimizer.state:
                raise ValueError("graph capture needs an optimizer that has not stepped yet")
            for group in optimizer.param_groups:
                if "capturable" in group:
                    group["capturable"] = True
        elif self.mode == "compile":
            self._compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)

    def _eager(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor):
        with autocast(self.precision, self.device):
            loss, logits = self.loss_fn(model, xb, yb)
        self.optimizer.zero_grad(set_to_none=self.mode != "graph")
        loss.backward()
        self.optimizer.step()
        return loss, logits

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(yb) != self.batch_size or self.mode == "off":
            return self._eager(self.model, xb, yb)
        if self.mode == "compile":
            return self._eager(self._compiled, xb, yb)  # type: ignore[arg-type]
        if self._graph is None:
            self._capture(xb, yb)
        self._x.copy_(xb)
        self._y.copy_(yb)
        self._graph.replay()  # type: ignore[union-attr]
        return self._loss, self._logits

    @contextlib.contextmanager
    def _restored(self) -> Iterator[None]:
        """Run a block (the warm-up steps) and put the training state back afterwards."""
        params = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        rng = torch.cuda.get_rng_state(self.device)
        yield
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(params[k])
            # fresh Adam state is all zeros (step 0); zero in place so the graph keeps its pointers
            for state in self.optimizer.state.values():
                for v in state.values():
                    if torch.is_tensor(v):
                        v.zero_()
        torch.cuda.set_rng_state(rng, self.device)

    def _capture(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        self._x, self._y = xb.clone(), yb.clone()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with self._restored():
            with torch.cuda.stream(stream):
                for _ in range(self.warmup):
                    self._eager(self.model, self._x, self._y)
            torch.cuda.current_stream(self.device).wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        # grads must exist (not None) before capture so backward writes into fixed buffers
        self.optimizer.zero_grad(set_to_none=False)
        with torch.cuda.graph(self._graph):
            self._loss, self._logits = self._eager(self.model, self._x, self._y)

"""Inference-time optimisations, applied to a *copy* of a model so that the original
(its weights, its checkpoints, its fingerprint) never changes.

What is kept here is what measured faster on a 2-core CPU (see ``benchmarks/bench.py``):

- **conv-BN folding** at eval: a BatchNorm whose only input is a convolution's output
  is an affine map per output channel, so it folds exactly into the convolution's
  weight and bias (the activation timm fuses into ``BatchNormAct2d`` stays). Pairs are
  found on a ``torch.fx`` graph, so a convolution whose output is also used elsewhere
  is never folded;
- **channels_last** weights and input (oneDNN's preferred layout for convolutions);
- **ONNX Runtime** for the trunk (the backbone up to its last feature map) where
  onnxruntime is installed and the model runs on the CPU: 1.75-2.2x faster than the
  above (:mod:`sdl_core.onnx_backend`; the graph is verified against torch first);
- **thread count** within the CPUs the process may really use (:func:`configure_threads`):
  torch defaults to every core it sees, ignoring a container's CPU quota, and extra
  threads waiting on a busy core cost far more than they bring.

Anything that cannot be traced or copied is left as it is: optimising never fails a
model, it only makes it faster where it can.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)

from timm.layers import BatchNormAct2d, Conv2dSame

#: BatchNorm classes whose eval forward is exactly the affine map of their running
#: statistics (followed by drop + act for timm's).
_FOLDABLE_NORMS = (nn.BatchNorm2d, BatchNormAct2d)
#: Convolutions whose output is ``conv2d(x or padded x, weight, bias)``.
_FOLDABLE_CONVS = (nn.Conv2d, Conv2dSame)


@dataclass(frozen=True)
class InferenceOptions:
    """Which optimisations :func:`inference_copy` applies (all exact up to float rounding)."""

    fold_bn: bool = True
    channels_last: bool = True
    #: "auto": the trunk runs in ONNX Runtime where it can (CPU, onnxruntime installed,
    #: graph verified), else torch; "torch": never ONNX Runtime.
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")


#: What :class:`InferenceOptions.runtime` accepts.
RUNTIMES = ("auto", "torch")
#: Options that run the model exactly as it is.
UNOPTIMISED = InferenceOptions(fold_bn=False, channels_last=False, runtime="torch")


class _AfterNorm(nn.Module):
    """What remains of a timm ``BatchNormAct2d`` once its affine map is folded: drop, act."""

    def __init__(self, drop: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.drop = drop
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(x))


class _LeafTracer(fx.Tracer):
    """Keeps convolutions and norms as single nodes (``Conv2dSame`` pads dynamically)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm)) or super().is_leaf_module(m, qualname)


def _foldable_norm(bn: nn.Module) -> bool:
    return (type(bn) in _FOLDABLE_NORMS and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def _conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]] | None:
    """(conv, bn) qualified names where the bn's only input is the conv's output and
    the conv's output goes nowhere else, in every call; None if ``module`` cannot be traced."""
    try:
        graph = _LeafTracer().trace(module)
    except Exception:  # noqa: BLE001 - fx raises many types on untraceable Python
        return None
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    modules = dict(module.named_modules())
    pairs = []
    for name, nodes in calls.items():
        conv = modules.get(name)
        if type(conv) not in _FOLDABLE_CONVS:
            continue
        users = [list(n.users) for n in nodes]
        if not all(len(u) == 1 and u[0].op == "call_module" and len(u[0].args) == 1 and not u[0].kwargs
                   for u in users):
            continue
        targets = {str(u[0].target) for u in users}
        if len(targets) != 1:
            continue
        bn_name = targets.pop()
        bn = modules.get(bn_name)
        if bn is None or not _foldable_norm(bn) or len(calls.get(bn_name, [])) != len(nodes):
            continue
        if bn.num_features != conv.out_channels:
            continue
        pairs.append((name, bn_name))
    return pairs


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


def _fold_pairs(root: nn.Module, pairs: list[tuple[str, str]]) -> None:
    for conv_name, bn_name in pairs:
        conv = root.get_submodule(conv_name)
        bn = root.get_submodule(bn_name)
        weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                            bn.weight, bn.bias)
        conv.weight, conv.bias = weight, bias
        rest = _AfterNorm(bn.drop, bn.act) if hasattr(bn, "act") and hasattr(bn, "drop") else nn.Identity()
        _set_submodule(root, bn_name, rest)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold eval-mode BatchNorms into the convolutions before them, in place.

    The largest traceable sub-modules are folded (a model whose own forward has
    data-dependent Python, like ours, is traced child by child). Returns how many
    norms were folded. Only for an eval copy: the folded module cannot be trained.
    """
    pairs = _conv_bn_pairs(module)
    if pairs is None:
        return sum(fold_batchnorm(child) for child in module.children())
    _fold_pairs(module, pairs)
    return len(pairs)


def inference_copy(model: nn.Module, options: InferenceOptions = InferenceOptions()) -> nn.Module:
    """An eval-mode copy of ``model`` with ``options`` applied; ``model`` is untouched.

    Where ONNX Runtime runs the trunk, the copy shares the trunk's tensors with ``model``
    (the graph holds its own weights; a second torch copy would only cost memory: ~125 MB
    for a TResNet-M). Where it does not, the copy gets its own weights to fold.
    Falls back to ``model`` itself if it cannot be copied (nothing is lost but speed).
    """
    if options == UNOPTIMISED:
        return model
    if options.runtime == "auto":
        shared = _onnx_copy(model)
        if shared is not None:
            return shared
    fast = _copy(model, shared_with=None)
    if fast is None:
        return model
    if options.fold_bn:
        folded = fold_batchnorm(fast)
        log.debug("folded %d BatchNorms of %s", folded, type(model).__name__)
    if options.channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast


def _copy(model: nn.Module, shared_with: nn.Module | None) -> nn.Module | None:
    """An eval-mode deep copy of ``model`` whose tensors of ``shared_with`` (a submodule) are
    ``model``'s own, not copies; None if ``model`` refuses to be copied."""
    keep = {id(t): t for t in shared_with.state_dict(keep_vars=True).values()} if shared_with is not None else {}
    try:
        fast = copy.deepcopy(model, dict(keep)).eval()
    except Exception as exc:  # noqa: BLE001 - arbitrary user models may refuse deepcopy
        log.info("inference copy of %s failed (%s); running it unoptimised", type(model).__name__, exc)
        return None
    for p in fast.parameters():
        if id(p) not in keep:  # never touch the flags of the caller's own tensors
            p.requires_grad_(False)
    return fast


def _onnx_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` whose trunk runs in ONNX Runtime and shares ``model``'s trunk
    tensors (used only by the torch trunk for other input sizes, read-only), or None."""
    trunk = getattr(model, "trunk", None)
    if not isinstance(trunk, nn.Module):
        return None
    fast = _copy(model, shared_with=trunk)
    if fast is None or not _attach_onnx_runtime(fast):
        return None
    return fast


def _attach_onnx_runtime(fast: nn.Module) -> bool:
    """Route ``fast``'s trunk through ONNX Runtime if it is a CPU principal-vector model
    whose trunk exports and verifies; returns whether it did."""
    trunk = getattr(fast, "trunk", None)
    size = getattr(getattr(getattr(fast, "config", None), "preprocess", None), "size", None)
    if trunk is None or not isinstance(size, int) or not hasattr(fast, "external_features"):
        return False
    if any(t.device.type != "cpu" for t in trunk.state_dict().values()):
        return False
    from .onnx_backend import onnx_features

    runner = onnx_features(trunk, size)
    if runner is None:
        return False
    fast.external_features = runner
    log.info("%s: trunk runs in ONNX Runtime", type(fast).__name__)
    return True



def available_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (v2 or v1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota else max(1, cores)


def _cgroup_quota(root: str) -> float | None:
    """CPU quota in cores (``cpu.max`` or ``cpu.cfs_quota_us``), None when unlimited or unknown."""
    candidates = ((f"{root}/cpu.max", None), (f"{root}/cpu/cpu.cfs_quota_us", f"{root}/cpu/cpu.cfs_period_us"),
                  (f"{root}/cpu.cfs_quota_us", f"{root}/cpu.cfs_period_us"))
    for first, second in candidates:
        try:
            with open(first) as fh:
                parts = fh.read().split()
            if second is not None:
                with open(second) as fh:
                    parts = parts[:1] + fh.read().split()[:1]
        except (OSError, ValueError):
            continue
        if len(parts) >= 2 and parts[0] not in ("max", "-1"):
            try:
                quota, period = float(parts[0]), float(parts[1])
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
        return None
    return None


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads`` if given, else no more than
    :func:`available_cores` (torch's own default otherwise). Returns the count set.

    For a process, not a library call: the CLI and the demo call it at start.
    """
    if threads is None:
        threads = min(torch.get_num_threads(), available_cores())
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        log.info("torch threads: %d", threads)
    return threads


def _weights_signature(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version) for t in model.state_dict(keep_vars=True).values())


class InferenceRunner:
    """Holds the optimised copy of a model and rebuilds it if the model's weights change.

    The check costs a pass over the state dict (microseconds per tensor), far below a
    forward pass, and keeps the copy from ever running stale weights.
    """

    def __init__(self, model: nn.Module, options: InferenceOptions = InferenceOptions()) -> None:
        self.model = model
        self.options = options
        self._signature: tuple | None = None
        self._fast: nn.Module = model

    @property
    def channels_last(self) -> bool:
        return (self.options.channels_last and self._fast is not self.model
                and getattr(self._fast, "external_features", None) is None)

    @property
    def runtime(self) -> str:
        """Where the trunk of the current copy runs: "onnxruntime" or "torch"."""
        return "onnxruntime" if getattr(self.get(), "external_features", None) is not None else "torch"

    def get(self) -> nn.Module:
        """The optimised copy, up to date with the model's weights."""
        signature = _weights_signature(self.model)
        if signature != self._signature:
            self._fast = inference_copy(self.model, self.options)
            self._signature = signature
        return self._fast

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """The input layout the optimised copy wants."""
        return pixels.contiguous(memory_format=torch.channels_last) if self.channels_last else pixels

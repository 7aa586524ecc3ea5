"""Run a model's trunk (its timm backbone up to the last feature map) in ONNX Runtime.

On a 2-core CPU, ONNX Runtime ran EfficientNet-Lite0's feature extractor 2.2x and
TResNet-M's 1.75x faster than eager PyTorch with folded BatchNorm and channels_last
(``benchmarks/bench.py``). Only the trunk moves: heads, maps and scoring stay in torch,
so every model keeps one definition of what it computes.

Exporting takes about a second, so the exported graph is cached on disk, keyed by a
hash of the trunk's weights and of the library versions, under the project's cache root
(:mod:`sdl_core.cache`: ``SDL_TAGGER_CACHE``, else the user cache folder). A freshly exported graph
is checked against torch on a batch size other than the exported one before it is
used or cached; any failure (no onnxruntime, an op it lacks, a mismatch, an unwritable
cache) leaves the model on torch. The graph is exported for one input size: other
sizes run on torch.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import cache
from .checkpoint import hash_tensors
from .errors import StorageError
from .files import write_bytes

log = logging.getLogger(__name__)

#: Bumped whenever the export recipe changes, so stale cached graphs are never reused.
_EXPORT_VERSION = 1
#: ONNX opset used for export (supported by every onnxruntime this project pins).
_OPSET = 17
#: A graph is used only if it reproduces torch's features this closely (x the features' scale).
_MATCH_TOLERANCE = 1e-4
#: The cache keeps this many graphs, the most recently used (a TResNet-M graph is ~125 MB).
MAX_CACHED_GRAPHS = 8


def available() -> bool:
    """Whether onnxruntime can be imported here."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def cache_dir() -> Path:
    """Where exported graphs are kept."""
    return cache.cache_dir(cache.ONNX)


class _ForwardFeatures(nn.Module):
    """``trunk.forward_features`` as a module's forward, which is what export traces."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(pixels)


def graph_key(trunk: nn.Module, input_size: int) -> str:
    """Changes with the trunk's class, weights, input size and every library involved."""
    import onnxruntime

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{_EXPORT_VERSION}|{type(trunk).__qualname__}|{input_size}|{torch.__version__}|"
                  f"{onnxruntime.__version__}".encode())
    hash_tensors(digest, trunk.state_dict())
    return digest.hexdigest()


def export_graph(trunk: nn.Module, input_size: int) -> bytes:
    """The trunk's ``forward_features`` as an ONNX graph with a dynamic batch size."""
    sample = torch.zeros(1, 3, input_size, input_size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter warns about every traced Python branch
        torch.onnx.export(_ForwardFeatures(trunk).eval(), (sample,), buffer, dynamo=False, opset_version=_OPSET,
                          input_names=["pixels"], output_names=["features"],
                          dynamic_axes={"pixels": {0: "batch"}, "features": {0: "batch"}})
    return buffer.getvalue()


def _session(graph: bytes | str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Waiting threads that spin steal the core they wait for (the same reason sdl_core
    # sets OMP_WAIT_POLICY=PASSIVE): measured faster alone and far faster under load.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


class OnnxFeatures:
    """Callable ``pixels -> features`` backed by an ONNX Runtime session; inputs of
    another spatial size than the graph's go to the torch trunk."""

    def __init__(self, session, trunk: nn.Module, input_size: int) -> None:
        self.session = session
        self.trunk = trunk
        self.input_size = input_size

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.device.type != "cpu" or tuple(pixels.shape[1:]) != (3, self.input_size, self.input_size):
            return self.trunk.forward_features(pixels)
        array = np.ascontiguousarray(pixels.detach().numpy(), dtype=np.float32)
        (features,) = self.session.run(None, {"pixels": array})
        return torch.from_numpy(features)


def _matches(session, trunk: nn.Module, input_size: int) -> bool:
    """Whether the graph gives torch's features on a batch size it was not exported with."""
    probe = torch.randn(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trunk.forward_features(probe).numpy()
    (got,) = session.run(None, {"pixels": probe.numpy()})
    if got.shape != expected.shape:
        return False
    scale = max(1.0, float(np.abs(expected).max()))
    return float(np.abs(got - expected).max()) <= _MATCH_TOLERANCE * scale


def onnx_features(trunk: nn.Module, input_size: int, threads: int | None = None) -> OnnxFeatures | None:
    """An ONNX Runtime replacement for ``trunk.forward_features``, or None where it cannot be had."""
    if not available():
        log.info("onnxruntime is not installed: the model runs on torch")
        return None
    threads = threads or torch.get_num_threads()
    trunk = trunk.eval()
    try:
        key = graph_key(trunk, input_size)
    except Exception as exc:  # noqa: BLE001 - odd tensors (e.g. on a meta device) cannot be hashed
        log.info("cannot fingerprint %s for ONNX Runtime (%s): it runs on torch", type(trunk).__name__, exc)
        return None
    path = cache_dir() / f"{key}.onnx"
    if path.is_file():
        try:
            features = OnnxFeatures(_session(str(path), threads), trunk, input_size)
            _touch(path)
            return features
        except Exception as exc:  # noqa: BLE001 - a damaged cache file is re-exported below
            log.info("cached graph %s is unusable (%s); exporting again", path, exc)
    try:
        graph = export_graph(trunk, input_size)
        session = _session(graph, threads)
        ok = _matches(session, trunk, input_size)
    except Exception as exc:  # noqa: BLE001 - exporter and runtime raise many types
        log.info("%s cannot run in ONNX Runtime (%s): it runs on torch", type(trunk).__name__, exc)
        return None
    if not ok:
        log.warning("%s gives other features in ONNX Runtime than in torch: it runs on torch",
                    type(trunk).__name__)
        return None
    try:  # all or nothing: two processes exporting at once each rename a whole graph into place
        write_bytes(path, graph, "ONNX graph cache file")
        _prune(path.parent, MAX_CACHED_GRAPHS)
    except (StorageError, OSError) as exc:
        log.info("cannot cache the ONNX graph (%s); it will be exported again next time", exc)
    return OnnxFeatures(session, trunk, input_size)


def _touch(path: Path) -> None:
    """Mark a cached graph as just used (the cache drops the least recently used)."""
    try:
        os.utime(path)
    except OSError:
        pass  # a read-only cache is still a cache


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used graphs in ``folder``."""
    graphs = sorted(folder.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in graphs[keep:]:
        old.unlink(missing_ok=True)

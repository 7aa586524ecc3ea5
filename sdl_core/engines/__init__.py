"""Engines that run ``index`` and ``tag`` beyond one process: the Ray engine (``--engine ray``).

- :mod:`.sources`: what a job reads (a folder's photos, or the paths and URIs of a list file);
- :mod:`.shards`: the Parquet shards a job writes, its manifest, resuming and reading them back;
- :mod:`.worker`: the Ray actor's callable (one model per actor, one shard per call);
- :mod:`.ray_job`: the driver (connect, plan, run on Ray Data, report).

The local engine (the default) needs only ``requirements.txt``: nothing here imports ray or
pyarrow at module level, and :func:`require_ray` turns their absence into one line to act on.
"""
from __future__ import annotations

from types import ModuleType

from ..errors import SDLError

ENGINES = ("local", "ray")
RAY_REQUIREMENTS = "requirements-ray.txt"


class EngineError(SDLError):
    """A distributed job cannot start, cannot reach its cluster, or failed on the cluster."""


def require_ray() -> ModuleType:
    """The ``ray`` module, with Ray Data and pyarrow; a missing one is an :class:`EngineError`."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise EngineError(f"--engine ray needs Ray Data ({exc.name or exc} is not installed): "
                          f"pip install -r {RAY_REQUIREMENTS}") from None
    return ray


__all__ = ["ENGINES", "RAY_REQUIREMENTS", "EngineError", "require_ray"]

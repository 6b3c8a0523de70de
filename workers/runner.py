"""What a job runner is for the worker, the errors it may raise, and how the worker loads one by name.

A runner is `run(spec: dict, progress(stage, fraction), should_cancel() -> bool) -> dict summary`.
The production runner is workers.pipeline.run_job (CNN + ER refinement); devtools.sim_runner.simulated_scan_job
is a smaller one with the same contract for the service tests and the load benchmark.
"""
from __future__ import annotations

from typing import Callable

Progress = Callable[[str, float], None]
ShouldCancel = Callable[[], bool]
Runner = Callable[[dict, Progress, ShouldCancel], dict]


class JobCancelled(Exception):
    """Raised by a runner that saw should_cancel() return True; the worker records 'cancelled'."""


class TransientError(Exception):
    """A runner failure worth retrying (a service that may come back); the worker backs off and retries."""


def is_transient(err: BaseException) -> bool:
    """True for errors of an unreachable service: connection refused/reset, timeouts, HTTP transport errors."""
    if isinstance(err, (TransientError, ConnectionError, TimeoutError)):
        return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx comes with the tiled client
        return False
    if isinstance(err, httpx.TransportError):
        return True
    if isinstance(err, httpx.HTTPStatusError) and err.response is not None:
        return err.response.status_code in (502, 503, 504)
    return False


def load_runner(path: str) -> Runner:
    """Import 'package.module:function' (the worker's --runner)."""
    import importlib

    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"runner {path!r}: expected 'module:function'")
    module = importlib.import_module(module_name)
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"runner {path!r}: module {module_name} has no {attr!r}") from None
    if not callable(fn):
        raise ValueError(f"runner {path!r} is not callable")
    return fn

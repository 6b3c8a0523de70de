"""The queue worker: takes one job at a time from the Redis streams and runs it with the job runner.

One worker process per device (CPU or one GPU). The runner (default workers.pipeline:run_job) is imported once
at start, so the model it loads stays in memory between jobs. While a job runs, a heartbeat thread keeps its
stream entry claimed; if this process dies, another worker takes the entry over after claim_idle_s
(XAUTOCLAIM). SIGTERM lets the current job run for shutdown_grace_s, then stops it cooperatively and puts it
back in the queue, so nothing is lost. Each log line is one JSON object carrying the worker and job id.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import deque
from typing import Any

from contract.jobs import Delivery, connect
from contract.scanref import ScanRef, ScanRefError
from contract.settings import Settings, use_settings
from workers.queue import JobConsumer
from workers.runner import JobCancelled, Runner, is_transient, load_runner

log = logging.getLogger("bcdi.worker")

try:
    from redis.exceptions import ConnectionError as _RedisConnectionError
    from redis.exceptions import ResponseError as _RedisResponseError
    from redis.exceptions import TimeoutError as _RedisTimeoutError

    _REDIS_DOWN: tuple[type[BaseException], ...] = (_RedisConnectionError, _RedisTimeoutError)
except ImportError:  # pragma: no cover - redis is a dependency of the service extra
    _REDIS_DOWN = (ConnectionError,)
    _RedisResponseError = RuntimeError


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, msg, plus the record's `fields` (worker, job_id, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, default=str)


def configure_json_logging(level: int = logging.INFO, stream=None) -> None:
    """Route bcdi.* loggers to stderr as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("bcdi")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def detect_device(requested: str = "auto") -> str:
    """'auto' -> 'cuda:0' when torch sees a GPU, else 'cpu'; anything else is returned as given."""
    if requested != "auto":
        return requested
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def configure_tiled_client_retries(attempts: int, timeout_s: float) -> None:
    """Bound the tiled client's own retries (env TILED_RETRY_ATTEMPTS/TIMEOUT, default 10 tries over 45 s), so a
    Tiled outage surfaces to the worker's retry loop, which logs it per job, in a predictable time."""
    os.environ["TILED_RETRY_ATTEMPTS"] = str(attempts)
    os.environ["TILED_RETRY_TIMEOUT"] = str(timeout_s)
    utils = sys.modules.get("tiled.client.utils")
    if utils is not None:  # already imported: it read the variables at import time
        utils.TILED_RETRY_ATTEMPTS = attempts
        utils.TILED_RETRY_TIMEOUT = timeout_s


class _Progress:
    """The progress callback handed to the runner: per-stage timings, throttled writes to the job record."""

    def __init__(self, worker: "Worker", job_id: str, timings: dict[str, float]):
        self.worker, self.job_id, self.timings = worker, job_id, timings
        self.stage: str | None = None
        self.stage_t0 = time.perf_counter()
        self.last_write = 0.0
        self.fraction = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.perf_counter()
        changed = stage != self.stage
        if changed:
            self.close_stage(now)
            self.stage = str(stage)[:64]
        self.fraction = min(1.0, max(0.0, float(fraction)))
        if changed or self.fraction >= 1.0 or now - self.last_write >= self.worker.settings.progress_interval_s:
            self.last_write = now
            try:
                self.worker.queue.progress(self.job_id, self.worker.name, self.stage, self.fraction, self.timings)
            except _REDIS_DOWN as e:  # progress is best effort: the job goes on while Redis is away
                self.worker._log(logging.WARNING, "progress not recorded: Redis unreachable", job_id=self.job_id,
                                 error=str(e))

    def close_stage(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        if self.stage is not None:
            self.timings[self.stage] = round(self.timings.get(self.stage, 0.0) + now - self.stage_t0, 4)
        self.stage_t0 = now


class _CancelToken:
    """should_cancel() for the runner: user cancel (Redis flag, polled), shutdown deadline, or lost claim."""

    def __init__(self, worker: "Worker", job_id: str):
        self.worker, self.job_id = worker, job_id
        self.reason: str | None = None
        self._next_poll = 0.0

    def __call__(self) -> bool:
        if self.reason:
            return True
        w = self.worker
        if w.lost_claim.is_set():
            self.reason = "lost"
        elif w.stop_deadline is not None and time.monotonic() >= w.stop_deadline:
            self.reason = "shutdown"
        else:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + w.settings.cancel_poll_s
                try:
                    if w.queue.cancel_requested(self.job_id):
                        self.reason = "user"
                except _REDIS_DOWN:  # cannot read the flag now; the next poll will
                    pass
        return self.reason is not None


class Worker:
    """Queue consumer running one job at a time with `runner` (loaded once, lazily, from settings.runner)."""

    def __init__(self, settings: Settings, runner: Runner | None = None, name: str | None = None, client=None):
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.redis = client if client is not None else connect(settings)
        self.queue = JobConsumer(self.redis, settings)
        self._runner = runner
        self.device: str | None = None
        self.stop_requested = threading.Event()
        self.stop_deadline: float | None = None  # monotonic time after which the current job is stopped
        self.lost_claim = threading.Event()
        self.current: Delivery | None = None
        self.backlog: deque[Delivery] = deque()
        self._held_lock = threading.Lock()
        self._hb_thread: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self.jobs_done = 0
        self._redis_failures = 0

    # ---- set-up ---------------------------------------------------------------------------------------------
    def _log(self, level: int, msg: str, job_id: str | None = None, **fields: Any) -> None:
        fields = {"worker": self.name, **({"job_id": job_id} if job_id else {}), **fields}
        log.log(level, msg, extra={"fields": fields})

    @property
    def runner(self) -> Runner:
        """The job runner, imported on first use and kept (the pipeline caches its model across jobs)."""
        if self._runner is None:
            t0 = time.perf_counter()
            self._runner = load_runner(self.settings.runner)
            module = sys.modules.get(self.settings.runner.partition(":")[0])
            warm_up = getattr(module, "warm_up", None)
            if callable(warm_up):
                warm_up(self.device or detect_device(self.settings.device))
            self._log(logging.INFO, "runner loaded", runner=self.settings.runner,
                      seconds=round(time.perf_counter() - t0, 3))
        return self._runner

    def request_stop(self, *_: Any) -> None:
        """Stop taking jobs; the current job may run shutdown_grace_s more, then it is stopped and re-queued."""
        if not self.stop_requested.is_set():
            self.stop_deadline = time.monotonic() + self.settings.shutdown_grace_s
            self.stop_requested.set()
            self._log(logging.INFO, "stop requested", grace_s=self.settings.shutdown_grace_s,
                      job_id=self.current.job_id if self.current else None)

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # ---- main loop ------------------------------------------------------------------------------------------
    def run(self, max_jobs: int | None = None) -> int:
        """Process jobs until stop is requested (or max_jobs handled). Returns the number of jobs handled."""
        self.queue.ensure_groups()
        configure_tiled_client_retries(self.settings.tiled_client_retry_attempts,
                                       self.settings.tiled_client_retry_timeout_s)
        self.device = detect_device(self.settings.device)
        if self.settings.cpu_threads:
            import torch

            torch.set_num_threads(self.settings.cpu_threads)
        self._log(logging.INFO, "worker started", device=self.device, cpu_threads=self.settings.cpu_threads, redis=self.settings.redis_url,
                  prefix=self.settings.key_prefix)
        _ = self.runner
        self._hb_thread = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        self._hb_thread.start()
        try:
            while not self.stop_requested.is_set() and (max_jobs is None or self.jobs_done < max_jobs):
                if not self.backlog:
                    try:
                        self.queue.worker_seen(self.name)
                        claimed = self.queue.claim(self.name, self.settings.block_ms)
                    except _REDIS_DOWN as e:
                        self._wait_for_redis(e)
                        continue
                    except _RedisResponseError:
                        if not self.queue.groups_missing():
                            raise
                        self._log(logging.WARNING, "consumer group missing (Redis lost its data?); recreating it")
                        self.queue.ensure_groups()
                        continue
                    with self._held_lock:
                        self.backlog.extend(claimed)
                    continue
                if self.stop_requested.is_set():
                    break
                d = self.backlog[0]
                self.process(d)
                with self._held_lock:
                    self.backlog.popleft()
        finally:
            self._shutdown()
        return self.jobs_done

    def _wait_for_redis(self, err: BaseException, interruptible: bool = True) -> None:
        """Redis is unreachable (restart, network): wait with back-off; when idle, a stop request ends the wait."""
        self._redis_failures += 1
        delay = min(0.25 * 2 ** (self._redis_failures - 1), 5.0)
        self._log(logging.WARNING, "Redis unreachable; waiting", error=str(err), retry_in_s=delay)
        if interruptible:
            if self.stop_requested.wait(delay):
                return
        else:
            time.sleep(delay)
        try:
            self.redis.ping()
            self._redis_failures = 0
            self._log(logging.INFO, "Redis reachable again")
        except _REDIS_DOWN:
            pass

    def _persist(self, fn, *args, **kwargs):
        """Run a job-state transition, retrying while Redis is unreachable (up to redis_retry_s): a finished job's
        record must not be lost to a Redis restart. Gives up by re-raising; the entry then stays pending and
        another delivery finds the idempotent result."""
        end = time.monotonic() + self.settings.redis_retry_s
        while True:
            try:
                return fn(*args, **kwargs)
            except _REDIS_DOWN as e:
                if time.monotonic() > end:
                    raise
                self._wait_for_redis(e, interruptible=False)

    def _shutdown(self) -> None:
        with self._held_lock:
            pending = list(self.backlog)
            self.backlog.clear()
        for d in pending:  # claimed but never started: hand back at once
            try:
                self.queue.requeue(d, self.name, f"requeued: worker {self.name} stopped before starting it")
                self._log(logging.INFO, "requeued unstarted job", job_id=d.job_id)
            except _REDIS_DOWN as e:  # still pending on us in Redis: another worker reclaims it after idle
                self._log(logging.WARNING, "could not requeue; the entry will be reclaimed", job_id=d.job_id,
                          error=str(e))
        self.stop_requested.set()
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=self.settings.heartbeat_s + 1)
        try:
            self.queue.worker_seen(self.name, gone=True)
        except Exception:  # Redis gone at exit: nothing to clean
            pass
        self._log(logging.INFO, "worker stopped", jobs=self.jobs_done)

    def _heartbeat_loop(self) -> None:
        """Re-claim every entry this worker holds, every heartbeat_s; flag a claim another worker took."""
        while not self._hb_stop.wait(self.settings.heartbeat_s):
            with self._held_lock:
                held = list(self.backlog)
            for d in held:
                try:
                    if not self.queue.heartbeat(d, self.name):
                        if self.current is not None and d.entry_id == self.current.entry_id:
                            self.lost_claim.set()
                        self._log(logging.WARNING, "claim lost to another worker", job_id=d.job_id)
                except Exception as e:  # Redis briefly unreachable: try again next beat
                    self._log(logging.WARNING, "heartbeat failed", job_id=d.job_id, error=str(e))
            try:
                self.queue.worker_seen(self.name)
            except Exception:
                pass

    # ---- one job --------------------------------------------------------------------------------------------
    def process(self, d: Delivery) -> str:
        """Run one delivery to its end state; returns what happened (succeeded, failed, cancelled, requeued,
        lost, dead-letter or a skip reason). Never raises for a job's own failure."""
        if not d.job_id:
            self._persist(self.queue.release, d)
            return "skipped"
        outcome = self._persist(self.queue.start, d, self.name)
        if outcome == "dead":
            reason = (f"delivery limit reached: delivered {d.deliveries} times (max_deliveries="
                      f"{self.settings.max_deliveries}); the workers that took it died or lost it")
            self._persist(self.queue.dead_letter, d, self.name, reason)
            self._log(logging.ERROR, "job dead-lettered", job_id=d.job_id, reason=reason)
            self.jobs_done += 1
            return "dead-letter"
        if outcome != "run":
            self._log(logging.INFO, "skipped delivery", job_id=d.job_id, outcome=outcome, deliveries=d.deliveries)
            return f"skipped:{outcome}"

        self.current = d
        self.lost_claim.clear()
        try:
            return self._run_job(d)
        finally:
            self.current = None
            self.jobs_done += 1

    def _run_job(self, d: Delivery) -> str:
        rec = self._persist(self.queue.get, d.job_id) or {}
        request = rec.get("request") or {}
        spec = {
            "job_id": d.job_id, "scan": request.get("scan"), "options": request.get("options") or {},
            "priority": d.priority, "device": self.device, "worker": self.name, "attempt": rec.get("deliveries"),
            "tiled": {"url": self.settings.tiled_url, "api_key": self.settings.tiled_api_key},
        }
        timings: dict[str, float] = {}
        if rec.get("created_at"):
            timings["queue_wait"] = round(time.time() - rec["created_at"], 4)
        progress = _Progress(self, d.job_id, timings)
        cancel = _CancelToken(self, d.job_id)
        try:  # the gateway checked the same rule with the same settings; a record from elsewhere is checked here
            ScanRef.parse(spec["scan"], self.settings.allowed_scan_prefixes)
        except ScanRefError as e:
            ok = self._persist(self.queue.finish, d, self.name, "failed", error=str(e)[:2000], timings=timings)
            self._log(logging.ERROR, "job failed", job_id=d.job_id, error=str(e), recorded=ok)
            return "failed"
        self._log(logging.INFO, "job started", job_id=d.job_id, deliveries=d.deliveries, priority=d.priority,
                  device=self.device)
        t_start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                with use_settings(self.settings):  # the Tiled adapter reads the allowed prefixes from these
                    result = self.runner(spec, progress, cancel) or {}
                break
            except Exception as e:  # the runner's failure is the job's failure, never the worker's
                progress.close_stage()
                if cancel.reason or isinstance(e, JobCancelled):
                    return self._stopped(d, cancel.reason or "user", progress, timings)
                if is_transient(e) and attempt < self.settings.retry_attempts:
                    delay = min(self.settings.retry_backoff_s * 2 ** (attempt - 1), self.settings.retry_backoff_max_s)
                    self._log(logging.WARNING, "transient failure, retrying", job_id=d.job_id, attempt=attempt,
                              delay_s=delay, error=f"{type(e).__name__}: {e}")
                    if self._sleep_unless_cancelled(delay, cancel):
                        return self._stopped(d, cancel.reason or "user", progress, timings)
                    continue
                if is_transient(e):
                    error = (f"data service unreachable (Tiled at {self.settings.tiled_url}) during stage "
                             f"'{progress.stage or 'start'}': {type(e).__name__}: {_one_line(e)}; gave up after "
                             f"{attempt} attempts over {time.monotonic() - t_start:.1f} s")
                else:
                    error = f"stage '{progress.stage or 'start'}' failed: {type(e).__name__}: {_one_line(e)}"
                ok = self._persist(self.queue.finish, d, self.name, "failed", error=error[:2000], timings=timings)
                self._log(logging.ERROR, "job failed", job_id=d.job_id, error=error, recorded=ok)
                return "failed"
        progress.close_stage()
        result_path = result.get("tiled_path") or result.get("result_path")
        summary = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if len(json.dumps(summary)) > 8000:
            summary = {"note": "summary too large to keep in the job record; see Tiled"}
        ok = self._persist(self.queue.finish, d, self.name, "succeeded", stage="done", progress=1.0,
                           result_path=result_path, result=summary, timings=timings)
        self._log(logging.INFO if ok else logging.WARNING, "job succeeded" if ok else
                  "job finished but its claim was lost; the result is keyed by job id, the owner reuses it",
                  job_id=d.job_id, result_path=result_path, seconds=round(time.monotonic() - t_start, 3))
        return "succeeded" if ok else "lost"

    def _stopped(self, d: Delivery, reason: str, progress: _Progress, timings: dict) -> str:
        if reason == "lost":
            self._log(logging.WARNING, "job abandoned: another worker owns it now", job_id=d.job_id)
            return "lost"
        if reason == "shutdown":
            ok = self._persist(self.queue.requeue, d, self.name, f"requeued: worker {self.name} shut down during "
                                                             f"'{progress.stage}'")
            self._log(logging.INFO, "job requeued on shutdown", job_id=d.job_id, recorded=ok)
            return "requeued"
        error = f"cancelled by request during stage '{progress.stage}' at {progress.fraction:.0%}"
        ok = self._persist(self.queue.finish, d, self.name, "cancelled", error=error, timings=timings)
        self._log(logging.INFO, "job cancelled", job_id=d.job_id, stage=progress.stage, recorded=ok)
        return "cancelled"

    def _sleep_unless_cancelled(self, seconds: float, cancel: _CancelToken) -> bool:
        """Back off for `seconds` (heartbeats continue); True if the job got cancelled meanwhile."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if cancel():
                return True
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        return cancel()


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:500] or type(err).__name__


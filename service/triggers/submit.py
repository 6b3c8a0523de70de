"""Post scan references to the gateway from a background thread, so a slow or down gateway never blocks a scan.

`GatewaySubmitter.submit()` only puts the request on an in-memory queue and returns at once; a daemon thread
posts it with a short timeout and a retry or two. A request that still fails is a *miss*: it is logged (logger
``bcdi.trigger``) and recorded in `submissions`, never raised. Runs are deduplicated by uid; the gateway also
deduplicates by scan + options, so a run re-submitted after a restart gives back the same job.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

log = logging.getLogger("bcdi.trigger")

API = "/api/v1/reconstructions"
_STOP = object()


@dataclass
class Submission:
    """What became of one run's request: 'sent' (job queued or an existing job returned) or 'missed'."""

    run_uid: str
    body: dict
    status: str = "pending"
    job_id: str | None = None
    duplicate: bool | None = None
    http_status: int | None = None
    error: str | None = None
    seconds: float = 0.0
    queued_at: float = 0.0


class GatewaySubmitter:
    """Background poster of reconstruction requests to one gateway (X-API-Key = a submit key)."""

    def __init__(self, gateway_url: str, api_key: str, *, timeout: float = 2.0, attempts: int = 2,
                 backoff_s: float = 0.5, max_pending: int = 1000, keep: int = 1000, max_remembered: int = 100_000):
        if not gateway_url.startswith(("http://", "https://")):
            raise ValueError(f"gateway URL must start with http:// or https://, got {gateway_url!r}")
        if not api_key:
            raise ValueError("a submit API key is needed to post to the gateway")
        if timeout <= 0 or attempts < 1:
            raise ValueError("timeout must be > 0 and attempts >= 1")
        self.url = gateway_url.rstrip("/") + API
        self.api_key = api_key
        self.timeout = timeout
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.submissions: deque[Submission] = deque(maxlen=keep)
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._seen: dict[str, None] = {}  # run uids submitted (insertion-ordered, oldest dropped first)
        self.max_remembered = max_remembered
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0  # requests queued or in flight
        self._thread: threading.Thread | None = None
        self._closed = False

    # ---- called from the RunEngine / watcher thread: never blocks, never raises -------------------------------
    def submit(self, run_uid: str, body: dict) -> bool:
        """Queue `body` for run `run_uid`; False (and nothing posted) if this run was already submitted."""
        try:
            with self._lock:
                if self._closed:
                    log.warning("trigger miss: submitter closed", extra={"fields": {"run_uid": run_uid}})
                    return False
                if run_uid in self._seen:
                    log.info("duplicate run ignored", extra={"fields": {"run_uid": run_uid}})
                    return False
                self._seen[run_uid] = None
                while len(self._seen) > self.max_remembered:  # bounded memory on a long-running beamline
                    self._seen.pop(next(iter(self._seen)))
                self._busy += 1
                self._ensure_thread()
            sub = Submission(run_uid=run_uid, body=body, queued_at=time.time())
            self._queue.put_nowait(sub)
            return True
        except queue.Full:
            self._miss(sub, "too many pending submissions (gateway down for long?)")
            self.submissions.append(sub)
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            return False
        except Exception as e:  # pragma: no cover - defensive: a trigger must never break the scan
            log.warning("trigger miss: %s", e, extra={"fields": {"run_uid": run_uid}})
            return False

    def already_submitted(self, run_uid: str) -> bool:
        with self._lock:
            return run_uid in self._seen

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued request is sent or missed; False if still busy after `timeout` seconds."""
        end = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting runs, finish what is queued (up to `timeout`), end the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self.flush(timeout)
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            thread.join(timeout)

    # ---- background thread --------------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="bcdi-trigger-submitter", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout, headers={"X-API-Key": self.api_key}) as http:
            while True:
                sub = self._queue.get()
                if sub is _STOP:
                    return
                try:
                    self._post(http, sub)
                except Exception as e:  # pragma: no cover - never let the thread die
                    self._miss(sub, f"{type(e).__name__}: {e}")
                finally:
                    self.submissions.append(sub)
                    with self._idle:
                        self._busy -= 1
                        self._idle.notify_all()

    def _post(self, http, sub: Submission) -> None:
        import httpx

        t0 = time.perf_counter()
        error = "not tried"
        for attempt in range(1, self.attempts + 1):
            try:
                r = http.post(self.url, json=sub.body)
            except httpx.HTTPError as e:
                error = f"gateway {self.url} unreachable: {type(e).__name__}: {e}"
            else:
                sub.http_status = r.status_code
                if r.status_code in (200, 202):
                    data = r.json()
                    sub.status, sub.job_id, sub.duplicate = "sent", data.get("id"), data.get("duplicate")
                    sub.seconds = time.perf_counter() - t0
                    log.info("reconstruction submitted", extra={"fields": {
                        "run_uid": sub.run_uid, "job_id": sub.job_id, "duplicate": sub.duplicate}})
                    return
                detail = _detail(r)
                error = f"gateway answered HTTP {r.status_code}: {detail}"
                if 400 <= r.status_code < 500 and r.status_code != 429:
                    break  # the request itself is wrong: retrying will not help
            if attempt < self.attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        sub.seconds = time.perf_counter() - t0
        self._miss(sub, error)

    def _miss(self, sub: Submission, error: str) -> None:
        sub.status, sub.error = "missed", error
        with self._lock:
            self._seen.pop(sub.run_uid, None)  # a later stop/catch-up for this run may try again
        log.warning("trigger miss: %s", error, extra={"fields": {"run_uid": sub.run_uid}})


def _detail(r) -> str:
    try:
        data = r.json()
        return str(data.get("message") or data.get("detail"))[:300]
    except Exception:
        return r.text[:300]

"""Bluesky RunEngine callback: when a BCDI scan stops with success, submit its reconstruction to the gateway.

    from service.triggers import BcdiSelector, BcdiTrigger, GatewaySubmitter
    RE.subscribe(BcdiTrigger(GatewaySubmitter("http://gateway:8000", "<submit key>"), BcdiSelector()))

The callback is a bluesky DocumentRouter: it keeps start documents by uid and, on the matching stop document,
hands the request to the submitter's background thread; the RunEngine never waits for the gateway and never
sees an exception from here.
"""
from __future__ import annotations

import logging

from bluesky.callbacks.core import DocumentRouter

from service.triggers.select import BcdiSelector, successful_stop
from service.triggers.submit import GatewaySubmitter

log = logging.getLogger("bcdi.trigger")


class BcdiTrigger(DocumentRouter):
    """A RunEngine callback that submits successful BCDI runs, once per run uid (other documents pass through)."""

    def __init__(self, submitter: GatewaySubmitter, selector: BcdiSelector | None = None, max_open_runs: int = 100):
        super().__init__()
        self.submitter = submitter
        self.selector = selector or BcdiSelector()
        self.max_open_runs = max_open_runs
        self._starts: dict[str, dict] = {}
        self.skipped: list[tuple[str, str]] = []  # (run uid, why) for runs seen and not submitted

    def __call__(self, name: str, doc: dict, validate: bool = False):
        """Route the document (start, stop; the rest pass through); a failure is logged, never raised."""
        try:
            return super().__call__(name, doc, validate)
        except Exception as e:  # a trigger must never break or stop a scan
            log.warning("trigger miss: cannot handle %s document: %s: %s", name, type(e).__name__, e)
            return name, doc

    def start(self, doc: dict) -> None:
        self._starts[doc["uid"]] = doc
        while len(self._starts) > self.max_open_runs:  # runs that never stopped: forget the oldest
            self._starts.pop(next(iter(self._starts)))

    def stop(self, doc: dict) -> None:
        self._stop(doc)

    def _stop(self, stop: dict) -> None:
        uid = stop.get("run_start")
        start = self._starts.pop(uid, None)
        if start is None:
            if not self.submitter.already_submitted(uid):
                self._skip(uid, "stop document without a start document seen by this callback")
            return
        if not self.selector.is_bcdi(start):
            self._skip(uid, f"not a BCDI plan (plan_name={start.get('plan_name')!r})")
            return
        if not successful_stop(stop):
            self._skip(uid, f"exit_status={stop.get('exit_status')!r} ({stop.get('reason') or 'no reason'})")
            return
        self.submitter.submit(uid, self.selector.request(start))

    def _skip(self, uid, why: str) -> None:
        self.skipped.append((uid, why))
        del self.skipped[:-1000]
        log.info("run not submitted: %s", why, extra={"fields": {"run_uid": uid}})

"""Submit-time check of a scan reference through the Tiled client: does the path, scan entry, detector or run exist?

The gateway calls `check_scan_ref` before queueing, so a typo gets a 404/422 naming the missing part at once
instead of a job that fails minutes later in a worker. When Tiled cannot be reached (or the tiled client is not
installed) the reference is not checked: the job is queued all the same and the reply says so (`note`).
Only metadata and key listings cross the network (no array is read). The gateway imports no workers/ code, so
the few ID01 naming rules needed here (scan '3' = '3.1', master-file entries '<dataset>_<scan>', the detector
names) are restated from workers/io/id01.py; the worker applies the full reader later.
"""
from __future__ import annotations

import os

KNOWN_DETECTORS = ("mpx1x4", "mpxgaas", "eiger2M")  # as workers.io.id01.DETECTORS
RUN_ROOTS = ("", "raw")  # where TiledWriter's Bluesky runs may live (as workers.io.tiled_store.resolve_run_uid)
RUN_MD_KEY = "bcdi"


class ScanProblem(Exception):
    """The reference does not resolve: HTTP ``status`` (404 missing, 422 unusable) and a one-line message."""

    def __init__(self, status: int, message: str, field: str):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _client(settings):
    """A Tiled client for the gateway's settings, or None when Tiled is unreachable (quick /healthz probe)."""
    import httpx

    url = settings.tiled_url.rstrip("/")
    try:
        if httpx.get(f"{url}/healthz", timeout=settings.health_timeout_s).status_code != 200:
            return None
    except httpx.HTTPError:
        return None
    os.environ.setdefault("TILED_RETRY_ATTEMPTS", "1")  # a failing call must not hold the request for 45 s
    from tiled.client import from_uri

    return from_uri(url, api_key=settings.tiled_api_key or None)


def _keys(node) -> list[str]:
    try:
        return list(node)
    except TypeError:  # an array, not a container
        return []


def _scan_entry(keys: list[str], scan: str) -> str | None:
    wanted = scan if "." in scan else f"{scan}.1"
    for name in (scan, wanted):
        if name in keys:
            return name
    matches = [k for k in keys if k.endswith(f"_{wanted}")]
    return matches[0] if len(matches) == 1 else None


def _resolve_run(client, uid: str) -> dict:
    for root in RUN_ROOTS:
        try:
            run = client[f"{root}/{uid}" if root else uid]
        except KeyError:
            continue
        ref = dict(run.metadata.get("start") or {}).get(RUN_MD_KEY)
        if not isinstance(ref, dict) or not ref.get("tiled_path"):
            raise ScanProblem(422, f"Bluesky run {uid} has no ID01 scan reference in its start document "
                                   f"(metadata key '{RUN_MD_KEY}' with tiled_path, scan, detector)", "run_uid")
        return {k: ref.get(k) for k in ("tiled_path", "scan", "detector")}
    raise ScanProblem(404, f"no Bluesky run {uid} in Tiled (looked under: {', '.join(r or '/' for r in RUN_ROOTS)})",
                      "run_uid")


def _check_path(client, path: str, scan: str | None, detector: str | None) -> None:
    try:
        node = client[path]
    except KeyError:
        raise ScanProblem(404, f"no such Tiled path: {path} (check the sample and dataset names)",
                          "tiled_path") from None
    keys = _keys(node)
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if last in keys and not any("." in k and k.split(".")[-1].isdigit() for k in keys):  # folder/<dataset>
        node = node[last]
        keys = _keys(node)
    if scan is None:
        return
    name = _scan_entry(keys, scan)
    if name is None:
        shown = ", ".join(sorted(keys)[:12]) + (" ..." if len(keys) > 12 else "")
        raise ScanProblem(404, f"no scan {scan} in {path} (it has: {shown or 'no scans'})", "scan")
    entry = node[name]
    present: set[str] = set()
    for group in ("measurement", "instrument"):
        try:
            present |= set(_keys(entry[group]))
        except KeyError:
            pass
    if detector is not None and detector not in present:
        known = ", ".join(d for d in KNOWN_DETECTORS if d in present) or "none"
        raise ScanProblem(422, f"detector {detector!r} not found in scan {name} (known detectors present: {known})",
                          "detector")
    if detector is None and not any(d in present for d in KNOWN_DETECTORS):
        raise ScanProblem(422, f"no detector found in scan {name} (looked for {', '.join(KNOWN_DETECTORS)}); "
                               f"name it with 'detector'", "detector")


def check_scan_ref(settings, scan: dict, budget_s: float | None = None) -> str | None:
    """Check a request's scan reference in Tiled. Returns None when it resolves, or a note when it could not be
    checked (Tiled unreachable or slower than ``budget_s``: the job is queued anyway); raises ScanProblem when a
    part does not exist. The budget (default env BCDI_SCAN_CHECK_BUDGET_S, else 2.5 s) keeps a submission fast:
    the Bluesky trigger posts with a short timeout."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as FutureTimeout

    budget = float(budget_s if budget_s is not None else os.environ.get("BCDI_SCAN_CHECK_BUDGET_S", 2.5))
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan-check")
    future = pool.submit(_check, settings, scan)
    pool.shutdown(wait=False)  # a check past its budget finishes in the background, its answer unused
    try:
        return future.result(timeout=budget)
    except FutureTimeout:
        return (f"Tiled at {settings.tiled_url} did not answer within {budget:g} s, so the scan reference was not "
                f"checked; the job is queued and the worker will read the scan")


def _check(settings, scan: dict) -> str | None:
    try:
        client = _client(settings)
    except ImportError:
        return "the scan reference was not checked (no Tiled client installed here); the worker will check it"
    except Exception as e:  # refused key, server error: not the user's fault, queue it
        return f"the scan reference was not checked (Tiled answered: {' '.join(str(e).split())[:200]})"
    if client is None:
        return (f"Tiled at {settings.tiled_url} is unreachable, so the scan reference was not checked; "
                f"the job is queued and the worker will read the scan once Tiled is back")
    ref = dict(scan)
    if ref.get("run_uid") and not ref.get("tiled_path"):
        ref = {**_resolve_run(client, ref["run_uid"]), "run_uid": ref["run_uid"]}
    if ref.get("tiled_path"):
        _check_path(client, str(ref["tiled_path"]).strip("/"), ref.get("scan"), ref.get("detector"))
    return None

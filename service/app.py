"""The REST gateway: takes scan references, queues reconstruction jobs in Redis, reports their state.

Start with `bcdi-recon serve` or `uvicorn --factory service.app:create_app`. The gateway only talks to the
workers through the queue; it never imports workers/, models/ or torch, so it starts fast and stays small.
"""
from __future__ import annotations

import json
import time
from contextlib import asynccontextmanager
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from service.auth import require_read, require_submit
from service.limits import BodySizeLimit
from service.metrics import GatewayMetrics
from contract.jobs import TERMINAL_STATES, JobState, connect
from contract.scanref import ScanRefError
from contract.settings import Settings, load_settings
from service.models import JOB_ID_PATTERN, ErrorReply, HealthReply, JobList, JobStatus, ReconRequest, SubmitReply
from service.queue import JobProducer

API = "/api/v1/reconstructions"

DESCRIPTION = """\
Reconstruction service for Bragg CDI scans: POST a scan reference (Tiled path or Bluesky run uid) and options;
a GPU worker predicts the phase with the CNN, refines it by error reduction and publishes the object to Tiled.
Follow the job with GET (state, stage, progress, timings, Tiled path) or as server-sent events.

Authentication: header `X-API-Key`. Submit keys may submit, cancel and read; read keys may only read.
A missing key gives 401, a key not allowed for the action 403. Bodies over the size limit give 413."""

JobId = Path(..., pattern=JOB_ID_PATTERN, description="job id (32 hex characters)")

_ERRORS = {401: {"model": ErrorReply, "description": "missing API key"},
           403: {"model": ErrorReply, "description": "API key not valid for this action"},
           422: {"model": ErrorReply, "description": "invalid request; `message` names the field"}}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway for `settings` (default: environment / BCDI_CONFIG_FILE)."""
    settings = settings or load_settings()
    if not settings.submit_api_keys or not settings.read_api_keys:
        raise ValueError("no API keys configured: set BCDI_SUBMIT_API_KEYS and BCDI_READ_API_KEYS "
                         "(comma-separated) or submit_api_keys/read_api_keys in the config file")
    client = connect(settings)
    queue = JobProducer(client, settings)
    metrics = GatewayMetrics(queue, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        try:
            await run_in_threadpool(queue.ensure_groups)
        except Exception:  # Redis down at start: /health reports it, requests get 503 until it is back
            pass
        yield
        client.close()

    app = FastAPI(title="bcdi-recon gateway", version="1", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # served from local assets by install_docs (offline)
    from service.access_log import AccessLog
    from service.docs import install_docs

    install_docs(app)
    app.state.settings = settings
    app.state.queue = queue
    app.state.metrics = metrics
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(AccessLog, settings=settings)  # outermost: JSON line per request, key id only

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.requests.labels(request.method, route, str(response.status_code)).inc()
        metrics.latency.labels(request.method, route).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors]
        clean = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return JSONResponse(status_code=422, content={"detail": clean, "message": "; ".join(parts)[:2000]})

    import redis.exceptions as redis_errors

    @app.exception_handler(redis_errors.ConnectionError)
    @app.exception_handler(redis_errors.TimeoutError)
    async def redis_down(request: Request, exc: Exception):
        return JSONResponse(status_code=503, content={
            "detail": f"job queue unavailable: Redis at {settings.redis_url} unreachable ({type(exc).__name__})"})

    def links(request: Request, job_id: str) -> dict:
        return {"self": str(request.url_for("get_reconstruction", job_id=job_id)),
                "events": str(request.url_for("reconstruction_events", job_id=job_id))}

    def status_of(request: Request, rec: dict) -> JobStatus:
        return JobStatus(**rec, links=links(request, rec["id"]))

    # ---- reconstructions ------------------------------------------------------------------------------------
    @app.post(API, status_code=202, response_model=SubmitReply, tags=["reconstructions"],
              responses={200: {"model": SubmitReply, "description": "duplicate: the existing job"}, **_ERRORS,
                         413: {"model": ErrorReply}, 503: {"model": ErrorReply}})
    def submit_reconstruction(body: ReconRequest, request: Request, response: Response,
                              _: str = Depends(require_submit)) -> SubmitReply:
        """Queue a reconstruction. The same scan and options again return the existing job (200) unless force."""
        try:  # the same check as the worker's (contract.scanref), against the same setting
            body.scan.require_prefix(settings.allowed_scan_prefixes)
        except ScanRefError as exc:
            raise RequestValidationError([{"loc": ("body", "scan", "tiled_path"), "type": "value_error",
                                           "msg": f"{exc} (raw data lives there in Tiled)"}]) from None
        note = _submit_checks(settings, body)  # 404/422 when the scan reference does not resolve in Tiled
        job_id, created = queue.submit(body)
        metrics.submitted.labels(body.priority, str(not created).lower()).inc()
        lk = links(request, job_id)
        response.headers["Location"] = lk["self"]
        if not created:
            response.status_code = 200
        rec = queue.get(job_id)
        state = rec["state"] if rec else JobState.queued.value
        return SubmitReply(id=job_id, state=state, duplicate=not created, status_url=lk["self"],
                           events_url=lk["events"], note=note)

    @app.get(API, response_model=JobList, tags=["reconstructions"], responses=_ERRORS)
    def list_reconstructions(request: Request, state: JobState | None = Query(None),
                             priority: Literal["high", "normal"] | None = Query(None),
                             offset: int = Query(0, ge=0, le=1_000_000), limit: int = Query(50, ge=1, le=200),
                             _: str = Depends(require_read)) -> JobList:
        """Jobs, newest first, filtered by state and priority, with paging."""
        items, total = queue.list(state.value if state else None, priority, offset, limit)
        return JobList(items=[status_of(request, r) for r in items], total=total, offset=offset, limit=limit)

    @app.get(API + "/{job_id}", response_model=JobStatus, tags=["reconstructions"],
             responses={404: {"model": ErrorReply}, **_ERRORS})
    def get_reconstruction(request: Request, job_id: str = JobId, _: str = Depends(require_read)) -> JobStatus:
        """State, stage, progress, per-stage timings, error, Tiled path and browser URL of one job."""
        rec = queue.get(job_id)
        if rec is None:
            raise HTTPException(404, f"no reconstruction job {job_id}")
        return status_of(request, rec)

    @app.delete(API + "/{job_id}", status_code=202, response_model=JobStatus, tags=["reconstructions"],
                responses={404: {"model": ErrorReply}, 409: {"model": ErrorReply}, **_ERRORS})
    def cancel_reconstruction(request: Request, job_id: str = JobId, _: str = Depends(require_submit)) -> JobStatus:
        """Cancel: a queued job ends at once; a running job stops at the next phasing iteration."""
        outcome = queue.cancel(job_id)
        if outcome == "missing":
            raise HTTPException(404, f"no reconstruction job {job_id}")
        rec = queue.get(job_id)
        if outcome == "terminal":
            raise HTTPException(409, f"job {job_id} already {rec['state'] if rec else 'finished'}; nothing to cancel")
        return status_of(request, rec)

    @app.get(API + "/{job_id}/events", tags=["reconstructions"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                              "description": "`event: status` messages, each `data:` a JobStatus JSON; "
                                             "the stream ends after an end state"},
                        404: {"model": ErrorReply}, **_ERRORS})
    async def reconstruction_events(request: Request, job_id: str = JobId, _: str = Depends(require_read)):
        """Server-sent events: the job record now, then at every change, until it succeeds, fails or is cancelled."""
        import redis.asyncio as aioredis

        # one async client per stream: it lives on this request's event loop and closes with the stream
        aredis = aioredis.Redis.from_url(settings.redis_url, decode_responses=True, socket_connect_timeout=2.0)
        pubsub = aredis.pubsub()
        try:
            await pubsub.subscribe(queue.channel(job_id))  # subscribe first, then read: no change is missed
            raw = await aredis.hgetall(queue.job_key(job_id))
        except BaseException:
            await pubsub.aclose()
            await aredis.aclose()
            raise
        if not raw:
            await pubsub.aclose()
            await aredis.aclose()
            raise HTTPException(404, f"no reconstruction job {job_id}")
        first = queue.decode(raw)
        lk = links(request, job_id)

        def frame(rec: dict) -> str:
            rec = dict(rec, links=lk)
            return f"event: status\ndata: {json.dumps(rec)}\n\n"

        async def stream():
            try:
                yield frame(first)
                if first["state"] in TERMINAL_STATES:
                    return
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=settings.sse_keepalive_s)
                    if msg is None:
                        yield ": keep-alive\n\n"
                        continue
                    rec = json.loads(msg["data"])
                    yield frame(rec)
                    if rec.get("state") in TERMINAL_STATES:
                        return
            finally:
                await pubsub.aclose()
                await aredis.aclose()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- operations -----------------------------------------------------------------------------------------
    @app.get("/health", response_model=HealthReply, tags=["operations"],
             responses={503: {"model": HealthReply, "description": "Redis or Tiled unreachable"}, **_ERRORS})
    def health(response: Response, _: str = Depends(require_read)) -> HealthReply:
        """Checks Redis and Tiled; 503 with the reason when one of them is down. Also counts live workers."""
        checks = {"redis": _check_redis(queue, settings), "tiled": _check_tiled(settings)}
        if checks["redis"]["ok"]:
            try:
                now = time.time()
                seen = queue.stats()["workers"]
                limit = 3 * settings.heartbeat_s + settings.block_ms / 1e3
                checks["workers"] = {"ok": True, "alive": sum(1 for t in seen.values() if now - t < limit)}
            except Exception as e:
                checks["workers"] = {"ok": True, "alive": None, "error": str(e)}
        ok = checks["redis"]["ok"] and checks["tiled"]["ok"]
        if not ok:
            response.status_code = 503
        return HealthReply(status="ok" if ok else "degraded", checks=checks)

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **_ERRORS})
    def prometheus_metrics(_: str = Depends(require_read)) -> Response:
        """Prometheus text format: HTTP requests, submissions, queue depth, finished jobs, dead letters, workers."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _submit_checks(settings: Settings, body: ReconRequest) -> str | None:
    """Checks a request needs beyond its schema: recipe step counts, and the scan reference through Tiled.

    Raises HTTPException 422/404 naming the problem; returns a note for the reply when Tiled could not be asked.
    """
    import re

    from service.scan_check import ScanProblem, check_scan_ref

    recipe = body.options.pre_recipe or ""
    if re.search(r"\*\*0+(?!\d)", recipe):
        raise HTTPException(422, f"options.pre_recipe {recipe!r}: a step count must be >= 1 (leave the step out)")
    try:
        return check_scan_ref(settings, body.scan.model_dump(exclude_none=True))
    except ScanProblem as e:
        raise HTTPException(e.status, f"scan.{e.field}: {e.message}") from None


def _check_redis(queue: JobProducer, settings: Settings) -> dict:
    t0 = time.perf_counter()
    try:
        queue.redis.ping()
    except Exception as e:
        return {"ok": False, "error": f"Redis at {settings.redis_url} unreachable: {type(e).__name__}: {e}"}
    return {"ok": True, "latency_ms": round(1e3 * (time.perf_counter() - t0), 2)}


def _check_tiled(settings: Settings) -> dict:
    import httpx

    url = settings.tiled_url.rstrip("/") + "/api/v1/"
    headers = {"Authorization": f"Apikey {settings.tiled_api_key}"} if settings.tiled_api_key else {}
    t0 = time.perf_counter()
    try:
        r = httpx.get(url, headers=headers, timeout=settings.health_timeout_s)
    except httpx.HTTPError as e:
        return {"ok": False, "error": f"Tiled at {settings.tiled_url} unreachable: {type(e).__name__}: {e}"}
    if r.status_code >= 400:
        return {"ok": False, "error": f"Tiled at {settings.tiled_url} answered HTTP {r.status_code}"}
    return {"ok": True, "latency_ms": round(1e3 * (time.perf_counter() - t0), 2)}

"""Request and job models of the reconstruction API (pydantic), shared by the gateway and the workers.

Strict on purpose: unknown fields are refused and every string is bounded, so a malformed or hostile
request ends as a 422 naming the field, never as a 5xx or a huge Redis record.
"""
from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"
PATH_PATTERN = r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$"
NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
UID_PATTERN = r"^[A-Za-z0-9\-]+$"
SCAN_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,4})?$"

CropDim = Annotated[int, Field(ge=8, le=2048)]


class JobState(str, Enum):
    """Life cycle of a job: queued -> running -> succeeded | failed | cancelled (running may go back to queued)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATES = frozenset({JobState.succeeded.value, JobState.failed.value, JobState.cancelled.value})


class ScanRef(BaseModel):
    """Where the measured scan is: a Tiled path (+ scan number and detector), or a Bluesky run uid."""

    model_config = ConfigDict(extra="forbid")

    tiled_path: str | None = Field(None, min_length=1, max_length=512, pattern=PATH_PATTERN,
                                   description="path of the scan (or of its container) in Tiled",
                                   examples=["raw/ID01/sample1"])
    scan: str | None = Field(None, pattern=SCAN_PATTERN, max_length=16,
                             description="scan inside tiled_path: ID01 style '1.1' (an integer means 'N.1')",
                             examples=["1.1"])
    detector: str | None = Field(None, min_length=1, max_length=64, pattern=NAME_PATTERN,
                                 description="detector name, e.g. mpx1x4")
    run_uid: str | None = Field(None, min_length=8, max_length=64, pattern=UID_PATTERN,
                                description="Bluesky run start uid (alternative to tiled_path)")

    @field_validator("scan", mode="before")
    @classmethod
    def _scan_as_text(cls, v):
        """Integers are accepted for convenience and mean scan N.1, so 3 and "3.1" are the same job."""
        if isinstance(v, int) and not isinstance(v, bool):
            if not 0 <= v <= 10**9:
                raise ValueError("scan number must be between 0 and 1e9")
            return f"{v}.1"
        if isinstance(v, str) and v.isdigit():
            return f"{v}.1"
        return v

    @field_validator("tiled_path")
    @classmethod
    def _no_dot_segments(cls, v: str | None) -> str | None:
        if v is not None and any(part in (".", "..") for part in v.split("/")):
            raise ValueError("path segments '.' and '..' are not allowed")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "ScanRef":
        if (self.tiled_path is None) == (self.run_uid is None):
            raise ValueError("give exactly one of tiled_path or run_uid")
        if self.run_uid is not None and (self.scan is not None or self.detector is not None):
            raise ValueError("scan and detector go with tiled_path, not with run_uid")
        return self


class ReconOptions(BaseModel):
    """Reconstruction options; defaults are concrete so that equal requests hash equal."""

    model_config = ConfigDict(extra="forbid")

    crop_size: list[CropDim] | None = Field(None, min_length=3, max_length=3,
                                            description="(z, y, x) crop around the Bragg peak; null = automatic")
    er_cycles: int = Field(400, ge=0, le=100_000, description="error-reduction refinement cycles")
    support_threshold: float = Field(0.2, gt=0.0, lt=1.0, description="relative support threshold")
    border_n: int = Field(2, ge=0, le=64, description="support updates may only move this many border voxels")
    pre_recipe: str = Field("", max_length=80, pattern=r"^$|^(ER|HIO|RAAR)\*\*\d{1,5}(,(ER|HIO|RAAR)\*\*\d{1,5})*$",
                            description="HIO/RAAR cycles run before the ER cycles, e.g. RAAR**200; empty = ER only")
    engine: Literal["torch", "pynx"] = Field("torch", description="phasing engine for the refinement")

    @model_validator(mode="after")
    def _pre_recipe_needs_er(self):
        if self.pre_recipe and self.er_cycles == 0:
            raise ValueError("pre_recipe runs before the ER cycles, so it needs er_cycles > 0")
        return self


class ReconRequest(BaseModel):
    """Body of POST /api/v1/reconstructions."""

    model_config = ConfigDict(extra="forbid")

    scan: ScanRef
    options: ReconOptions = Field(default_factory=ReconOptions)
    priority: Literal["high", "normal"] = "normal"
    force: bool = Field(False, description="run again even if the same scan and options were already submitted")

    def dedup_hash(self) -> str:
        """Hash of scan + options (not priority, not force): equal requests give the same job."""
        body = {"scan": self.scan.model_dump(), "options": self.options.model_dump()}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


class Links(BaseModel):
    self: str
    events: str


class SubmitReply(BaseModel):
    """Reply of POST: the job id and where to follow it."""

    id: str
    state: JobState
    duplicate: bool = Field(description="true when an existing job with the same scan and options was returned")
    status_url: str
    events_url: str
    note: str | None = Field(None, description="e.g. that Tiled was unreachable, so the scan reference was not "
                                               "checked before queueing")


class JobStatus(BaseModel):
    """The job-state record as the API shows it."""

    id: str
    state: JobState
    stage: str | None = None
    progress: float = Field(0.0, ge=0.0, le=1.0)
    priority: Literal["high", "normal"] = "normal"
    created_at: float | None = Field(None, description="UNIX time of submission")
    started_at: float | None = None
    finished_at: float | None = None
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per stage, plus queue_wait")
    error: str | None = None
    cancel_requested: bool = False
    deliveries: int = Field(0, description="how many times a worker received the job (>1 after a crash)")
    worker: str | None = None
    result_path: str | None = Field(None, description="Tiled path of the results")
    browser_url: str | None = Field(None, description="Tiled web UI page of the results")
    result: dict | None = Field(None, description="small summary returned by the pipeline (no arrays)")
    request: dict | None = None
    links: Links | None = None


class JobList(BaseModel):
    items: list[JobStatus]
    total: int
    offset: int
    limit: int


class HealthReply(BaseModel):
    status: Literal["ok", "degraded"]
    checks: dict[str, dict]


class ErrorReply(BaseModel):
    detail: str | list
    message: str | None = None

"""Request and reply models of the reconstruction API (pydantic).

Strict on purpose: unknown fields are refused and every string is bounded, so a malformed or hostile
request ends as a 422 naming the field, never as a 5xx or a huge Redis record. The scan reference and the job
states are the shared job contract (contract.scanref, contract.jobs), which the workers use too.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contract.jobs import JobState
from contract.scanref import ScanRef

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"

CropDim = Annotated[int, Field(ge=8, le=2048)]


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

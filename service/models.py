"""Request and reply models of the reconstruction API (pydantic).

Strict on purpose: unknown fields are refused and every string is bounded, so a malformed or hostile
request ends as a 422 naming the field, never as a 5xx or a huge Redis record. The scan reference and the job
states are the shared job contract (contract.scanref, contract.jobs), which the workers use too.
"""
from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from contract import options as options_schema
from contract.jobs import JobState
from contract.scanref import ScanRef

JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


def _options_field(f):
    """(annotation, pydantic Field) of one REST-visible field of the options schema, with its bounds."""
    m = f.metadata
    bounds = {k: m[k] for k in ("ge", "gt", "le", "lt") if m[k] is not None}
    if f.name == "crop_size":
        dim = Annotated[int, Field(**bounds)]
        return (list[dim] | None, Field(f.default, min_length=3, max_length=3, description=m["help"]))
    if f.name == "method":
        return (Literal[options_schema.METHODS], Field(f.default, description=m["help"]))
    if f.name == "negative":
        return (Literal[options_schema.NEGATIVES], Field(f.default, description=m["help"]))
    if options_schema.optional(f):  # e.g. photon_scale: null or a bounded number
        kind = Annotated[options_schema.scalar_type(f), Field(**bounds)]
        return (kind | None, Field(f.default, description=m["help"]))
    if f.name == "engine":
        engines = Literal[tuple(options_schema.ENGINES) + tuple(options_schema.ENGINE_ALIASES)]
        return (engines, Field(f.default, description=m["help"]))
    if f.name == "pre_recipe":
        return (str, Field(f.default, max_length=options_schema.PRE_RECIPE_MAX_LENGTH, description=m["help"],
                           examples=["RAAR**200"]))
    return (options_schema.scalar_type(f), Field(f.default, description=m["help"], **bounds))


def _check_pre_recipe(cls, v: str) -> str:
    return options_schema.check_pre_recipe(v)  # OptionsError is a ValueError: a 422 naming the field


def _engine_alias(cls, v: str) -> str:
    return options_schema.ENGINE_ALIASES.get(v, v)


def _whole_schema(self):
    """Cross-field rules of the schema (e.g. a pre-recipe needs ER cycles): the dataclass checks them."""
    options_schema.ReconOptions.from_mapping(self.model_dump())
    return self


# The request model is generated from the one options schema (contract/options.py): same names, defaults,
# bounds and help; device and model are the worker's choice and not part of a request.
ReconOptions = create_model(
    "ReconOptions",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Reconstruction options (contract.options.ReconOptions); defaults are concrete so equal requests "
            "hash equal.",
    __validators__={"_pre_recipe": field_validator("pre_recipe")(_check_pre_recipe),
                    "_engine": field_validator("engine")(_engine_alias),
                    "_schema": model_validator(mode="after")(_whole_schema)},
    **{f.name: _options_field(f) for f in options_schema.rest_fields()},
)


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

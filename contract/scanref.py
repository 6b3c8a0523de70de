"""Scan references: where the measured scan is (a Tiled path + scan + detector, or a Bluesky run uid).

The one validation of a scan reference. The gateway uses `ScanRef` as the request field (a bad reference is a 422
naming the field) and checks `require_prefix(settings.allowed_scan_prefixes)`; the worker's Tiled adapter parses
the same reference with `ScanRef.parse`, against the same setting, so the gateway never queues a scan that the
worker then refuses.
"""
from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PATH_PATTERN = r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$"
NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"
UID_PATTERN = r"^[A-Za-z0-9\-]+$"
SCAN_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,4})?$"


class ScanRefError(ValueError):
    """A scan reference that is malformed or points outside the allowed Tiled prefixes (one-line message)."""


class ScanRef(BaseModel):
    """Where the measured scan is: a Tiled path (+ scan number and detector), or a Bluesky run uid."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tiled_path: str | None = Field(None, min_length=1, max_length=512, pattern=PATH_PATTERN,
                                   description="path of the scan (or of its container) in Tiled; surrounding "
                                               "slashes are dropped", examples=["raw/ID01/sample1"])
    scan: str | None = Field(None, pattern=SCAN_PATTERN, max_length=16,
                             description="scan inside tiled_path: ID01 style '1.1' (an integer means 'N.1')",
                             examples=["1.1"])
    detector: str | None = Field(None, min_length=1, max_length=64, pattern=NAME_PATTERN,
                                 description="detector name, e.g. mpx1x4")
    run_uid: str | None = Field(None, min_length=8, max_length=64, pattern=UID_PATTERN,
                                description="Bluesky run start uid (alternative to tiled_path)")

    @field_validator("tiled_path", mode="before")
    @classmethod
    def _strip_slashes(cls, v: Any) -> Any:
        """'/raw/a/b/' and 'raw/a/b' are the same path."""
        return v.strip().strip("/") if isinstance(v, str) else v

    @field_validator("scan", mode="before")
    @classmethod
    def _scan_as_text(cls, v: Any) -> Any:
        """Integers are accepted for convenience and mean scan N.1, so 3 and "3.1" are the same job."""
        if isinstance(v, int) and not isinstance(v, bool):
            if not 0 <= v <= 10**9:
                raise ValueError("scan number must be between 0 and 1e9")
            return f"{v}.1"
        if isinstance(v, str):
            v = v.strip()
            if not v:
                return None
            if v.isdigit():
                return f"{v}.1"
        return v

    @field_validator("tiled_path")
    @classmethod
    def _no_dot_segments(cls, v: str | None) -> str | None:
        if v is not None and any(part in (".", "..") for part in v.split("/")):
            raise ValueError(f"tiled_path {v!r} must not contain '.' or '..' segments")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> "ScanRef":
        if (self.tiled_path is None) == (self.run_uid is None):
            raise ValueError("give exactly one of tiled_path or run_uid")
        if self.run_uid is not None and (self.scan is not None or self.detector is not None):
            raise ValueError("scan and detector go with tiled_path, not with run_uid")
        if self.tiled_path is not None and self.scan is None:
            raise ValueError("a scan reference with tiled_path needs a 'scan' (e.g. '1.1')")
        return self

    def require_prefix(self, allowed: Iterable[str]) -> "ScanRef":
        """self, if tiled_path starts with one of `allowed` (empty: any); else ScanRefError naming the prefixes."""
        allowed = [p.strip("/") for p in allowed]
        if self.tiled_path is not None and allowed and self.tiled_path.split("/")[0] not in allowed:
            raise ScanRefError(f"tiled_path {self.tiled_path!r} is outside the allowed prefix "
                               f"({', '.join(p + '/' for p in allowed)})")
        return self

    @classmethod
    def parse(cls, ref: "dict | ScanRef", allowed_prefixes: Iterable[str] | None = None) -> "ScanRef":
        """Validate a reference (a mapping or a ScanRef) and its prefix; ScanRefError with one line otherwise.

        ``allowed_prefixes`` defaults to the current settings' ``allowed_scan_prefixes``.
        """
        if allowed_prefixes is None:
            from contract.settings import current_settings

            allowed_prefixes = current_settings().allowed_scan_prefixes
        if not isinstance(ref, ScanRef):
            if not isinstance(ref, dict):
                raise ScanRefError(f"scan reference must be a mapping with tiled_path and scan, "
                                   f"got {type(ref).__name__}")
            try:
                ref = cls.model_validate(ref)
            except ValidationError as exc:
                raise ScanRefError(f"bad scan reference: {one_line(exc)}") from None
        return ref.require_prefix(allowed_prefixes)

    def as_dict(self) -> dict[str, str]:
        """The fields that are set (the form stored in job records and result metadata)."""
        return self.model_dump(exclude_none=True)


def one_line(exc: ValidationError) -> str:
    """A pydantic ValidationError as one line: 'field: message; ...'."""
    parts = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = ".".join(str(x) for x in err.get("loc", ()))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)

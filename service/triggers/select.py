"""Which Bluesky runs are BCDI scans, and what scan reference the gateway gets for one."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_UID = re.compile(r"^[A-Za-z0-9\-]{8,64}$")
REF_KEYS = ("tiled_path", "scan", "detector")


@dataclass(frozen=True)
class BcdiSelector:
    """A run is BCDI when its start document's plan_name is in `plan_names`, or it carries metadata `md_key`.

    `md_key` (default "bcdi") may hold a dict naming where the scan's ID01 file is served in Tiled
    ({"tiled_path": "raw/<sample>/<sample>_<dataset>", "scan": 1, "detector": "mpx1x4"}); the gateway then gets
    that reference. Otherwise the gateway gets the run uid (the run as TiledWriter stored it).
    """

    plan_names: tuple[str, ...] = ("bcdi_rocking_scan",)
    md_key: str | None = "bcdi"
    options: dict[str, Any] = field(default_factory=dict)  # reconstruction options posted with every job
    priority: str = "normal"

    def __post_init__(self):
        if not self.plan_names and not self.md_key:
            raise ValueError("BcdiSelector needs plan names or a metadata key, or no run would ever match")
        if self.priority not in ("high", "normal"):
            raise ValueError(f"priority must be 'high' or 'normal', got {self.priority!r}")

    def is_bcdi(self, start: dict) -> bool:
        """True when the start document marks a BCDI scan."""
        if not isinstance(start, dict):
            return False
        if start.get("plan_name") in self.plan_names:
            return True
        return bool(self.md_key) and bool(start.get(self.md_key))

    def scan_reference(self, start: dict) -> dict:
        """The `scan` field of the gateway request for this run (Tiled path of the ID01 file, else run uid)."""
        md = start.get(self.md_key) if self.md_key else None
        if isinstance(md, dict) and md.get("tiled_path"):
            return {k: md[k] for k in REF_KEYS if md.get(k) is not None}
        uid = start.get("uid")
        if not isinstance(uid, str) or not _UID.match(uid):
            raise ValueError(f"start document has no usable uid: {uid!r}")
        return {"run_uid": uid}

    def request(self, start: dict) -> dict:
        """Body of POST /api/v1/reconstructions for this run."""
        body: dict[str, Any] = {"scan": self.scan_reference(start), "priority": self.priority}
        if self.options:
            body["options"] = dict(self.options)
        return body


def successful_stop(stop: Any) -> bool:
    """True for a stop document (or TiledWriter's `stop` metadata) with exit_status 'success'."""
    return isinstance(stop, dict) and stop.get("exit_status") == "success"

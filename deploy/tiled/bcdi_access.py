"""Tiled access policy of bcdi-recon: raw data read-only for everyone, workers write only under reconstructions/.

Loaded by the Tiled server from production.yml (``access_control: access_policy: "bcdi_access:PathAccessPolicy"``;
Tiled puts the config file's folder on sys.path while it reads the config). The rule, per node of the catalog:

- every authenticated principal keeps the read scopes its API key has, everywhere (viewers browse everything);
- write scopes (create, write data/metadata, delete) exist only on ``reconstructions`` and below, and only for
  service principals (the workers' principal; a staff member's own key stays read-only even with "inherit");
- Tiled admins keep every scope (the registrar key registers raw data; operators fix the tree).

So a worker key cannot write, create or delete anything under raw/ or at the top level, and a viewer key (scopes
read:metadata + read:data) cannot write anywhere. The top-level ``reconstructions`` container is created once by
an admin key at deployment (`ensure_results_root`), so workers never need a scope on the root.
"""

from __future__ import annotations

from tiled.access_control.protocols import AccessPolicy, normalize_access_tags

RESULT_ROOT = "reconstructions"
READ_SCOPES = frozenset({"read:metadata", "read:data"})
WRITE_SCOPES = frozenset({"create:node", "write:metadata", "write:data", "delete:node", "delete:revision"})
ADMIN_MARK = "admin:apikeys"  # only Tiled admins hold it (as TagBasedAccessPolicy decides admin-ness)


class PathAccessPolicy(AccessPolicy):
    """Scopes by tree position: reads everywhere, writes only for service principals under ``result_root``."""

    def __init__(self, result_root: str = RESULT_ROOT, writers: list[str] | None = None):
        self.result_root = str(result_root).strip("/")
        # optional allow-list of service principal uuids that may write (default: any service principal)
        self.writers = {str(w) for w in writers} if writers else None

    async def init_node(self, principal, authn_access_tags, authn_scopes, access_tags=None):
        return False, access_tags or normalize_access_tags()

    async def _segments(self, node) -> list[str]:
        if hasattr(node, "path_segments"):
            return list(await node.path_segments())
        return list(getattr(node, "segments", None) or [])

    def _may_write(self, principal) -> bool:
        if principal is None or getattr(principal, "type", None) is None:
            return False
        if str(getattr(principal.type, "value", principal.type)) != "service":
            return False
        return self.writers is None or str(principal.uuid) in self.writers

    async def allowed_scopes(self, node, principal, authn_access_tags, authn_scopes):
        scopes = set(authn_scopes or ())
        if ADMIN_MARK in scopes:
            return scopes
        allowed = scopes & READ_SCOPES
        segments = await self._segments(node)
        if segments and segments[0] == self.result_root and self._may_write(principal):
            allowed |= scopes & WRITE_SCOPES
        return allowed

    async def filters(self, node, principal, authn_access_tags, authn_scopes, scopes):
        return []  # no hiding: whoever may read metadata here sees every child



"""The production Tiled config's access policy (deploy/tiled/bcdi_access.py) against a real multi-user server.

Workers (a service principal) may write only under reconstructions/; viewer keys may only read; the raw data,
registered in place with the admin (registrar) key, is read-only for the workers and viewers. Each refused write
is shown refused by the server and to have left nothing behind.
"""

from __future__ import annotations

import numpy as np
from pathlib import Path

import pytest

from fixtures_tiled import write_raw_tree

@pytest.fixture(scope="module")
def policy_server(tmp_path_factory):
    from tiled.client import from_uri

    from devtools.tiled_server import TiledServer, provision_keys
    from workers.io.tiled_store import ensure_results_root

    base = tmp_path_factory.mktemp("tiled_policy")
    write_raw_tree(base / "raw")
    env = {"BCDI_TILED_CATALOG_URI": f"sqlite:///{base}/catalog.db",
           "BCDI_TILED_AUTHN_DB_URI": f"sqlite:///{base}/authn.db",
           "BCDI_TILED_SECRET_KEY": "s" * 32, "BCDI_TILED_ADMIN_PASSWORD": "pw"}
    server = TiledServer(base / "data", base / "raw", config=Path(__file__).resolve().parents[1] / "deploy" / "tiled" / "production.yml", extra_env=env, multi_user=True)
    server.start()
    try:
        keys = provision_keys(server.uri, "pw")
        server.api_key = keys["admin_key"]  # the registrar registers the raw data (admin key)
        server.register()
        ensure_results_root(from_uri(server.uri, api_key=keys["admin_key"]))
        yield server, keys
    finally:
        server.stop()


def _clients(server, keys):
    from tiled.client import from_uri

    return (from_uri(server.uri, api_key=keys["worker_key"]), from_uri(server.uri, api_key=keys["viewer_key"]),
            from_uri(server.uri, api_key=keys["admin_key"]))


def _refused(action):
    """Run a write that the server must refuse (401/403/404 from the access policy or the key's scopes)."""
    from tiled.client.utils import ClientError

    with pytest.raises(ClientError) as info:
        action()
    assert info.value.response.status_code in (401, 403, 404), info.value.response.text
    return info.value.response.status_code


def test_workers_write_results_and_read_raw(policy_server):
    worker, viewer, _ = _clients(*policy_server)
    raw = worker["raw/PtNP/PtNP_0001"]  # reading raw data works for the worker ...
    assert len(list(raw)) > 0
    node = worker["reconstructions"].create_container("PtNP_policy", metadata={"who": "worker"})
    node.write_array(np.arange(8, dtype=np.float32), key="a")
    node.update_metadata({"status": "complete"})
    # ... and for viewers, who see what the worker wrote
    assert viewer["reconstructions/PtNP_policy"].metadata["status"] == "complete"
    np.testing.assert_array_equal(viewer["reconstructions/PtNP_policy/a"].read(), np.arange(8))


def test_every_refused_write_is_refused(policy_server):
    worker, viewer, admin = _clients(*policy_server)
    admin["reconstructions"].create_container("kept", metadata={"v": 1}).write_array(np.ones(4), key="x")
    raw_entry = "raw/PtNP/PtNP_0001"
    raw_meta = dict(admin[raw_entry].metadata)
    cases = {
        # the worker: nothing outside reconstructions/
        "worker creates a top-level container": lambda: worker.create_container("elsewhere"),
        "worker creates a node under raw/": lambda: worker["raw/PtNP"].create_container("injected"),
        "worker writes an array under raw/": lambda: worker["raw/PtNP"].write_array(np.zeros(3), key="arr"),
        "worker edits raw metadata": lambda: worker[raw_entry].update_metadata({"tampered": True}),
        "worker deletes raw data": lambda: worker["raw/PtNP"].delete_contents("PtNP_0001", recursive=True),
        # the viewers: nothing anywhere
        "viewer creates a result": lambda: viewer["reconstructions"].create_container("viewer-job"),
        "viewer edits a result": lambda: viewer["reconstructions/kept"].update_metadata({"v": 2}),
        "viewer deletes a result": lambda: viewer["reconstructions"].delete_contents("kept", recursive=True),
        "viewer edits raw metadata": lambda: viewer[raw_entry].update_metadata({"tampered": True}),
        "viewer creates a top-level container": lambda: viewer.create_container("viewer-top"),
    }
    codes = {name: _refused(action) for name, action in cases.items()}
    # the worker's key has every scope ("inherit"): its refusals come from the access policy (403), not the key
    assert all(code == 403 for name, code in codes.items() if name.startswith("worker")), codes
    # nothing of it happened
    top = set(admin)
    assert "elsewhere" not in top and "viewer-top" not in top
    assert "injected" not in admin["raw/PtNP"] and "arr" not in admin["raw/PtNP"]
    assert "PtNP_0001" in admin["raw/PtNP"]
    assert dict(admin[raw_entry].metadata) == raw_meta
    assert "viewer-job" not in admin["reconstructions"]
    assert admin["reconstructions/kept"].metadata["v"] == 1 and "x" in admin["reconstructions/kept"]


def test_a_read_key_opened_once_in_the_ui_keeps_the_browser_logged_in(policy_server):
    """What the demo tells a user (open /ui/?api_key=KEY once; the job's browser_url carries no key): Tiled moves
    the key into its cookie on the UI page, and the API calls the UI then makes from that browser succeed with
    the cookie alone, while a browser without it is refused."""
    import httpx

    server, keys = policy_server
    base = server.uri.rstrip("/").removesuffix("/api/v1")
    with httpx.Client(base_url=base, follow_redirects=True, timeout=10) as browser:
        assert browser.get("/api/v1/metadata/raw").status_code == 401  # not logged in yet
        assert browser.get("/ui/", params={"api_key": keys["viewer_key"]}).status_code == 200
        assert browser.cookies.get("tiled_api_key") == keys["viewer_key"]
        assert browser.get("/api/v1/metadata/raw").status_code == 200
        assert browser.get("/api/v1/search/raw/PtNP").status_code == 200  # what the UI lists a container with
    with httpx.Client(base_url=base, timeout=10) as other:
        assert other.get("/api/v1/metadata/raw").status_code == 401

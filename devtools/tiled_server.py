"""Start and stop a real Tiled server as a subprocess (tests, demo, a single beamline PC).

The server runs ``tiled serve config <embedded.yml>`` on a loopback port with its catalog and result files in a
data folder and the raw-data folder as readable storage; the config reads its paths and the API key from
environment variables, so the same file serves production-like runs and throw-away test runs. The config ships as
package data (devtools/tiled/embedded.yml, found through importlib.resources), so this works once installed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path

import httpx

from physics.errors import InputError

__all__ = ["TiledServer", "free_port", "tiled_executable", "provision_keys", "embedded_config"]

_RESOURCES = ExitStack()  # keeps a package-data file extracted (zip installs) for the life of the process


def embedded_config() -> Path:
    """Path of the embedded Tiled configuration shipped in this package (devtools/tiled/embedded.yml)."""
    return _RESOURCES.enter_context(as_file(files("devtools").joinpath("tiled", "embedded.yml")))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tiled_executable() -> str:
    """The ``tiled`` command of this Python environment (next to sys.executable), else the one on PATH."""
    local = Path(sys.executable).with_name("tiled")
    if local.is_file():
        return str(local)
    found = shutil.which("tiled")
    if not found:
        raise InputError("the `tiled` command is not installed (pip install 'bcdi-recon[tiled]')")
    return found


def stop_process_group(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), SIGKILL if it outlives ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class TiledServer:
    """A Tiled server subprocess on loopback: ``with TiledServer(data_dir, raw_dir) as server: server.client()``."""

    def __init__(self, data_dir: str | os.PathLike, raw_dir: str | os.PathLike, *, api_key: str | None = None,
                 config: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int | None = None,
                 extra_env: dict[str, str] | None = None, multi_user: bool = False):
        self.data_dir = Path(data_dir).resolve()
        self.raw_dir = Path(raw_dir).resolve()
        self.api_key = api_key or secrets.token_hex(16)
        self.config = Path(config) if config is not None else embedded_config()  # production.yml: multi_user
        self.host = host
        self.port = port
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "tiled-server.log"
        self.extra_env = dict(extra_env or {})
        self.multi_user = multi_user  # production.yml: per-user keys, no single-user key in the environment
        self._watchers: list[subprocess.Popen] = []

    @property
    def uri(self) -> str:
        """Base URI of the running server."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for the server and `tiled register`: paths and key used by the config file."""
        env = {k: v for k, v in os.environ.items() if k != "TILED_SINGLE_USER_API_KEY"}
        env.update(BCDI_TILED_DATA=str(self.data_dir), BCDI_TILED_RAW=str(self.raw_dir))
        if not self.multi_user:
            env["TILED_SINGLE_USER_API_KEY"] = self.api_key
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> "TiledServer":
        """Launch the server and wait until /healthz answers; raise RuntimeError with the log tail if it dies."""
        if not self.config.is_file():
            raise InputError(f"Tiled config not found: {self.config}")
        (self.data_dir / "results").mkdir(parents=True, exist_ok=True)
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port(self.host)
        cmd = [tiled_executable(), "serve", "config", str(self.config), "--host", self.host, "--port", str(self.port)]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(cmd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.data_dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Tiled server exited with code {self.process.returncode}: {self._log_tail()}")
            try:
                if httpx.get(f"{self.uri}/healthz", timeout=2.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"Tiled server did not become healthy within {timeout:.0f} s: {self._log_tail()}")

    def _log_tail(self, n: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        """Stop `register --watch` processes and the server (SIGTERM to each process group, SIGKILL after ``timeout``)."""
        for watcher in self._watchers:
            stop_process_group(watcher, timeout)
        self._watchers.clear()
        proc, self.process = self.process, None
        if proc is not None:
            stop_process_group(proc, timeout)

    def register(self, path: str | os.PathLike | None = None, prefix: str = "/raw", timeout: float = 300.0,
                 watch: bool = False) -> subprocess.Popen | None:
        """Register raw files in place with ``tiled register`` (walks a folder; HDF5 groups become containers).

        With ``watch`` the command keeps running (``--watch``) and registers new or changed files as they appear; the
        process is returned and stopped together with the server.
        """
        path = Path(path) if path is not None else self.raw_dir
        cmd = [tiled_executable(), "register", self.uri, str(path), "--prefix", prefix, "--api-key", self.api_key]
        if watch:
            log = open(self.data_dir / "tiled-register-watch.log", "ab")
            proc = subprocess.Popen(cmd + ["--watch"], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            log.close()
            self._watchers.append(proc)
            return proc
        result = subprocess.run(cmd, env=self.env(), capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"tiled register failed ({result.returncode}): {result.stderr[-1500:]}")
        return None

    def client(self):
        """A Tiled client connected with the server's API key."""
        from tiled.client import from_uri

        return from_uri(self.uri, api_key=self.api_key)

    def __enter__(self) -> "TiledServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def provision_keys(uri: str, admin_password: str, *, provider: str = "local", username: str = "admin",
                   timeout: float = 30.0) -> dict[str, str]:
    """On a multi-user server (production.yml): API keys for the registrar (admin), the workers and the viewers.

    The workers get a service principal (role 'user') whose key inherits read/create/write scopes; the viewers get
    a service principal whose key only has read:metadata and read:data, so any write with it is refused (401).
    """
    base = uri.rstrip("/") + "/api/v1"
    with httpx.Client(timeout=timeout) as http:
        r = http.post(f"{base}/auth/provider/{provider}/token", data={"username": username, "password": admin_password})
        if r.status_code != 200:
            raise RuntimeError(f"admin log-in to {uri} failed: HTTP {r.status_code} {r.text[:200]}")
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}

        def post(path: str, **kw) -> dict:
            resp = http.post(f"{base}{path}", headers=auth, **kw)
            if resp.status_code != 200:
                raise RuntimeError(f"POST {path} failed: HTTP {resp.status_code} {resp.text[:200]}")
            return resp.json()

        admin_key = post("/auth/apikey", json={"scopes": ["inherit"], "expires_in": None,
                                               "note": "bcdi-recon registrar"})["secret"]
        worker = post("/auth/principal", params={"role": "user"})["uuid"]
        worker_key = post(f"/auth/principal/{worker}/apikey",
                          json={"scopes": ["inherit"], "expires_in": None, "note": "bcdi-recon workers"})["secret"]
        viewer = post("/auth/principal", params={"role": "user"})["uuid"]
        viewer_key = post(f"/auth/principal/{viewer}/apikey",
                          json={"scopes": ["read:metadata", "read:data"], "expires_in": None,
                                "note": "viewers, read-only"})["secret"]
    return {"admin_key": admin_key, "worker_key": worker_key, "viewer_key": viewer_key,
            "worker_principal": worker, "viewer_principal": viewer}

"""The deployment files: docker-compose.yml's structure (services, health checks, volumes, GPU reservation,
secrets only from the environment), the Dockerfiles' bases and copied paths, and, when a compose client is
installed (Docker's `docker compose` plugin or Debian's docker-compose), its own `config` validation.
There is no Docker engine on the development/CI machines, so no image is built and no container runs here."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
SERVICES = {"redis", "db", "tiled", "gateway", "worker", "trigger"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env_refs(text: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+)", text))


def test_services_have_health_checks_and_restart_policies(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        hc = svc.get("healthcheck")
        assert hc and hc["test"][0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
        assert svc.get("restart") == "unless-stopped", name
    # start order follows health, not just start
    assert services["tiled"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert services["gateway"]["depends_on"]["tiled"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_reserve_one_gpu_each_and_can_scale(compose):
    worker = compose["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1 and "gpu" in device["capabilities"]
    # `--scale worker=N` needs replicas without a fixed name or host port
    assert "container_name" not in worker and "ports" not in worker
    assert worker["build"]["dockerfile"] == "deploy/docker/Dockerfile.worker"
    assert worker["environment"]["BCDI_DEVICE"] == "auto"


def test_volumes_raw_read_only_results_and_persistence(compose):
    services, volumes = compose["services"], compose["volumes"]
    assert {"redis-data", "pg-data", "results"} <= set(volumes)
    tiled_mounts = services["tiled"]["volumes"]
    raw = [m for m in tiled_mounts if m.endswith(":/data/raw:ro")]
    assert len(raw) == 1 and "BCDI_RAW_DATA_DIR" in raw[0]
    assert "results:/data/tiled" in tiled_mounts
    assert "redis-data:/data" in services["redis"]["volumes"]
    conf = (REPO / "deploy/redis/redis.conf").read_text()
    assert re.search(r"^appendonly yes$", conf, re.M) and re.search(r"^maxmemory-policy noeviction$", conf, re.M)
    assert "pg-data:/var/lib/postgresql/data" in services["db"]["volumes"]


def test_tiled_has_auth_postgres_and_streaming_cache(compose):
    env = compose["services"]["tiled"]["environment"]
    catalog = env["BCDI_TILED_CATALOG_URI"]
    assert catalog.startswith("postgresql+asyncpg://") and "@db:5432/" in catalog
    assert env["TILED_STREAMING_CACHE_URI"].startswith("redis://")
    prod = yaml.safe_load((REPO / "deploy/tiled/production.yml").read_text())
    assert prod["authentication"]["allow_anonymous_access"] is False
    assert "BCDI_TILED_CATALOG_URI" in prod["trees"][0]["args"]["uri"]
    dockerfile = (REPO / "deploy/docker/Dockerfile.tiled").read_text()
    assert "deploy/tiled/production.yml" in dockerfile


def test_secrets_only_from_environment(compose):
    text = COMPOSE.read_text()
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|API_KEY", key):
                assert "${" in str(value), f"{name}.{key} holds a literal secret"
    # every variable the file uses is documented in .env.example
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    assert _env_refs(text) <= documented, _env_refs(text) - documented
    # mandatory secrets fail loudly when missing
    for var in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "TILED_SECRET_KEY", "BCDI_SUBMIT_API_KEYS"):
        assert re.search(r"\$\{" + var + r":\?", text), var


def test_dockerfiles_bases_and_copied_paths_exist():
    worker = (REPO / "deploy/docker/Dockerfile.worker").read_text()
    gateway = (REPO / "deploy/docker/Dockerfile.gateway").read_text()
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:[\w.\-]+cudnn-runtime", worker, re.M)
    assert re.search(r"^FROM \$\{CUDA_IMAGE\}", worker, re.M)
    assert re.search(r"^FROM python:3\.\d+-slim", gateway, re.M)
    assert not re.search(r"^RUN .*\btorch\b", gateway, re.M)  # no torch installed in the gateway image
    for name in ("Dockerfile.worker", "Dockerfile.gateway", "Dockerfile.tiled"):
        text = (REPO / "deploy/docker" / name).read_text()
        for src in re.findall(r"^COPY (\S+)", text, re.M):
            assert (REPO / src).exists(), f"{name}: COPY {src} does not exist in the repository"
        assert (REPO / "deploy/docker" / f"{name}.dockerignore").is_file()
    for svc in ("worker", "gateway", "tiled"):
        assert re.search(r"^USER \w+", (REPO / f"deploy/docker/Dockerfile.{svc}").read_text(), re.M), svc


def _compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) if it answers, else Debian's `docker-compose` (v1), else None."""
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if r.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.fixture
def compose_cmd():
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no compose client installed (apt-get install docker-compose); structure tested above")
    return cmd


def test_compose_config_validates_with_the_example_env(compose_cmd, tmp_path):
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    r = subprocess.run([*compose_cmd, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    resolved = yaml.safe_load(r.stdout)
    env = resolved["services"]["worker"]["environment"]
    assert env["BCDI_REDIS_URL"] == "redis://:change-me-hex@redis:6379/0"
    assert resolved["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    # profiles: the Tiled watcher runs only when asked for
    assert resolved["services"]["trigger"]["profiles"] == ["tiled-watcher"]


def test_compose_config_names_a_missing_secret(compose_cmd, tmp_path):
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    lines = [ln for ln in ENV_EXAMPLE.read_text().splitlines() if not ln.startswith("REDIS_PASSWORD=")]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    r = subprocess.run([*compose_cmd, "config"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "set REDIS_PASSWORD in .env" in r.stderr + r.stdout

"""`bcdi-recon serve`: run the FastAPI gateway (REST API for reconstructions) with uvicorn."""
from __future__ import annotations

import argparse

HELP = "run the REST gateway: submit reconstructions, follow them, cancel them (OpenAPI at /docs)"

DESCRIPTION = """\
Serves /api/v1/reconstructions (POST, GET list, GET one, GET events as server-sent events, DELETE = cancel),
/health (Redis and Tiled) and /metrics (Prometheus). Interactive docs at /docs, schema at /openapi.json.
Clients send X-API-Key: a submit key (BCDI_SUBMIT_API_KEYS) to submit/cancel, a read key (BCDI_READ_API_KEYS)
to read. Settings come from BCDI_* environment variables or --config FILE (.toml/.json/.yaml/.env)."""


EPILOG = """\
examples:
  BCDI_SUBMIT_API_KEYS=s3cret BCDI_READ_API_KEYS=r3ad bcdi-recon serve --port 8000
  bcdi-recon serve --config /etc/bcdi-recon/gateway.toml --host 0.0.0.0
  curl -H 'X-API-Key: r3ad' http://127.0.0.1:8000/health"""


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="settings file (environment variables win over it; "
                                                     "default: none, environment only)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                   help="uvicorn's log level (the access log is the gateway's own JSON lines; default %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    import uvicorn

    from service.app import create_app
    from contract.settings import load_settings

    from physics.errors import SettingsError

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    try:  # settings and keys are the operator's input: their errors (pydantic's are ValueErrors) are one line
        settings = load_settings(args.config, **overrides)
        app = create_app(settings)
    except (ValueError, FileNotFoundError) as e:
        raise SettingsError(" ".join(str(e).split())) from None
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, access_log=False)
    return 0

"""`bcdi-recon worker`: run a queue worker (one per device) that takes reconstruction jobs from Redis."""
from __future__ import annotations

import argparse

HELP = "run a reconstruction worker: takes jobs from the Redis queue, one at a time, and publishes to Tiled"

DESCRIPTION = """\
Takes reconstruction jobs from the Redis streams (high priority first), runs them with the job runner
(default workers.pipeline:run_job, loaded once so the CNN stays in memory) and publishes results to Tiled.
Run one worker per device. SIGTERM/Ctrl-C: stop taking jobs, give the running job --grace seconds,
then stop it and put it back in the queue. Logs are JSON lines with the job id.

Settings come from BCDI_* environment variables or --config FILE (.toml/.json/.yaml/.env), e.g.
BCDI_REDIS_URL, BCDI_TILED_URL, BCDI_TILED_API_KEY, BCDI_ALLOWED_SCAN_PREFIXES, BCDI_HEARTBEAT_S,
BCDI_CLAIM_IDLE_S, BCDI_MAX_DELIVERIES.

examples:
  bcdi-recon worker --redis-url redis://head:6379/0 --device cuda:0
  bcdi-recon worker --config worker.toml --max-jobs 1"""


EPILOG = """\
examples:
  BCDI_REDIS_URL=redis://queue:6379/0 BCDI_TILED_URL=http://tiled:8000 BCDI_TILED_API_KEY=... bcdi-recon worker
  bcdi-recon worker --config /etc/bcdi-recon/worker.toml --device cuda:1 --grace 120
  bcdi-recon worker --max-jobs 1 --log-level DEBUG          # take one job, then exit"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="settings file (environment variables win over it; "
                                                     "default: none, environment only)")
    p.add_argument("--redis-url", help="Redis URL (default from settings: redis://127.0.0.1:6379/0)")
    p.add_argument("--runner", metavar="MODULE:FUNC", help="job runner (default workers.pipeline:run_job)")
    p.add_argument("--device", help="'auto' (CUDA when present, else CPU), 'cpu', 'cuda:0', ... "
                                    "(default from settings: auto)")
    p.add_argument("--name", help="consumer name in the Redis group (default host-pid)")
    p.add_argument("--grace", type=float, metavar="S", help="seconds the current job may still run after SIGTERM "
                                                             "(default from settings: 0, stop at once and requeue)")
    p.add_argument("--max-jobs", type=int, metavar="N", help="exit after handling N jobs (default: no limit)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="log level of the JSON-lines log (default %(default)s)")
    p.set_defaults(func=run)


def register(subparsers) -> None:
    p = subparsers.add_parser("worker", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)


def run(args) -> int:
    import logging

    from contract.settings import load_settings
    from workers.worker import Worker, configure_json_logging

    overrides = {k: v for k, v in {"redis_url": args.redis_url, "runner": args.runner, "device": args.device,
                                   "shutdown_grace_s": args.grace}.items() if v is not None}
    settings = load_settings(args.config, **overrides)
    _check_redis(settings.redis_url)
    configure_json_logging(getattr(logging, args.log_level))
    worker = Worker(settings, name=args.name)
    worker.install_signal_handlers()
    worker.run(max_jobs=args.max_jobs)
    return 0


def _check_redis(url: str) -> None:
    """One ping before the worker starts: an unreachable Redis is a one-line error, not a ConnectionError trace."""
    import redis

    from physics.errors import InputError

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3.0, socket_timeout=3.0)
        client.ping()
        client.close()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ValueError) as e:
        raise InputError(f"Redis at {url} is unreachable ({' '.join(str(e).split())}); start Redis or give its "
                         f"address with --redis-url / BCDI_REDIS_URL") from None

"""`bcdi-recon watch`: the Tiled watcher trigger, submitting every BCDI run that TiledWriter closes with success."""
from __future__ import annotations

import argparse

HELP = "watch Tiled for finished Bluesky BCDI runs and submit each to the gateway (no RunEngine change)"

DESCRIPTION = """\
Follows a Tiled container (Bluesky's TiledWriter creates one node per run and adds the stop document to its
metadata when the run ends) over Tiled's websocket subscription, or by polling the newest runs where the server
has no streaming cache, and posts every run that is a BCDI scan and stopped with success to the gateway. Runs
that closed while the watcher was down are caught up at start (the newest 100); the gateway deduplicates.
Runs until SIGINT/SIGTERM.

Settings come from BCDI_* environment variables or --config FILE (.toml/.json/.yaml/.env); the options below
override them: BCDI_TILED_URL, BCDI_TILED_API_KEY (read access is enough), BCDI_GATEWAY_URL,
BCDI_TRIGGER_API_KEY (a gateway submit key, required), BCDI_TRIGGER_TILED_PATH, BCDI_TRIGGER_PLAN_NAMES,
BCDI_TRIGGER_MD_KEY, BCDI_TRIGGER_MODE, BCDI_TRIGGER_POLL_S."""

EPILOG = """\
examples:
  BCDI_TRIGGER_API_KEY=<submit key> bcdi-recon watch --tiled-url http://tiled:8000 --gateway-url http://gateway:8000
  bcdi-recon watch --config trigger.toml --path raw --mode poll --poll-s 10"""


def register(subparsers) -> None:
    p = subparsers.add_parser("watch", help=HELP, description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="settings file (environment variables win over it; default: none)")
    p.add_argument("--tiled-url", help="Tiled server to watch (default from settings: http://127.0.0.1:8010)")
    p.add_argument("--path", help="container whose runs are watched (default '' = the root, where TiledWriter "
                                  "writes by default)")
    p.add_argument("--gateway-url", help="gateway to post to (default from settings: http://127.0.0.1:8000)")
    p.add_argument("--plan-name", action="append", metavar="NAME",
                   help="plan name of BCDI scans (repeatable; default bcdi_rocking_scan)")
    p.add_argument("--md-key", help="start-document key that also marks a BCDI run ('' = plan names only; "
                                    "default bcdi)")
    p.add_argument("--mode", choices=("auto", "subscribe", "poll"), help="auto (default): websocket, else polling")
    p.add_argument("--poll-s", type=float, metavar="S", help="polling period (default 5)")
    p.set_defaults(func=run)


def run(args) -> int:
    import logging
    import signal
    import threading

    from contract.settings import load_settings
    from physics.errors import InputError
    from service.triggers import BcdiSelector, GatewaySubmitter, TiledWatcher

    overrides = {k: v for k, v in {"tiled_url": args.tiled_url, "trigger_tiled_path": args.path,
                                   "gateway_url": args.gateway_url, "trigger_plan_names": args.plan_name,
                                   "trigger_md_key": args.md_key, "trigger_mode": args.mode,
                                   "trigger_poll_s": args.poll_s}.items() if v is not None}
    settings = load_settings(args.config, **overrides)
    if not settings.trigger_api_key:
        raise InputError("no gateway submit key: set BCDI_TRIGGER_API_KEY (or trigger_api_key in the config file)")
    if not settings.trigger_plan_names and not settings.trigger_md_key:
        raise InputError("no way to recognise a BCDI run: give --plan-name or --md-key")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from tiled.client import from_uri

    client = from_uri(settings.tiled_url, api_key=settings.tiled_api_key)
    try:
        node = client[settings.trigger_tiled_path] if settings.trigger_tiled_path else client
    except KeyError:
        raise InputError(f"no such Tiled container to watch: {settings.trigger_tiled_path}") from None
    selector = BcdiSelector(plan_names=tuple(settings.trigger_plan_names), md_key=settings.trigger_md_key or None)
    submitter = GatewaySubmitter(settings.gateway_url, settings.trigger_api_key)
    watcher = TiledWatcher(node, submitter, selector, mode=settings.trigger_mode,
                           poll_s=settings.trigger_poll_s).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    watcher.stop()
    submitter.close()
    return 0

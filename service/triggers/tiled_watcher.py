"""Watch the raw catalog in Tiled and submit every BCDI run that TiledWriter closes with a successful stop.

No change to the RunEngine: TiledWriter already creates a container per run (metadata {start}) and adds
{stop} to its metadata when the run ends. The watcher follows those changes over Tiled's websocket
subscription (Tiled needs a streaming cache for that, e.g. TILED_STREAMING_CACHE_URI=redis://...). Where the
server has none (the websocket is refused), it falls back to polling the newest runs every few seconds.
Tiled's client holds subscription callbacks by weak reference only, so the watcher registers its own bound
methods and keeps itself (and them) referenced for as long as it runs.

Run it as `bcdi-recon watch` (cli/cmd_watch.py), configured by the settings (BCDI_TILED_URL, BCDI_GATEWAY_URL,
BCDI_TRIGGER_API_KEY, BCDI_TRIGGER_TILED_PATH, ...).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from service.triggers.select import BcdiSelector, successful_stop
from service.triggers.submit import GatewaySubmitter

log = logging.getLogger("bcdi.trigger")

_LIVE: set["TiledWatcher"] = set()  # running watchers stay referenced (their callbacks are weakly held by tiled)


class TiledWatcher:
    """Submit successful BCDI runs that appear (or close) under a Tiled container; dedup by run uid.

    mode: "subscribe" (websocket; fail if refused), "poll" (list the newest runs every poll_s) or "auto"
    (subscribe, else poll). catch_up: at start, also look at the newest `catch_up_limit` runs, so runs that
    closed while the watcher was down are not lost (the gateway returns the existing job for one it knows).
    """

    def __init__(self, node, submitter: GatewaySubmitter, selector: BcdiSelector | None = None, *,
                 mode: str = "auto", poll_s: float = 5.0, catch_up: bool = True, catch_up_limit: int = 100,
                 connect_timeout: float = 15.0):
        if mode not in ("auto", "subscribe", "poll"):
            raise ValueError(f"mode must be auto, subscribe or poll, got {mode!r}")
        self.node = node
        self.submitter = submitter
        self.selector = selector or BcdiSelector()
        self.mode = mode
        self.poll_s = poll_s
        self.catch_up_on_start = catch_up
        self.catch_up_limit = catch_up_limit
        self.connect_timeout = connect_timeout
        self.active_mode: str | None = None  # "subscribe" or "poll" once started
        self.fallback_reason: str | None = None
        self.updates = 0  # subscription messages received
        self._sub = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # ---- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> "TiledWatcher":
        """Connect (or start polling); returns self. Raises only in mode 'subscribe' when the server refuses."""
        _LIVE.add(self)
        if self.mode in ("auto", "subscribe"):
            error = self._subscribe()
            if error is None:
                self.active_mode = "subscribe"
            elif self.mode == "subscribe":
                self.stop()
                raise RuntimeError(f"Tiled subscription to /{self._path()} failed: {error}")
            else:
                self.fallback_reason = error
                log.warning("Tiled subscription unavailable (%s); polling every %.1f s instead", error, self.poll_s)
        if self.active_mode is None:
            self.active_mode = "poll"
            self._poller = threading.Thread(target=self._poll_loop, name="bcdi-tiled-poll", daemon=True)
            self._poller.start()
        if self.catch_up_on_start:
            self.catch_up()
        log.info("watching Tiled /%s (%s)", self._path(), self.active_mode)
        return self

    def stop(self) -> None:
        """Disconnect and stop polling (the submitter is left to its owner)."""
        self._stop.set()
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                sub.disconnect(wait=True)
            except Exception as e:  # pragma: no cover
                log.warning("Tiled subscription did not close cleanly: %s", e)
        if self._poller is not None:
            self._poller.join(self.poll_s + 5)
        _LIVE.discard(self)

    def __enter__(self) -> "TiledWatcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _path(self) -> str:
        return "/".join(getattr(self.node, "path_parts", []) or [])

    def _subscribe(self) -> str | None:
        """Open the websocket subscription; None when connected, else why not (within connect_timeout)."""
        try:
            sub = self.node.subscribe()
        except Exception as e:
            return f"{type(e).__name__}: {e}"
        # bound methods: tiled keeps them as WeakMethod, alive as long as this watcher is (see _LIVE)
        sub.child_created.add_callback(self._on_child_created)
        sub.child_metadata_updated.add_callback(self._on_child_metadata_updated)
        errors: list[BaseException] = []

        def connect():
            try:
                sub.start_in_thread()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        starter = threading.Thread(target=connect, name="bcdi-tiled-connect", daemon=True)
        starter.start()
        deadline = time.monotonic() + self.connect_timeout
        while starter.is_alive() and time.monotonic() < deadline:
            inner = getattr(sub, "_thread", None)
            if inner is not None and inner.ident is not None and not inner.is_alive():
                break  # the receiving thread died on a refused handshake: start_in_thread would wait forever
            starter.join(0.1)
        if not starter.is_alive() and not errors:
            self._sub = sub
            return None
        try:
            sub.disconnect(wait=False)
        except Exception:
            pass
        connected = getattr(sub, "_connected_event", None)
        if connected is not None:
            connected.set()  # release the blocked starter thread
        if errors:
            return f"{type(errors[0]).__name__}: {errors[0]}"
        return ("websocket refused or not connected within "
                f"{self.connect_timeout:.0f} s (does the server have a streaming cache?)")

    # ---- events ---------------------------------------------------------------------------------------------
    def _on_child_created(self, update) -> None:
        self.updates += 1
        self.consider(update.key, update.metadata)

    def _on_child_metadata_updated(self, update) -> None:
        self.updates += 1
        self.consider(update.key, update.metadata)

    def consider(self, key: str, metadata: Any) -> bool:
        """Submit the run `key` if its metadata holds a BCDI start and a successful stop; True if queued."""
        try:
            md = dict(metadata or {})
            start, stop = md.get("start"), md.get("stop")
            if not (successful_stop(stop) and self.selector.is_bcdi(start)):
                return False
            uid = start.get("uid") or key
            if self.submitter.already_submitted(uid):
                return False
            return self.submitter.submit(uid, self.selector.request(start))
        except Exception as e:  # one odd container must not stop the watcher
            log.warning("trigger miss: run %s: %s: %s", key, type(e).__name__, e)
            return False

    def catch_up(self, limit: int | None = None) -> int:
        """Look at the newest `limit` runs under the node; returns how many were queued for submission."""
        limit = self.catch_up_limit if limit is None else limit
        queued = 0
        try:
            for key, child in self.node.items().tail(limit):
                queued += self.consider(key, child.metadata)
        except Exception as e:
            log.warning("cannot list runs in Tiled /%s: %s: %s", self._path(), type(e).__name__, e)
        return queued

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.catch_up()


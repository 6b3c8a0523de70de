"""Automatic triggers: submit a reconstruction when a BCDI scan ends, without anyone touching anything.

Two ways in, the beamline picks one:
- `BcdiTrigger`: a Bluesky RunEngine callback (``RE.subscribe(BcdiTrigger(submitter))``);
- `TiledWatcher`: watches the raw catalog in Tiled (websocket subscription) for runs that TiledWriter closes
  with a successful stop; no change to the RunEngine.
Both decide which runs are BCDI with a `BcdiSelector`, post through a `GatewaySubmitter` (background thread,
short timeout, misses logged, never raised) and deduplicate by run uid.
"""
from service.triggers.select import BcdiSelector
from service.triggers.submit import GatewaySubmitter, Submission

__all__ = ["BcdiSelector", "GatewaySubmitter", "Submission", "BcdiTrigger", "TiledWatcher"]


def __getattr__(name: str):
    # lazy: the watcher imports the tiled client only when used
    if name == "BcdiTrigger":
        from service.triggers.bluesky_callback import BcdiTrigger
        return BcdiTrigger
    if name == "TiledWatcher":
        from service.triggers.tiled_watcher import TiledWatcher
        return TiledWatcher
    raise AttributeError(name)

"""Prometheus metrics of the gateway: request counts/latency, submissions, and queue state read at scrape time.

Each app gets its own CollectorRegistry, so several apps (tests) never clash on metric names.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily


class QueueCollector:
    """Reads queue depth, in-flight jobs, finished counts, dead letters and live workers from Redis per scrape."""

    def __init__(self, queue, settings):
        self.queue, self.settings = queue, settings

    def collect(self):
        up = GaugeMetricFamily("bcdi_redis_up", "1 if the gateway reached Redis at this scrape")
        try:
            stats = self.queue.stats()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily("bcdi_queue_entries", "stream entries not yet finished (queued + running)",
                                  labels=["priority"])
        pending = GaugeMetricFamily("bcdi_queue_in_flight", "entries delivered to a worker and not yet acked",
                                    labels=["priority"])
        for prio, v in stats["streams"].items():
            depth.add_metric([prio], v["length"])
            pending.add_metric([prio], v["pending"])
        yield depth
        yield pending
        finished = CounterMetricFamily("bcdi_jobs_finished", "jobs that reached an end state", labels=["state"])
        for state in ("succeeded", "failed", "cancelled"):
            finished.add_metric([state], stats["finished"].get(state, 0))
        yield finished
        dead = GaugeMetricFamily("bcdi_dead_letters", "entries in the dead-letter stream")
        dead.add_metric([], stats["dead_letters"])
        yield dead
        now = time.time()
        limit = 3 * self.settings.heartbeat_s + self.settings.block_ms / 1e3
        alive = sum(1 for t in stats["workers"].values() if now - t < limit)
        workers = GaugeMetricFamily("bcdi_workers_alive", "workers seen within three heartbeats")
        workers.add_metric([], alive)
        yield workers


class GatewayMetrics:
    """The metric objects of one gateway app."""

    def __init__(self, queue, settings):
        self.registry = CollectorRegistry()
        self.requests = Counter("bcdi_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("bcdi_http_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                                 registry=self.registry)
        self.submitted = Counter("bcdi_jobs_submitted", "POSTed reconstructions", ["priority", "duplicate"],
                                 registry=self.registry)
        self.registry.register(QueueCollector(queue, settings))

"""The API's own Prometheus metrics: requests, their latency, and the serving process.

One ``CollectorRegistry`` per app (``ApiMetrics``), never the global default one: a process may
build many apps (the tests do), and each counts only its own requests. ``/metrics/prom`` serves
this registry after the published-predictions gauges of ``adapters.prom``.

- ``levibot_api_requests_total{method,route,status}``: finished requests (counter).
- ``levibot_api_request_duration_seconds{method,route}``: time from the request reaching the app
  to the end of its response body (histogram, ``LATENCY_BUCKETS``).
- ``process_*`` (CPU seconds, resident and virtual memory bytes, open fds, start time; Linux
  only) and ``python_info``, ``python_gc_*``: from prometheus_client's collectors.

Labels stay bounded: ``route`` is the route template (``/ml/predict_deep``, never the raw path
with its query), ``UNMATCHED`` for any path no route serves (404s, scanners); ``method`` is one
of ``METHODS`` or ``OTHER``; ``status`` is the numeric HTTP status, ``500`` when the app raised
before answering.
"""

from __future__ import annotations

import time

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "OTHER"
UNMATCHED = "UNMATCHED"
# Seconds. Published answers take milliseconds; an on-demand MC-dropout recompute takes seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
API_METRIC_NAMES: tuple[str, ...] = (
    "levibot_api_requests_total",
    "levibot_api_request_duration_seconds",
)


class ApiMetrics:
    """The request counter, the latency histogram and the process collectors on one fresh
    registry (``registry``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "levibot_api_requests",  # exposed as levibot_api_requests_total
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.duration = Histogram(
            "levibot_api_request_duration_seconds",
            "Seconds from the request reaching the app to the end of its response, by method "
            "and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one finished request and its duration (``seconds`` >= 0)."""
        method = method if method in METHODS else OTHER
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        """Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (set by Starlette's router once it
    matched: ``scope["route"].path``), or ``UNMATCHED``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestMetricsMiddleware:
    """ASGI middleware recording every HTTP request in ``metrics`` (other scope types, e.g.
    lifespan, pass through untouched)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # when the app raises before starting a response
        start = time.perf_counter()

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe(scope["method"], route_template(scope), status, elapsed)


def install_request_metrics(app: FastAPI) -> ApiMetrics:
    """Add ``RequestMetricsMiddleware`` to ``app`` (before it starts)
    and return its ``ApiMetrics``, whose ``render()`` ``/metrics/prom`` appends."""
    metrics = ApiMetrics()
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)
    return metrics

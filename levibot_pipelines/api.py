"""Read-only HTTP API over the published predictions (``adapters.prediction_files``).

Every request reads ``latest_predictions.json`` through ``adapters.file_cache.FileCache``: the
publisher replaces the file atomically, so it is parsed once per publish, not once per request.
It is read from the data root (``settings.market.data_url``: the home, or an S3 bucket prefix
with one conditional GET per request); everything else the API reads is under the home.
The live kill-switch (``home/"kill_switch.json"``) is read the same way. Nothing on this path
imports torch, dagster or duckdb; only ``/ml/predict_deep?n_samples=N`` with N different from
the published sample count imports torch (``usecases.recompute``), to rerun MC dropout on the
exported champion. Response bodies: ``api_responses``; their models: ``api_schema``.

Staleness is measured in data time: ``core.data.timeframes.staleness_minutes(bar_time, now, tf)``,
0 while the row's bar is the newest closed bar. ``stale`` is staleness >
``settings.alerts.max_staleness_minutes``; ``/healthz`` fails beyond ``fail_staleness_minutes``;
beyond ``settings.trading.kill_staleness_minutes`` a row is served HALTED (its entry cut), by the
kill-switch's own staleness rule (``api_responses.served_kill_switch``).

Authentication: with ``settings.serving.api_token`` (LEVIBOT_API_TOKEN) set, every route but
``OPEN_PATHS`` (``/healthz``, ``/livez``) needs ``Authorization: Bearer <token>``, else 401; the
OpenAPI page (``/docs``, ``/openapi.json``) stays readable, it holds no data. Without a token
nothing changes. On-demand recomputes are rate-limited (``usecases.recompute``): 429 with
``Retry-After`` beyond the budget.

Probes: ``/livez`` is liveness (200 while the process serves, HALTED or not, published or not);
``/healthz`` is readiness, the seed's meaning (503 when nothing usable is published, data is too
stale or the kill-switch is HALTED).

Query parameters: every API route (not ``/docs`` or ``/openapi.json``) accepts only the
parameters it declares; any other is 422 naming it and the accepted ones
(``reject_unknown_query``). These 422s have FastAPI's validation body,
``{"detail": [{"type", "loc", "msg", "input"}, ...]}``, like a bad ``n_samples``.

Shadow challengers: ``shadow`` on the prediction routes (``1``/``true``/``yes``/``on``) serves the
symbol's row of ``published/shadow/latest_predictions.json`` (``usecases.shadow``: the challenger
pair's prediction, scored live, never traded: HOLD, size 0) in the same response model; 404
naming the symbol when it has no challenger published; false (or absent) serves the champion.
``/ml/predict_deep?shadow=1`` serves the published draws only: an ``n_samples`` other than the
published count is 422 (the API exports and recomputes the champion alone).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from levibot_pipelines.adapters.exported_model import PublishedFileError
from levibot_pipelines.adapters.file_cache import FileCache
from levibot_pipelines.adapters.home import (
    kill_switch_path,
    live_recalibration_path,
    live_summary_path,
)
from levibot_pipelines.adapters.killswitch_store import KillSwitchError, parse_status
from levibot_pipelines.adapters.live_files import LiveFileError, parse_summary
from levibot_pipelines.adapters.prediction_files import LatestPredictions, latest_key, parse_latest
from levibot_pipelines.adapters.recal_files import RecalFileError, parse_state
from levibot_pipelines.api_metrics import install_request_metrics
from levibot_pipelines.api_responses import (
    Service,
    deep_body,
    deep_status_body,
    ensemble_body,
    health_body,
    lgbm_body,
    metrics_text,
    recomputed_body,
)
from levibot_pipelines.api_schema import DeepPrediction, EnsemblePrediction, Prediction
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.data_home import data_root
from levibot_pipelines.usecases.recompute import RecomputeLimited, TransformerRecomputer

log = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/healthz", "/livez"})  # answered without a token (liveness probes)

SymbolQuery = Annotated[
    str, Query(min_length=1, max_length=32, description="BTCUSDT, BTC/USDT or btcusdt")
]
SamplesQuery = Annotated[
    int | None, Query(ge=1, le=1000, description="MC draws; recomputed when != published")
]
ShadowQuery = Annotated[
    bool,
    Query(
        description="1/true: the symbol's shadow challenger (a retrained model in shadow beside "
        "the champion: scored live, never traded, signal always HOLD; 404 when the symbol has "
        "none published); 0/false (default): the champion"
    ),
]


def normalize_symbol(raw: str) -> str:
    """``"btc/usdt"``, ``"BTC-USDT"``, ``" BTCUSDT "`` -> ``"BTCUSDT"``."""
    return "".join(ch for ch in raw.strip().upper() if ch not in "/-_ ")


def open_service(settings: Settings, clock: Callable[[], int] | None = None) -> Service:
    """The :class:`Service` over ``settings.home`` and the data root; ``clock`` defaults to the
    wall clock."""
    kill_path = kill_switch_path(settings.home)
    root = data_root(settings)
    return Service(
        settings=settings,
        latest_file=FileCache((root, latest_key()), parse_latest, PublishedFileError),
        kill_file=FileCache(kill_path, lambda text: parse_status(text, kill_path), KillSwitchError),
        recompute=TransformerRecomputer(settings),
        now_ms=clock or (lambda: int(time.time() * 1000)),
        live_file=FileCache(
            live_summary_path(settings.home),
            lambda text: parse_summary(text, str(live_summary_path(settings.home))),
            LiveFileError,
        ),
        shadow_file=FileCache((root, latest_key(shadow=True)), parse_latest, PublishedFileError),
        recal_file=FileCache(
            live_recalibration_path(settings.home),
            lambda text: parse_state(text, str(live_recalibration_path(settings.home))),
            RecalFileError,
        ),
    )


def latest(svc: Service) -> LatestPredictions:
    """The published predictions; 503 when the file is missing or unreadable."""
    try:
        doc = svc.latest_file.get()
    except PublishedFileError as exc:
        raise HTTPException(503, f"published predictions are unreadable: {exc}") from None
    if doc is None:
        raise HTTPException(
            503,
            "no predictions published yet: run the pipeline (make demo, or materialize "
            f"latest_predictions) so that {svc.latest_file.path} exists",
        )
    return doc


def row_for(svc: Service, raw: str, shadow: bool = False) -> dict[str, Any]:
    """The published row of symbol ``raw`` (any spelling), or with ``shadow`` its shadow
    challenger's (``shadow_row``); 404 when the symbol is not configured, 503 when it has no
    published row yet."""
    symbol = normalize_symbol(raw)
    if symbol not in svc.settings.market.symbols:
        known = ", ".join(svc.settings.market.symbols)
        raise HTTPException(404, f"unknown symbol {raw!r}; known symbols: {known}")
    if shadow:
        return shadow_row(svc, symbol)
    doc = latest(svc)
    if symbol not in doc.rows:
        raise HTTPException(
            503, f"no published prediction for {symbol} yet (published: {sorted(doc.rows)})"
        )
    return doc.rows[symbol]


def query_names(dependant: Dependant) -> list[str]:
    """The query parameter names a route accepts: its own and its dependencies', in declared
    order, each once."""
    names = [p.alias for p in dependant.query_params]
    for sub in dependant.dependencies:
        names += query_names(sub)
    return list(dict.fromkeys(names))


async def reject_unknown_query(request: Request) -> None:
    """App-wide dependency: 422 when the query string holds a parameter the matched route does
    not declare, one error per unknown name (``extra_forbidden``, as pydantic names it), each
    message naming it and the accepted ones (``"none"`` when the route takes none)."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    accepted = query_names(dependant)
    unknown = [k for k in dict.fromkeys(request.query_params.keys()) if k not in accepted]
    if not unknown:
        return
    shown = ", ".join(accepted) or "none"
    raise RequestValidationError(
        [
            {
                "type": "extra_forbidden",
                "loc": ["query", name],
                "msg": f"unknown query parameter {name!r}; {request.url.path} accepts: {shown}",
                "input": request.query_params[name],
            }
            for name in unknown
        ]
    )


def shadow_row(svc: Service, symbol: str) -> dict[str, Any]:
    """The shadow challenger's published row of ``symbol`` (normalized); 404 naming it when
    none is published for it, 503 when the shadow file is unreadable."""
    try:
        doc = svc.shadow_file.get() if svc.shadow_file is not None else None
    except PublishedFileError as exc:
        raise HTTPException(503, f"published shadow predictions are unreadable: {exc}") from None
    if doc is None or symbol not in doc.rows:
        shadowed = sorted(doc.rows) if doc is not None else []
        raise HTTPException(
            404,
            f"no shadow challenger is published for {symbol} (symbols with one: "
            f"{', '.join(shadowed) or 'none'}); omit shadow (or shadow=0) for the champion",
        )
    return doc.rows[symbol]


def published_draws_only(request: Request, row: dict[str, Any]) -> None:
    """422 for ``n_samples`` on a shadow row: only the champion is exported and recomputed."""
    raise RequestValidationError(
        [
            {
                "type": "value_error",
                "loc": ["query", "n_samples"],
                "msg": f"the shadow challenger of {row['symbol']} is served with its published "
                f"{row['mc_samples']} MC draws only; omit n_samples (or set it to "
                f"{row['mc_samples']}), or omit shadow for the champion",
                "input": request.query_params.get("n_samples"),
            }
        ]
    )


def get_and_head(app: FastAPI, path: str, **route: Any) -> Callable[[Callable], Callable]:
    """Register the decorated endpoint for GET ``path`` (documented, ``route`` as for
    ``app.get``) and for HEAD (same handler and status, left out of the OpenAPI document; the
    server sends the headers only)."""

    def register(endpoint: Callable) -> Callable:
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False, **route)
        return app.get(path, **route)(endpoint)

    return register


def bearer_auth(token: str | None) -> list[DependsParam]:
    """The app-wide dependencies enforcing ``Authorization: Bearer <token>`` on every route
    but ``OPEN_PATHS``; none when ``token`` is None (no authentication). Constant-time compare;
    a missing or wrong token is 401 with ``WWW-Authenticate: Bearer``."""
    if token is None:
        return []
    expected = token.encode()
    bearer = HTTPBearer(auto_error=False, description="LEVIBOT_API_TOKEN")

    # A default, not Annotated: ``bearer`` is local and these annotations are strings.
    async def require_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> None:
        if request.url.path in OPEN_PATHS:
            return
        if credentials is None:
            why = "missing bearer token"
        elif hmac.compare_digest(credentials.credentials.encode(), expected):
            return
        else:
            why = "invalid bearer token"
        raise HTTPException(
            401,
            f"{why}: this API requires 'Authorization: Bearer <LEVIBOT_API_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )

    return [Depends(require_token)]


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning to give when serving on ``host`` without authentication, or None: a token
    is set, or ``host`` is loopback (127.0.0.0/8, ::1, localhost). Any other host, ``""`` and
    ``0.0.0.0`` included, may be reachable from other machines."""
    if token is not None or _is_loopback(host):
        return None
    shown = host or "all interfaces"
    return (
        f"the API on {shown} is reachable from other machines WITHOUT authentication: set "
        "LEVIBOT_API_TOKEN (e.g. export LEVIBOT_API_TOKEN=$(python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')) and send 'Authorization: Bearer <token>', or "
        "serve on 127.0.0.1"
    )


def _is_loopback(host: str) -> bool:
    name = host.strip().strip("[]").lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def create_app(settings: Settings, clock: Callable[[], int] | None = None) -> FastAPI:
    """The API for ``settings.home``; ``clock`` returns now in ms (default: wall clock).
    With ``settings.serving.api_token`` every route but ``OPEN_PATHS`` needs the token."""
    svc = open_service(settings, clock)
    app = FastAPI(
        title="levibot predictions",
        description="Read-only calibrated P(up), uncertainty and signals per symbol, from the "
        "files the Dagster publish job writes under $LEVIBOT_HOME/published (or "
        "$LEVIBOT_DATA_URL/published).",
        version="1",
        dependencies=[*bearer_auth(settings.serving.api_token), Depends(reject_unknown_query)],
    )

    @get_and_head(app, "/ml/predict_deep", response_model=DeepPrediction)
    async def predict_deep(
        request: Request,
        symbol: SymbolQuery,
        n_samples: SamplesQuery = None,
        shadow: ShadowQuery = False,
    ) -> dict:
        """Transformer with MC dropout; ``n_samples`` != published reruns the draws (the
        champion only); ``shadow=1``: the shadow challenger."""
        row = row_for(svc, symbol, shadow)
        out = deep_body(svc, row, svc.now_ms())
        if n_samples is None or n_samples == row["mc_samples"]:
            return out
        if shadow:
            published_draws_only(request, row)
        try:
            mc = await run_in_threadpool(svc.recompute, row, n_samples)
        except PublishedFileError as exc:
            raise HTTPException(503, f"cannot recompute {row['symbol']}: {exc}") from None
        except RecomputeLimited as exc:
            headers = {"Retry-After": str(exc.retry_after_s)}
            raise HTTPException(429, str(exc), headers=headers) from None
        return recomputed_body(out, mc, n_samples)

    @get_and_head(app, "/ml/predict_ensemble", response_model=EnsemblePrediction)
    async def predict_ensemble(symbol: SymbolQuery, shadow: ShadowQuery = False) -> dict:
        """Confidence-weighted LightGBM + Transformer; uncertainty from the deep member,
        ``uncertainty_source`` by the bar's effective weights; ``shadow=1``: the shadow
        challenger."""
        return ensemble_body(svc, row_for(svc, symbol, shadow), svc.now_ms())

    @get_and_head(app, "/ml/predict", response_model=Prediction)
    async def predict_lgbm(symbol: SymbolQuery, shadow: ShadowQuery = False) -> dict:
        """Calibrated LightGBM (no uncertainty estimate); ``shadow=1``: the shadow
        challenger."""
        return lgbm_body(svc, row_for(svc, symbol, shadow), svc.now_ms())

    @get_and_head(app, "/ml/models/deep/status")
    async def deep_status() -> dict:
        """Per symbol: published deep version, MC samples, bar, staleness, export present."""
        return deep_status_body(svc, latest(svc))

    api_metrics = install_request_metrics(app)

    @get_and_head(app, "/metrics/prom", response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format: the published file's gauges, built at scrape time, then
        this API's request, latency and process metrics (``api_metrics``)."""
        body = metrics_text(svc) + api_metrics.render()
        return Response(content=body, media_type=CONTENT_TYPE_LATEST)

    @get_and_head(app, "/healthz")
    async def healthz() -> JSONResponse:
        """200 when every symbol is published, none stale beyond the fail limit, not HALTED."""
        status_code, body = health_body(svc)
        return JSONResponse(body, status_code=status_code)

    @get_and_head(app, "/livez")
    async def livez() -> dict:
        """Liveness: 200 while the process serves, whatever is published or the kill-switch."""
        return {"status": "alive"}

    return app


def run_server(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Serve ``create_app(settings)`` with uvicorn (default host/port from settings)."""
    import uvicorn

    host, port = server_address(settings, host, port)
    warning = exposure_warning(host, settings.serving.api_token)
    if warning:
        log.warning(warning)
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)


def server_address(
    settings: Settings, host: str | None = None, port: int | None = None
) -> tuple[str, int]:
    """(host, port) to bind: the given ones, the settings' where ``None``; port 0 (any free
    port) and host "" are kept as given."""
    return (
        settings.serving.api_host if host is None else host,
        settings.serving.api_port if port is None else port,
    )

"""On-demand MC dropout for the API: the exported champion Transformer on the newest window.

``/ml/predict_deep?n_samples=N`` with N other than the published sample count lands here. torch,
the model code and polars are imported on first use only, so an API that never recomputes never
loads them. Results are deterministic per (symbol, model version, bar, N) with the publisher's
seed ``MC_SEED`` (so the published N reproduces the published draws), and the newest
``RECOMPUTE_CACHE`` of them are kept.

CPU bound: one recompute runs at a time (a lock), and a token bucket allows at most
``RECOMPUTE_BURST`` recomputes back to back, refilled at ``RECOMPUTE_PER_MINUTE`` per minute, for
the whole process; cache hits are free. Beyond that :class:`RecomputeLimited` says when to retry
(the API answers 429 with ``Retry-After``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from levibot_pipelines.adapters.exported_model import PublishedFileError, load_exported_transformer
from levibot_pipelines.adapters.prediction_files import MC_SEED
from levibot_pipelines.settings import Settings

RECOMPUTE_CACHE = 64  # recomputed predictions kept (deterministic per symbol/version/bar/N)
# 40 distinct N cost ~7.7 s of CPU on the seed model: at most ~2 s of CPU a minute on average.
RECOMPUTE_BURST = 10  # recomputes allowed back to back
RECOMPUTE_PER_MINUTE = 10.0  # refill rate of the bucket


class RecomputeLimited(Exception):
    """Too many recomputes: retry after ``retry_after_s`` seconds (an integer >= 1)."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"too many on-demand MC recomputes (at most {RECOMPUTE_BURST} back to back, "
            f"{RECOMPUTE_PER_MINUTE:g} per minute); retry in {retry_after_s} s, or omit "
            "n_samples to get the published draws"
        )
        self.retry_after_s = retry_after_s


class TokenBucket:
    """``capacity`` tokens, refilled at ``per_minute`` tokens a minute by ``clock`` (seconds,
    default ``time.monotonic``); thread-safe."""

    def __init__(
        self, capacity: int, per_minute: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if capacity < 1 or not per_minute > 0:
            raise ValueError(f"capacity={capacity} must be >= 1, per_minute={per_minute} > 0")
        self.capacity, self.rate, self.clock = capacity, per_minute / 60.0, clock
        self.tokens, self.stamp = float(capacity), clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is available."""
        with self._lock:
            now = self.clock()
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) / self.rate


class TransformerRecomputer:
    """On-demand MC dropout on the exported champion; torch is imported on first use only.
    ``budget`` bounds the recomputes (default: ``RECOMPUTE_BURST`` / ``RECOMPUTE_PER_MINUTE``)."""

    def __init__(self, settings: Settings, budget: TokenBucket | None = None) -> None:
        self.settings = settings
        self.lock = threading.Lock()  # mc_predict seeds torch's global RNG: one at a time
        self.models: dict[str, tuple[str, Any, Any]] = {}  # symbol -> (version, model, cal)
        self.results: OrderedDict[tuple, dict[str, float]] = OrderedDict()
        self.budget = budget or TokenBucket(RECOMPUTE_BURST, RECOMPUTE_PER_MINUTE)

    def __call__(self, row: dict[str, Any], n_samples: int) -> dict[str, float]:
        """The MC outputs of ``row`` with ``n_samples`` draws; a cached result costs nothing,
        a new one a token of the budget (:class:`RecomputeLimited` when none is left)."""
        key = (row["symbol"], row["deep_version"], row["bar_time"], n_samples)
        with self.lock:
            if key not in self.results:
                wait = self.budget.take()
                if wait > 0:
                    raise RecomputeLimited(max(1, math.ceil(wait)))
                self.results[key] = self._compute(row, n_samples)
                if len(self.results) > RECOMPUTE_CACHE:
                    self.results.popitem(last=False)
            return self.results[key]

    def _model(self, symbol: str, version: str):
        cached = self.models.get(symbol)
        if cached is None or cached[0] != version:
            model, calibrator, exported = load_exported_transformer(self.settings.home, symbol)
            model.set_precision(self._precision())  # the publisher's, on the same machine
            if exported != version:
                raise PublishedFileError(
                    f"the exported deep model of {symbol} is v{exported} but the published row "
                    f"names v{version} (a publish is in progress); retry"
                )
            self.models[symbol] = cached = (version, model, calibrator)
        return cached[1], cached[2]

    def _precision(self) -> str:
        """``LEVIBOT_PRECISION`` resolved on this CPU, as the publisher resolved it (the probe
        is kept per machine under the home)."""
        from levibot_pipelines.adapters.hardware import resolve_precision

        s = self.settings
        return resolve_precision(s.models.precision, "cpu", s.home)

    def _compute(self, row: dict[str, Any], n_samples: int) -> dict[str, float]:
        import numpy as np
        import polars as pl

        from levibot_pipelines.core.data.features import FEATURE_COLUMNS
        from levibot_pipelines.core.data.windows import window_ends
        from levibot_pipelines.core.models.inference import transformer_outputs
        from levibot_pipelines.usecases.data_home import data_store

        symbol, bar_time = row["symbol"], row["bar_time"]
        model, calibrator = self._model(symbol, row["deep_version"])
        length = model.config.window
        s = self.settings
        store = data_store(s)
        if not store.has_features():
            raise PublishedFileError(
                f"no feature table at {store.features_path}: cannot recompute {symbol}"
            )
        rows = (
            store.read_features()
            .lazy()
            .filter((pl.col("symbol") == symbol) & (pl.col("timestamp") <= bar_time))
            .sort("timestamp")
            .tail(length)
            .collect()
        )
        ts = rows.get_column("timestamp").to_numpy()
        ends = window_ends(ts, length, self.settings.market.timeframe_ms)
        if len(ts) == 0 or ts[-1] != bar_time or len(ends) == 0:
            raise PublishedFileError(
                f"no gap-free window of {length} feature rows of {symbol} ending at bar_time "
                f"{bar_time} ({len(ts)} rows found, last at {ts[-1] if len(ts) else None})"
            )
        X = rows.select(FEATURE_COLUMNS).to_numpy().astype(np.float32)
        if not np.isfinite(X).all():
            raise PublishedFileError(f"non-finite features in the window of {symbol}")
        deep = transformer_outputs(
            model, calibrator, X, ends[-1:], n_samples=n_samples, seed=MC_SEED
        )
        out = {k: float(deep[k][0]) for k in ("mu", "aleatoric", "epistemic", "epistemic_p")}
        out["total"] = float(deep["sigma"][0])  # the API's "total" is a standard deviation
        out["p_up"] = float(deep["p_up"][0])
        out["confidence"] = float(deep["confidence"][0])
        return out

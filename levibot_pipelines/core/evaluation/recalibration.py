"""Live recalibration statistics: a Platt map refitted on matured live predictions, its shadow
period and the calibration drift of what is served. The state (stages, which map served a row)
is ``core.evaluation.recal_state``.

Rows: per symbol and model ``m``, the matured published rows (``live_scoring``'s scored rows,
one per bar, labelled with the versions of the bar's first publish, ``labelled_rows``) whose
versions are the symbol's current ones (the newest publish's; ``of_versions``), oldest first
(``served_rows``). On each:

- ``p_served``: the published ``{m}_p_up``; ``p_raw``: the model's own probability, ``p_served``
  mapped back through the inverse of the map it was served under
  (``recal_state.served_map``; Platt: ``sigmoid((logit(p) - b) / a)``, exact for ``a > 0``), or
  ``p_served`` itself.

Fit (``fit_map``): a Platt map ``p_raw -> P(up)`` (``core.models.calibration.fit_calibrator``
with ``method="platt"``, the offline calibration's code) on the newest ``min_bars`` rows, with
the log loss on those rows before (``p_served``: what was published) and after
(``map(p_raw)``). Platt, not isotonic: two parameters are stable on a few thousand weakly
informative bars, a slope ``a > 0`` keeps the ranking (the AUC) unchanged, and the inverse is
exact. A fitted ``a <= 0`` would reverse the ranking: never a candidate.

Shadow period (``judge``): the first ``shadow_bars`` rows whose ``bar_time`` is after the fit
window's newest bar (bars that matured after the fit; never one it was fitted on). Per bar
``d_i = l(p_served_i) - l(map(p_raw_i))`` (``shadow_rule.bar_log_loss``, nats; > 0: the
recalibrated probability was better), ``(mean, se, t) = shadow_rule.paired_t(d, h)`` (``se``
inflated by ``sqrt(h)``). Fewer rows: still ``candidate``. Else ``active`` when ``mean >= 0``
(no worse on average over the pre-declared bars), ``rejected`` when ``mean < 0``. ``t`` is
recorded, not used: the rule is the sign of the mean, judged once, on exactly those bars.

Drift (``drift``): a Platt map ``p_served -> P(up)`` fitted on the same newest ``min_bars`` rows
measures how far what is served is from calibrated: ``max_abs_shift = max_i |map(p_i) - p_i|``
over those rows (probability units; the gauge), and the likelihood-ratio statistic against the
identity (two parameters), ``D = 2 * sum_i (l(p_i) - l(map(p_i)))``. Drifted when ``D / h >
DRIFT_CHI2`` (13.82: the 0.1% upper point of chi-square with 2 degrees of freedom,
``-2 ln 0.001``; dividing by ``h`` for overlapping ``h``-bar labels, as the shadow rule does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from scipy.special import expit, logit

from levibot_pipelines.core.checks import check_int
from levibot_pipelines.core.evaluation.live_scoring import first_published
from levibot_pipelines.core.evaluation.recal_state import VERSION_COLUMNS, covers, ever_served
from levibot_pipelines.core.evaluation.shadow_rule import bar_log_loss, paired_t
from levibot_pipelines.core.models.calibration import LOGIT_EPS, Calibrator, fit_calibrator

DRIFT_CHI2 = -2.0 * math.log(0.001)  # 13.8155...
VERSIONS = ("lgbm_version", "deep_version")
ROW_COLUMNS = ("bar_time", "published_at", "y_up", "fwd_ret", "p_served", "map_id", "p_raw")


def labelled_rows(scored: pl.DataFrame, history: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """The ``horizon`` rows of ``scored`` (``live_scoring.SCORED_SCHEMA``) with the versions of
    their bar's first published row in ``history`` (the row live scoring scored)."""
    versions = first_published(history).select("symbol", "bar_time", *VERSIONS)
    rows = scored.filter(pl.col("horizon") == horizon)
    return rows.join(versions, on=["symbol", "bar_time"], how="left")


def current_versions(history: pl.DataFrame, symbol: str) -> dict[str, str] | None:
    """The versions of ``symbol``'s newest published row; None when it has none."""
    rows = history.filter(pl.col("symbol") == symbol).sort("published_at")
    if rows.is_empty():
        return None
    return {c: str(rows.get_column(c)[-1]) for c in VERSIONS}


def calibrator(d: dict[str, Any]) -> Calibrator:
    """A map record's ``calibrator`` as a ``Calibrator``."""
    return Calibrator.from_dict(d)


def invert(cal: Calibrator, p: np.ndarray) -> np.ndarray:
    """The ``p_raw`` a Platt ``cal`` (``a > 0``) maps to ``p``, shape of ``p``."""
    if cal.method != "platt" or not cal.a > 0:
        raise ValueError(f"only a Platt map with a > 0 inverts, got {cal.method} a={cal.a}")
    z = logit(np.clip(np.asarray(p, dtype=np.float64), LOGIT_EPS, 1.0 - LOGIT_EPS))
    return expit((z - cal.b) / cal.a)


def of_versions(
    rows: pl.DataFrame, symbol: str, model: str, versions: dict[str, str]
) -> pl.DataFrame:
    """``symbol``'s ``labelled_rows`` published by the ``versions`` of ``model``, oldest first."""
    pick = pl.col("symbol") == symbol
    for c in VERSION_COLUMNS[model]:
        pick &= pl.col(c) == versions[c]
    return rows.filter(pick).sort("bar_time")


def window_start(rows: pl.DataFrame, n: int) -> int | None:
    """The ``bar_time`` of the ``n``-th newest of ``rows``; None when there are fewer."""
    times = rows.get_column("bar_time").sort(descending=True)
    return int(times[n - 1]) if times.len() >= n else None


def served_rows(
    rows: pl.DataFrame, maps: list[dict], model: str, versions: dict[str, str], since: int = 0
) -> pl.DataFrame:
    """``rows`` (``of_versions``'s, for ``versions``) from bar ``since`` on as ``ROW_COLUMNS``
    (module docstring), oldest first; ``map_id`` null where none served. The rule is
    ``recal_state.served_map``'s, over every row at once."""
    sel = rows.filter(pl.col("bar_time") >= since).sort("bar_time")
    symbols = sel.get_column("symbol").unique().to_list()
    if len(symbols) > 1:
        raise ValueError(f"rows of one symbol expected, got {sorted(symbols)}")
    at = sel.get_column("published_at").to_numpy()
    served = sel.get_column(f"{model}_p_up").to_numpy().astype(np.float64)
    raw, ids = served.copy(), np.full(at.size, None, dtype=object)
    kept = ever_served(maps, symbols[0], model, versions) if symbols else []
    for m in kept:  # oldest effective_from first: a newer map covering a row wins
        ids[np.array([covers(m, int(t)) for t in at], dtype=bool)] = m["id"]
    for m in kept:
        mask = ids == m["id"]
        if mask.any():
            raw[mask] = invert(calibrator(m["calibrator"]), served[mask])
    return pl.DataFrame(
        {
            "bar_time": sel.get_column("bar_time"),
            "published_at": sel.get_column("published_at"),
            "y_up": sel.get_column("y_up").cast(pl.Float64),
            "fwd_ret": sel.get_column("fwd_ret").cast(pl.Float64),
            "p_served": served,
            "map_id": pl.Series(ids.tolist(), dtype=pl.String),
            "p_raw": raw,
        }
    )


def _arrays(rows: pl.DataFrame, *cols: str) -> list[np.ndarray]:
    return [rows.get_column(c).to_numpy().astype(np.float64) for c in cols]


@dataclass(frozen=True)
class MapFit:
    """A fitted map on the newest ``n`` rows (``first_bar`` .. ``last_bar``, ms UTC): the Platt
    ``calibrator`` (``p_raw -> P(up)``) and the window's log loss (nats) of the served
    probability (``log_loss_before``), of ``calibrator(p_raw)`` (``log_loss_after``) and of
    ``p_raw`` (``log_loss_raw``)."""

    calibrator: Calibrator
    n: int
    first_bar: int
    last_bar: int
    log_loss_before: float
    log_loss_after: float
    log_loss_raw: float


def fit_map(rows: pl.DataFrame, min_bars: int) -> MapFit:
    """The Platt map fitted on the newest ``min_bars`` of ``rows`` (``ROW_COLUMNS``);
    ``ValueError`` when there are fewer or the window holds one class."""
    need = check_int("min_bars", min_bars, 2)
    if rows.height < need:
        raise ValueError(f"{rows.height} matured bars, {need} needed: {need - rows.height} missing")
    window = rows.tail(need)
    y, served, raw = _arrays(window, "y_up", "p_served", "p_raw")
    cal = fit_calibrator(raw, y, method="platt")
    times = window.get_column("bar_time")
    return MapFit(
        cal,
        need,
        int(times[0]),
        int(times[-1]),
        float(bar_log_loss(y, served).mean()),
        float(bar_log_loss(y, cal.transform(raw)).mean()),
        float(bar_log_loss(y, raw).mean()),
    )


@dataclass(frozen=True)
class Drift:
    """The drift probe (module docstring) on the newest ``n`` rows: the Platt map ``a``, ``b``
    (served -> P(up)), ``max_abs_shift``, the statistic ``deviance`` and ``drifted``."""

    n: int
    a: float
    b: float
    max_abs_shift: float
    deviance: float
    threshold: float
    drifted: bool


def drift(rows: pl.DataFrame, min_bars: int, horizon: int) -> Drift:
    """The drift probe on the newest ``min_bars`` of ``rows`` (``ROW_COLUMNS``);
    ``ValueError`` when there are fewer or the window holds one class."""
    need, h = check_int("min_bars", min_bars, 2), check_int("horizon", horizon, 1)
    if rows.height < need:
        raise ValueError(f"{rows.height} matured bars, {need} needed: {need - rows.height} missing")
    y, p = _arrays(rows.tail(need), "y_up", "p_served")
    cal = fit_calibrator(p, y, method="platt")
    q = cal.transform(p)
    deviance = max(0.0, 2.0 * float((bar_log_loss(y, p) - bar_log_loss(y, q)).sum()))
    shift = float(np.abs(q - p).max())
    return Drift(need, cal.a, cal.b, shift, deviance, DRIFT_CHI2, deviance / h > DRIFT_CHI2)


def after_fit(rows: pl.DataFrame, last_bar: int) -> pl.DataFrame:
    """The rows (``ROW_COLUMNS``) that matured after a fit whose newest bar was ``last_bar``."""
    return rows.filter(pl.col("bar_time") > last_bar)


@dataclass(frozen=True)
class Judgement:
    """A candidate's shadow period (module docstring): ``stage`` (``candidate``, ``active`` or
    ``rejected``), the ``n`` bars used of the ``needed``, the mean paired log-loss gain
    ``mean_diff`` (nats, served minus recalibrated; NaN without bars), ``se``, ``t``, each
    side's mean log loss and the ``reason`` in words."""

    stage: str
    n: int
    needed: int
    mean_diff: float
    se: float
    t: float
    log_loss_served: float
    log_loss_recal: float
    reason: str


def judge(after: pl.DataFrame, cal: Calibrator, horizon: int, shadow_bars: int) -> Judgement:
    """The shadow rule on ``after`` (``after_fit``'s rows, oldest first) for the candidate map
    ``cal``: its first ``shadow_bars`` rows (module docstring)."""
    need = check_int("shadow_bars", shadow_bars, 1)
    y, served, raw = _arrays(after.head(need), "y_up", "p_served", "p_raw")
    l_served = bar_log_loss(y, served)
    l_recal = bar_log_loss(y, cal.transform(raw)) if raw.size else l_served
    mean, se, t = paired_t(l_served - l_recal, horizon)
    n = int(y.size)
    ll = (float(l_served.mean()), float(l_recal.mean())) if n else (math.nan, math.nan)
    stats = f"{n} bars after the fit, mean log-loss gain {mean:+.6g} nats, t = {t:.3g}"
    if n < need:
        stage, reason = "candidate", f"shadow period: {n} of {need} bars matured after the fit"
    elif mean >= 0:
        stage, reason = "active", f"no worse than the published probability ({stats})"
    else:
        stage, reason = "rejected", f"worse than the published probability ({stats})"
    return Judgement(stage, n, need, mean, se, t, *ll, reason)


def recalibrated(rows: pl.DataFrame, cal: Calibrator) -> np.ndarray:
    """``cal`` applied to the rows' ``p_raw`` (the candidate's probability on those bars)."""
    return cal.transform(rows.get_column("p_raw").to_numpy().astype(np.float64))

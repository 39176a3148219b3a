"""One symbol's rows of the feature table as the arrays the models are fitted on.

``symbol_data`` takes the feature columns the models see (default ``FEATURE_COLUMNS``, the
production set; ``levibot evaluate --futures-dir`` adds ``core.data.futures.FUTURES_COLUMNS``).
Null features stay NaN in ``X``: LightGBM takes them natively (its missing-value branch). The
Transformer cannot, so it gets ``X_deep``, where the nulls of the futures columns are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from levibot_pipelines.core.data.features import FEATURE_COLUMNS
from levibot_pipelines.core.data.futures import FUTURES_COLUMNS


@dataclass(frozen=True)
class SymbolData:
    """One symbol's feature rows as arrays (time-ordered). Unknown labels are NaN; ``columns``
    names the ``F`` columns of ``X`` in order (default ``FEATURE_COLUMNS``)."""

    symbol: str
    timestamps: np.ndarray  # (n,) int64, bar open time in ms
    X: np.ndarray  # (n, F) float32, ``columns`` order; NaN where a feature is null
    y_up: np.ndarray  # (n,) float64 in {0, 1} or NaN
    fwd_ret: np.ndarray  # (n,) float64 log return or NaN
    columns: tuple[str, ...] = FEATURE_COLUMNS

    def __post_init__(self) -> None:
        if self.X.ndim != 2 or self.X.shape[1] != len(self.columns):
            raise ValueError(
                f"X of {self.symbol!r} has shape {self.X.shape}, expected (n, {len(self.columns)}) "
                f"for columns {list(self.columns)}"
            )

    @property
    def X_deep(self) -> np.ndarray:
        """``X`` for the Transformer, ``(n, F)`` float32: the NaN (null) values of the futures
        columns (``FUTURES_COLUMNS``: no funding settlement or mark bar fresh at the bar's
        close, or ``funding_z`` before its 90 settlements) are 0, meaning "no information": a
        funding rate, change, z-score, extreme flag and basis of 0 are each the neutral value.
        Other columns are left as they are (the Transformer's windows reject non-finite values).
        ``X`` itself (no copy) when no futures column is present."""
        fill = [i for i, c in enumerate(self.columns) if c in FUTURES_COLUMNS]
        if not fill:
            return self.X
        out = self.X.copy()
        part = out[:, fill]  # (n, F_futures) copy
        part[np.isnan(part)] = 0.0
        out[:, fill] = part
        return out


def symbol_data(
    features: pl.DataFrame, symbol: str, columns: tuple[str, ...] | list[str] = FEATURE_COLUMNS
) -> SymbolData:
    """Extract ``symbol``'s rows of the feature table (``core.data.features.FEATURE_SCHEMA``,
    plus ``FUTURES_COLUMNS`` when ``build_features`` was given futures data), with ``X`` of
    ``columns`` in that order (default ``FEATURE_COLUMNS``; nulls become NaN, no row is
    dropped). ``ValueError`` naming the symbol or the columns the table lacks."""
    columns = tuple(columns)
    if not columns:
        raise ValueError("columns is empty: the models need at least one feature column")
    missing = [c for c in columns if c not in features.columns]
    if missing:
        raise ValueError(
            f"the feature table lacks columns {missing} of {list(columns)}; it has "
            f"{features.columns}"
        )
    rows = features.filter(pl.col("symbol") == symbol).sort("timestamp")
    if rows.is_empty():
        have = sorted(features.get_column("symbol").unique().to_list())
        raise ValueError(f"no feature rows for symbol {symbol!r}; the table has {have}")
    X = rows.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in columns)
    return SymbolData(
        symbol=symbol,
        timestamps=rows.get_column("timestamp").to_numpy().astype(np.int64),
        X=X.to_numpy().astype(np.float32),
        y_up=rows.get_column("y_up").cast(pl.Float64).fill_null(np.nan).to_numpy(),
        fwd_ret=rows.get_column("fwd_ret").fill_null(np.nan).to_numpy(),
        columns=columns,
    )

"""Market data in memory: timeframes, OHLCV validation, features, windows, synthetic market.
May import only core and the pure numeric libraries; no files, environment, dagster or ccxt."""

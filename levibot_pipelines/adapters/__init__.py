"""Input/output only, one outside thing each: exchanges, Parquet/DuckDB, MLflow, files, alerts.
May import adapters and core; never dagster, usecases, defs or the whole Settings (take values)."""

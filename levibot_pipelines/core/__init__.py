"""Pure domain logic: no dagster, ccxt, duckdb, mlflow, files or environment."""

"""Side effects without Dagster: exchange sources, Parquet/DuckDB storage, alerts."""

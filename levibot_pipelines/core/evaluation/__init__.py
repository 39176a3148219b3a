"""Honest evaluation: purged walk-forward splits, fitting one model on a layout, the walk-forward.
May import only core and the pure numeric libraries; no MLflow, no files, no dagster."""

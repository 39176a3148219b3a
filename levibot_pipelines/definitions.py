"""The code location: everything under ``defs/`` plus cross-cutting policy, applied once."""

from datetime import timedelta
from pathlib import Path

import dagster as dg

from levibot_pipelines.settings import Settings

# Materialization-time freshness: the feature table is rebuilt every 15 minutes, so two missed
# ticks warn and four fail. Data-time staleness is watched by checks and the alert sensor.
FEATURES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=60), warn_window=timedelta(minutes=30)
)


def load_definitions() -> dg.Definitions:
    """Load the defs folder and apply the freshness policies."""
    Settings.from_env()  # fail at load with a clear message on a bad LEVIBOT_* value
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return loaded.map_resolved_asset_specs(
        func=lambda spec: dg.apply_freshness_policy(spec, FEATURES_FRESHNESS),
        selection="cross_asset_features",
    )


defs = dg.definitions(load_definitions)

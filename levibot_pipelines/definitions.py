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

# Published predictions follow the feature table (one publish per rebuild), so the same windows.
PREDICTIONS_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=60), warn_window=timedelta(minutes=30)
)

FRESHNESS_POLICIES = {
    dg.AssetKey("cross_asset_features"): FEATURES_FRESHNESS,
    dg.AssetKey("latest_predictions"): PREDICTIONS_FRESHNESS,
}


def load_definitions() -> dg.Definitions:
    """Load the defs folder and apply the freshness policies."""
    Settings.from_env()  # fail at load with a clear message on a bad LEVIBOT_* value
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return loaded.map_asset_specs(func=_with_freshness)


def _with_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
    policy = FRESHNESS_POLICIES.get(spec.key)
    return dg.apply_freshness_policy(spec, policy) if policy else spec


defs = dg.definitions(load_definitions)

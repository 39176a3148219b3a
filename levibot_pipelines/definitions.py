"""The code location: everything under ``defs/`` plus cross-cutting policy (freshness), applied
once.

Freshness here is materialization-time freshness (how long since the asset was last
materialized, any partition), Dagster's ``FreshnessPolicy.time_window``; data-time staleness (how
old the newest bar is) is watched by checks and the alert sensor. The windows, with the defaults
(15m bars, ingest every 15 minutes, retraining daily):

| asset | warn after | fail after | defaults |
|---|---|---|---|
| ``ohlcv`` | timeframe + ingest period | 2 x timeframe + ingest period | 30 / 45 min |
| ``cross_asset_features`` | 30 min | 60 min | |
| ``latest_predictions`` | 30 min | 60 min | |
| the model assets (``MODEL_ASSETS``) | 1.5 x retrain period | 2 x retrain period | 36 / 48 h |

The model assets are ``lgbm_model``, ``deep_tfm_model``, ``ensemble_weights`` and
``model_report``, all materialized by each ``retrain_schedule`` tick. The ingest and retrain
periods are the longest gap between two ticks of ``LEVIBOT_INGEST_CRON`` and of
``LEVIBOT_RETRAIN_CRON`` (``defs.common.cron_period``).
"""

import inspect
from datetime import timedelta
from pathlib import Path

import dagster as dg

from levibot_pipelines.defs.common import cron_period
from levibot_pipelines.defs.executors import default_executor
from levibot_pipelines.defs.models import MODEL_ASSETS
from levibot_pipelines.settings import Settings

# The feature table is rebuilt every 15 minutes, so two missed ticks warn and four fail.
FEATURES_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=60), warn_window=timedelta(minutes=30)
)

# Published predictions follow the feature table (one publish per rebuild), so the same windows.
PREDICTIONS_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(minutes=60), warn_window=timedelta(minutes=30)
)


def ohlcv_freshness(s: Settings) -> dg.FreshnessPolicy:
    """Every ingest tick materializes ``ohlcv``: warn after one bar plus one ingest period
    without a materialization, fail after two bars plus one period (defaults: 30 / 45 min)."""
    tf = timedelta(milliseconds=s.market.timeframe_ms)
    period = cron_period(s.market.ingest_cron)
    return dg.FreshnessPolicy.time_window(fail_window=2 * tf + period, warn_window=tf + period)


def model_freshness(s: Settings) -> dg.FreshnessPolicy:
    """Every retrain tick materializes the model assets: warn after 1.5 retrain periods (one
    retrain missed), fail after 2 (defaults, daily retraining: 36 / 48 h)."""
    period = cron_period(s.models.retrain_cron, s.models.retrain_timezone)
    return dg.FreshnessPolicy.time_window(fail_window=2 * period, warn_window=1.5 * period)


def freshness_policies(s: Settings) -> dict[dg.AssetKey, dg.FreshnessPolicy]:
    """The freshness policy of each asset that has one, by asset key."""
    models = model_freshness(s)
    return {
        dg.AssetKey("ohlcv"): ohlcv_freshness(s),
        dg.AssetKey("cross_asset_features"): FEATURES_FRESHNESS,
        dg.AssetKey("latest_predictions"): PREDICTIONS_FRESHNESS,
        **{dg.AssetKey(name): models for name in MODEL_ASSETS},
    }


def load_definitions() -> dg.Definitions:
    """Load the defs folder and apply the freshness policies.

    The policies are mapped over the loaded assets with ``dg.map_asset_specs`` and the
    Definitions rebuilt with every other field kept: ``Definitions.map_asset_specs`` would do
    the same but is a preview API, whose ``PreviewWarning`` every process that loads the code
    location (webserver, daemon, each run) repeated.
    """
    settings = Settings.from_env()  # fail at load with a clear message on a bad LEVIBOT_* value
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    policies = freshness_policies(settings)

    def with_freshness(spec: dg.AssetSpec) -> dg.AssetSpec:
        policy = policies.get(spec.key)
        return dg.apply_freshness_policy(spec, policy) if policy else spec

    fields = {name: getattr(loaded, name) for name in inspect.signature(dg.Definitions).parameters}
    fields["assets"] = [
        dg.map_asset_specs(with_freshness, [a])[0]
        if isinstance(a, dg.AssetsDefinition | dg.AssetSpec)
        else a
        for a in loaded.assets or []
    ]
    fields["executor"] = default_executor(settings) or loaded.executor
    return dg.Definitions(**fields)


defs = dg.definitions(load_definitions)

"""The layout of LEVIBOT_HOME (``adapters.home``): the users' interface, so every path is pinned."""

from pathlib import Path

from levibot_pipelines.adapters import home


def test_every_path_under_the_home(tmp_path):
    h = Path("/srv/levibot")
    assert home.ohlcv_dir(h) == h / "ohlcv"
    assert home.features_path(h) == h / "features" / "cross_asset_features.parquet"
    assert home.mlartifacts_dir(h) == h / "mlartifacts"
    assert home.ensemble_weights_path(h, "BTCUSDT") == h / "models" / "BTCUSDT" / "ensemble.json"
    assert (
        home.predictions_path(h, "ETHUSDT", "lgbm")
        == h / "models" / "ETHUSDT" / "lgbm_test_predictions.parquet"
    )
    assert home.report_json(h, "SOLUSDT") == h / "reports" / "SOLUSDT" / "report.json"
    assert home.history_glob(h) == "/srv/levibot/published/history/predictions-*.parquet"
    assert (
        home.exported_transformer_dir(h, "BTCUSDT")
        == h / "published" / "models" / "BTCUSDT" / "deep"
    )
    # Strings work as well as paths, and nothing is created.
    assert home.published_dir(str(tmp_path)) == tmp_path / "published"
    assert not (tmp_path / "published").exists()

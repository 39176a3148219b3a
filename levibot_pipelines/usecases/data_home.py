"""Where a configuration's data lives: the data root (the home, or the bucket prefix of
``LEVIBOT_DATA_URL``) holding the bars, the feature table, the reports and the published
predictions, and the Parquet store over it. The one place that maps settings to them."""

from __future__ import annotations

from levibot_pipelines.adapters.object_store import DataRoot, open_root
from levibot_pipelines.adapters.store import ParquetStore
from levibot_pipelines.settings import Settings


def data_root(settings: Settings) -> DataRoot:
    """Where the bars, features, reports and published predictions are: the home, or the
    bucket of ``LEVIBOT_DATA_URL``."""
    return open_root(settings.market.data_url, settings.home)


def data_store(settings: Settings) -> ParquetStore:
    """The Parquet store (bars and features) of ``settings``: locks under the home, files in
    ``data_root``."""
    return ParquetStore(settings.home, data_root(settings))

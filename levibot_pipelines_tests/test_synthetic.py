import numpy as np
import polars as pl
import pytest
from scipy.stats import kurtosis

from levibot_pipelines.core.data.synthetic import simulate_bars
from levibot_pipelines.core.data.validation import validate_ohlcv
from levibot_pipelines_tests.conftest import TF_MS

N = 20_000


@pytest.fixture(scope="module")
def log_returns() -> dict[str, np.ndarray]:
    out = {}
    for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        close = simulate_bars(s, 0, (N - 1) * TF_MS, TF_MS, seed=11)["close"].to_numpy()
        out[s] = np.diff(np.log(close))
    return out


def test_deterministic_and_extending_only_appends():
    a = simulate_bars("ETHUSDT", 0, 999 * TF_MS, TF_MS, seed=3)
    b = simulate_bars("ETHUSDT", 0, 4999 * TF_MS, TF_MS, seed=3)
    assert a.equals(simulate_bars("ETHUSDT", 0, 999 * TF_MS, TF_MS, seed=3))
    assert a.equals(b.head(1000))
    assert not a.equals(simulate_bars("ETHUSDT", 0, 999 * TF_MS, TF_MS, seed=4))


def test_bars_are_on_the_grid_and_valid():
    raw = simulate_bars("SOLUSDT", 10 * TF_MS, 3009 * TF_MS, TF_MS, seed=7)
    assert raw["timestamp"].to_list() == [t * TF_MS for t in range(10, 3010)]
    assert validate_ohlcv(raw, symbol="SOLUSDT", source="synthetic", tf_ms=TF_MS).rejected == {}
    assert (raw["open"].shift(-1).head(-1) == raw["close"].head(-1)).all()


def test_stylised_facts(log_returns):
    btc, eth, sol = log_returns["BTCUSDT"], log_returns["ETHUSDT"], log_returns["SOLUSDT"]
    assert 0.4 < np.corrcoef(btc, eth)[0, 1] < 0.8  # correlated
    assert np.corrcoef(btc[:-1], eth[1:])[0, 1] > 0.04  # BTC leads ETH ...
    assert np.corrcoef(btc[:-1], sol[1:])[0, 1] > 0.04  # ... and SOL
    assert abs(np.corrcoef(eth[:-1], btc[1:])[0, 1]) < 0.03  # ... but not the other way
    assert kurtosis(btc) > 3  # fat tails
    assert np.corrcoef(np.abs(btc[:-1]), np.abs(btc[1:]))[0, 1] > 0.1  # volatility clusters
    assert sol.std() > eth.std() > btc.std()


def test_rejects_a_start_off_the_grid():
    with pytest.raises(ValueError, match="start_ms=5 is not on the 900000 ms grid"):
        simulate_bars("BTCUSDT", 5, 10 * TF_MS, TF_MS, seed=7)
    assert simulate_bars("BTCUSDT", 0, -1, TF_MS, seed=7).height == 0
    assert isinstance(simulate_bars("BTCUSDT", 0, 0, TF_MS, seed=7), pl.DataFrame)

"""``adapters.file_cache.FileCache``: one parse per file version, and a file that cannot be read
or parsed is reported as the reader's own error, every time, never as the previous version."""

import json
import os

import pytest
import requests

from levibot_pipelines.adapters.file_cache import FileCache
from levibot_pipelines.adapters.home import published_dir
from levibot_pipelines.adapters.prediction_files import LATEST_JSON, write_published
from levibot_pipelines.api import create_app
from levibot_pipelines.settings import Settings
from levibot_pipelines_tests.test_api import serving
from levibot_pipelines_tests.test_prediction_files import (
    BAR,
    SYMBOLS,
    TF_MS,
    make_rows,
    tiny_deep_files,
)


class Unreadable(ValueError):
    pass


def _replace(path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_parses_once_per_version(tmp_path):
    path, calls = tmp_path / "doc.json", []
    _replace(path, '{"v": 1}')
    cache = FileCache(path, lambda text: calls.append(text) or json.loads(text), Unreadable)
    assert cache.get() == {"v": 1} and cache.get() == {"v": 1} and len(calls) == 1
    _replace(path, '{"v": 2}')
    assert cache.get() == {"v": 2} and len(calls) == 2
    path.unlink()
    assert cache.get() is None


def test_a_parser_crash_is_the_readers_error_and_never_serves_the_old_version(tmp_path):
    path = tmp_path / "doc.json"
    _replace(path, '{"v": 1}')

    def parse(text: str) -> dict:
        doc = json.loads(text)
        return {doc["v"]: "x"}  # a list as a dict key: TypeError, not ValueError

    cache = FileCache(path, parse, Unreadable)
    assert cache.get() == {1: "x"}
    _replace(path, '{"v": [1]}')
    for _ in range(3):  # every request, not only the first
        with pytest.raises(Unreadable, match=r"doc.json is unreadable: TypeError"):
            cache.get()


def test_a_directory_or_a_forbidden_file_is_the_readers_error(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(Unreadable, match=r"dir.json is unreadable: IsADirectoryError"):
        FileCache(tmp_path / "dir.json", json.loads, Unreadable).get()


def test_api_answers_503_not_the_previous_publish_after_a_bad_file(tmp_path):
    rows = make_rows()
    write_published(tmp_path, rows, {s: tiny_deep_files(s) for s in SYMBOLS})
    now = BAR + TF_MS + 60_000
    with serving(create_app(Settings(home=tmp_path), clock=lambda: now)) as base:
        url = f"{base}/ml/predict_ensemble?symbol=BTCUSDT"
        assert requests.get(url, timeout=10).status_code == 200
        latest = published_dir(tmp_path) / LATEST_JSON
        doc = json.loads(latest.read_text())
        doc["rows"][0]["symbol"] = ["BTCUSDT"]  # not a string: parse_latest names the value
        _replace(latest, json.dumps(doc))
        for _ in range(2):  # every request answers 503, none the previous publish with 200
            r = requests.get(url, timeout=10)
            why = "'symbol' is ['BTCUSDT'] (list), expected a string"
            assert r.status_code == 503 and why in r.json()["detail"]
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 503

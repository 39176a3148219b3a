"""Champion promotion: the pure rule (``core.evaluation.champion``), checked on a table of
hand-worked cases, and the use case that applies it to a real MLflow store
(``usecases.promote.promote_if_no_worse`` / ``promote_champion``)."""

from __future__ import annotations

import os

# Telemetry must be off before mlflow is first imported (it starts its client on import).
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import pytest  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from levibot_pipelines.adapters.model_versions import eval_tag, evaluation_tags  # noqa: E402
from levibot_pipelines.adapters.tracking import Tracker  # noqa: E402
from levibot_pipelines.core.evaluation.champion import (  # noqa: E402
    Decision,
    champion_should_move,
)
from levibot_pipelines.settings import ModelSettings  # noqa: E402
from levibot_pipelines.usecases.promote import (  # noqa: E402
    promote_champion,
    promote_if_no_worse,
)
from levibot_pipelines_tests.conftest import dummy_run  # noqa: E402

WINDOW_A = "2025-01-01T00:00/2025-03-01T00:00"
WINDOW_B = "2025-02-01T00:00/2025-04-01T00:00"
NAN = float("nan")

# (new value, champion value, higher is better, new version, champion version) -> decision,
# every reason text worked out by hand from the rule in the module docstring.
CASES = [
    (0.69, None, False, "1", None, Decision(True, "promoted: no champion yet")),
    (0.90, 0.10, False, "2", "2", Decision(True, "promoted: already champion")),
    (0.10, None, False, "2", "1", Decision(False, "kept champion: windows differ")),
    (
        0.70,
        0.69,
        False,
        "2",
        "1",
        Decision(
            False,
            "kept champion: log_loss 0.7 worse than champion 0.69 (lower is better)",
        ),
    ),
    (
        0.65,
        0.69,
        False,
        "3",
        "1",
        Decision(True, "promoted: log_loss 0.65 no worse than champion 0.69 (lower is better)"),
    ),
    (
        0.65,
        0.65,
        False,
        "4",
        "3",
        Decision(True, "promoted: log_loss 0.65 no worse than champion 0.65 (lower is better)"),
    ),
    (
        0.54,
        0.55,
        True,
        "2",
        "1",
        Decision(False, "kept champion: log_loss 0.54 worse than champion 0.55 (higher is better)"),
    ),
    (
        0.56,
        0.55,
        True,
        "3",
        "1",
        Decision(True, "promoted: log_loss 0.56 no worse than champion 0.55 (higher is better)"),
    ),
    (
        0.123456789,
        0.1234567,
        False,
        "2",
        "1",
        Decision(
            False,
            "kept champion: log_loss 0.123457 worse than champion 0.123457 (lower is better)",
        ),
    ),
    (NAN, 0.69, False, "2", "1", Decision(False, "kept champion: new log_loss is NaN")),
    (NAN, NAN, True, "2", "1", Decision(False, "kept champion: new log_loss is NaN")),
    (0.69, NAN, False, "2", "1", Decision(True, "promoted: champion log_loss is NaN")),
    # No champion or already champion: the values are not looked at, NaN included.
    (NAN, None, False, "1", None, Decision(True, "promoted: no champion yet")),
    (NAN, 0.5, False, "7", "7", Decision(True, "promoted: already champion")),
]


@pytest.mark.parametrize(("new", "champ", "higher", "new_v", "champ_v", "expected"), CASES)
def test_champion_rule_table(new, champ, higher, new_v, champ_v, expected) -> None:
    decision = champion_should_move(
        new,
        champ,
        metric="log_loss",
        higher_is_better=higher,
        new_version=new_v,
        champion_version=champ_v,
    )
    assert decision == expected


def test_champion_rule_is_symmetric_in_direction() -> None:
    """Negating both values and flipping the direction gives the same verdict."""
    for new, champ in ((0.3, 0.4), (0.4, 0.3), (0.5, 0.5)):
        lower = champion_should_move(
            new, champ, metric="m", higher_is_better=False, new_version="2", champion_version="1"
        )
        higher = champion_should_move(
            -new, -champ, metric="m", higher_is_better=True, new_version="2", champion_version="1"
        )
        assert lower.promoted == higher.promoted == (new <= champ)


def test_champion_rule_needs_a_metric_name() -> None:
    with pytest.raises(ValueError, match="metric must be a non-empty name"):
        champion_should_move(
            0.5, 0.5, metric="", higher_is_better=False, new_version="2", champion_version="1"
        )


# --- the use case against a real store ------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def tracker(tmp_path_factory: pytest.TempPathFactory) -> Tracker:
    # One store per module: creating the sqlite schema takes seconds; tests use distinct models.
    return Tracker.for_home(
        tmp_path_factory.mktemp("levibot-home"), ui_base=ModelSettings().mlflow_ui
    )


def test_promotion_lower_is_better(tracker: Tracker, reader: MlflowClient) -> None:
    name = "deep-lower"
    versions = [tracker.register_version(name, dummy_run(tracker, f"{name}-{i}")) for i in range(4)]

    def promote(version: str, value: float) -> dict:
        return promote_if_no_worse(
            tracker,
            name,
            version,
            metric="log_loss",
            value=value,
            higher_is_better=False,
            window=WINDOW_A,
        )

    first = promote(versions[0], 0.69)
    assert first["promoted"] and first["reason"] == "promoted: no champion yet"
    assert first["champion_version"] is None
    assert tracker.champion(name)[0] == versions[0]

    worse = promote(versions[1], 0.70)
    assert worse == {
        "promoted": False,
        "alias": None,  # refused by the offline rule: no alias
        "reason": worse["reason"],
        "champion_version": versions[0],
        "new_version": versions[1],
        "champion_value": 0.69,
        "new_value": 0.70,
    }
    assert worse["reason"].startswith("kept champion: log_loss 0.7 worse than champion 0.69")
    assert tracker.champion(name)[0] == versions[0]
    tags = reader.get_model_version(name, versions[1]).tags
    assert tags["decision"] == worse["reason"]
    assert tags["promoted"] == "false"
    assert tags["compared_to_version"] == versions[0]
    assert float(tags["champion_value"]) == 0.69
    assert float(tags["new_value"]) == 0.70
    assert tags["window"] == WINDOW_A
    assert float(tags[eval_tag("log_loss", WINDOW_A)]) == 0.70

    better = promote(versions[2], 0.65)
    assert better["promoted"] and better["champion_version"] == versions[0]
    champion_version, champion_tags = tracker.champion(name)
    assert champion_version == versions[2]
    assert champion_tags["promoted"] == "true"

    tie = promote(versions[3], 0.65)
    assert tie["promoted"], "an equal value is no worse"
    assert tracker.champion(name)[0] == versions[3]


def test_promotion_higher_is_better_and_nan(tracker: Tracker) -> None:
    name = "lgbm-higher"
    v1, v2, v3 = (
        tracker.register_version(name, dummy_run(tracker, f"{name}-{i}")) for i in range(3)
    )
    kw = {"metric": "auc", "higher_is_better": True, "window": WINDOW_A}
    assert promote_if_no_worse(tracker, name, v1, value=0.55, **kw)["promoted"]
    assert not promote_if_no_worse(tracker, name, v2, value=0.54, **kw)["promoted"]
    nan = promote_if_no_worse(tracker, name, v3, value=float("nan"), **kw)
    assert not nan["promoted"] and "NaN" in nan["reason"]
    assert promote_if_no_worse(tracker, name, v3, value=0.56, **kw)["promoted"]
    assert tracker.champion(name)[0] == v3


def test_different_window_is_not_compared_blindly(tracker: Tracker, reader: MlflowClient) -> None:
    name = "deep-windows"
    v1, v2 = (tracker.register_version(name, dummy_run(tracker, f"{name}-{i}")) for i in range(2))
    kw = {"metric": "log_loss", "higher_is_better": False}
    promote_if_no_worse(tracker, name, v1, value=0.69, window=WINDOW_A, **kw)

    blind = promote_if_no_worse(tracker, name, v2, value=0.10, window=WINDOW_B, **kw)
    assert blind["promoted"] is False
    assert blind["reason"] == "kept champion: windows differ"
    assert blind["champion_version"] == v1 and blind["champion_value"] is None
    assert tracker.champion(name)[0] == v1
    assert reader.get_model_version(name, v2).tags["champion_value"] == ""

    # Once the champion is evaluated on window B too, the values are comparable.
    tracker.tag_version(name, v1, evaluation_tags(metric="log_loss", window=WINDOW_B, value=0.68))
    fair = promote_if_no_worse(tracker, name, v2, value=0.10, window=WINDOW_B, **kw)
    assert fair["promoted"] and fair["champion_value"] == 0.68
    assert tracker.champion(name)[0] == v2


def test_promote_champion_scores_the_champion_on_a_new_window_once(tracker: Tracker) -> None:
    name = "scored-once"
    v1, v2, v3 = (
        tracker.register_version(name, dummy_run(tracker, f"{name}-{i}")) for i in range(3)
    )
    scored: list[str] = []

    def score(version: str) -> float:
        scored.append(version)
        return 0.60

    assert promote_champion(tracker, name, v1, value=0.69, window=WINDOW_A, score_version=score)[
        "promoted"
    ]
    assert scored == []  # no champion to score
    kept = promote_champion(tracker, name, v2, value=0.65, window=WINDOW_B, score_version=score)
    assert scored == [v1] and not kept["promoted"] and kept["champion_value"] == 0.60
    again = promote_champion(tracker, name, v3, value=0.55, window=WINDOW_B, score_version=score)
    assert scored == [v1], "the champion's value on window B is recorded, not recomputed"
    assert again["promoted"] and tracker.champion(name)[0] == v3

"""The ensemble and the decision policy published with a champion pair (behind the
``ensemble_weights`` asset): the LightGBM weight of the two champions, fitted on the newest
walk-forward layout's validation bars, and the decision engine's policy chosen on its validation
and calibration bars (``core.evaluation.decision_walk.champion_decision``), both scored on its
test bars and written together to ``models/{symbol}/ensemble.json``, which names the champion
versions they belong to. The publisher reads both from there."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from levibot_pipelines.adapters.home import ensemble_weights_path
from levibot_pipelines.adapters.registry import load_lgbm, load_transformer, model_name
from levibot_pipelines.adapters.store import write_text_atomic
from levibot_pipelines.adapters.tracking import Tracker
from levibot_pipelines.core.evaluation.decision_walk import champion_decision
from levibot_pipelines.core.evaluation.fitting import window_label
from levibot_pipelines.core.evaluation.rules import reversal_probability, rule_strength
from levibot_pipelines.core.evaluation.selection import decision_from_dict
from levibot_pipelines.core.evaluation.walk_forward import RET_1, EvalConfig, SymbolData
from levibot_pipelines.core.metrics import log_loss
from levibot_pipelines.core.models.ensemble import fit_ensemble_weight
from levibot_pipelines.core.models.inference import (
    ensemble_outputs,
    lgbm_outputs,
    transformer_outputs,
)
from levibot_pipelines.core.trading.backtest import CostModel
from levibot_pipelines.core.trading.decision import flat_policy, round_trip_cost_bps
from levibot_pipelines.core.trading.live import EngineInputs
from levibot_pipelines.settings import Settings
from levibot_pipelines.usecases.report import backtest_config, policy_config
from levibot_pipelines.usecases.train import newest_layout

ENSEMBLE_FORMULA = "w_t = w c_lgbm / (w c_lgbm + (1 - w) c_deep); p = w_t p_lgbm + (1 - w_t) p_deep"


@dataclass(frozen=True)
class DecisionSetup:
    """What the decision engine is chosen with: the symbol's ``costs``, the ``horizons`` grid
    (LEVIBOT_HORIZONS), whether it may short, and the position ``size`` it is scored at."""

    costs: CostModel
    horizons: tuple[int, ...]
    allow_short: bool
    size: float


def decision_setup(s: Settings, symbol: str) -> DecisionSetup:
    """The configured setup of ``symbol``: its costs, LEVIBOT_HORIZONS, LEVIBOT_ALLOW_SHORT and
    the maximum position size, as ``levibot evaluate`` scores the engine."""
    return DecisionSetup(
        costs=backtest_config(s, symbol).costs,
        horizons=s.trading.horizons,
        allow_short=s.trading.allow_short,
        size=policy_config(s).max_size,
    )


def _champion_versions(tracker: Tracker, symbol: str) -> dict[str, str]:
    """``{"lgbm": version, "deep": version}`` of the champions of ``symbol``."""
    versions = {}
    for kind in ("lgbm", "deep"):
        champ = tracker.champion(model_name(kind, symbol))
        if champ is None:
            raise ValueError(
                f"no champion for {model_name(kind, symbol)}: materialize {kind} models first"
            )
        versions[kind] = champ[0]
    return versions


def fit_champion_ensemble(
    tracker: Tracker,
    home: Path,
    data: SymbolData,
    cfg: EvalConfig,
    *,
    tf_ms: int,
    bars: pl.DataFrame,
    decision: DecisionSetup,
    versions: dict[str, str] | None = None,
) -> dict:
    """Ensemble weight of the two champions, fitted on the newest layout's validation bars and
    scored on its test bars, and the decision policy published with them
    (``core.evaluation.decision_walk.champion_decision``: chosen on the val and calib bars,
    checked on the test bars, on the symbol's candles ``bars``); written to
    ``models/{symbol}/ensemble.json`` and returned. ``versions`` (``{"lgbm": v, "deep": v}``)
    fits that pair instead of the champions: the shadow promotion fits the pair it is about to
    make champion (``usecases.shadow_promotion``)."""
    rows = newest_layout(data, cfg, tf_ms)
    versions = versions or _champion_versions(tracker, data.symbol)
    booster, cal_l = load_lgbm(tracker, model_name("lgbm", data.symbol), versions["lgbm"])
    model, cal_d = load_transformer(tracker, model_name("deep", data.symbol), versions["deep"])
    model.set_precision(cfg.precision)  # this machine's, as the models trained
    out = {}
    for part in ("val", "calib", "test"):
        p_l, c_l = lgbm_outputs(booster, cal_l, data.X[rows[part]])
        deep = transformer_outputs(
            model, cal_d, data.X, rows[part], n_samples=cfg.mc_samples, seed=cfg.seed
        )
        out[part] = (p_l, c_l, deep)
    w = fit_ensemble_weight(out["val"][0], out["val"][2]["p_up"], data.y_up[rows["val"]])
    strength = rule_strength(data.X[rows["train"], RET_1], data.y_up[rows["train"]])
    parts = {}
    for part, (p_l, c_l, deep) in out.items():
        p_e, _, _ = ensemble_outputs(p_l, c_l, deep["p_up"], deep["confidence"], w)
        parts[part] = pl.DataFrame(
            {
                "timestamp": data.timestamps[rows[part]],
                "p_lgbm": p_l,
                "p_deep": deep["p_up"],
                "p_ensemble": p_e,
                "p_reversal": reversal_probability(data.X[rows[part], RET_1], strength),
                "epistemic_p": deep["epistemic_p"],
            }
        )
    chosen = champion_decision(
        parts,
        bars,
        decision.costs,
        horizons=decision.horizons,
        allow_short=decision.allow_short,
        size=decision.size,
    )
    y_test, test = data.y_up[rows["test"]], parts["test"]
    result = {
        "symbol": data.symbol,
        "w_lgbm": w,
        "formula": ENSEMBLE_FORMULA,
        "lgbm_version": versions["lgbm"],
        "deep_version": versions["deep"],
        "fitted_on": window_label(data.timestamps, {"test": rows["val"]}),
        "test_window": window_label(data.timestamps, rows),
        "test_log_loss": {
            name: log_loss(y_test, test.get_column(f"p_{name}").to_numpy())
            for name in ("lgbm", "deep", "ensemble")
        },
        "decision": {
            **chosen,
            "reversal_strength": strength,
            "chosen_on": {
                "fit": window_label(data.timestamps, {"test": rows["val"]}),
                "score": window_label(data.timestamps, {"test": rows["calib"]}),
            },
        },
    }
    write_text_atomic(json.dumps(result, indent=2), ensemble_weights_path(home, data.symbol))
    return result


def champion_pair(
    home: Path, symbol: str, lgbm_version: str, deep_version: str, notes: list[str]
) -> dict:
    """``models/{symbol}/ensemble.json`` (``usecases.ensemble``): the weight ``w_lgbm`` and the
    decision policy of ``symbol``; a note when it was fitted for other versions than the
    champions ``lgbm_version`` / ``deep_version`` (it is used anyway)."""
    pair = json.loads(ensemble_weights_path(home, symbol).read_text())
    if (pair.get("lgbm_version"), pair.get("deep_version")) != (lgbm_version, deep_version):
        notes.append(
            f"{symbol}: ensemble weight and decision policy were fitted for lgbm "
            f"v{pair.get('lgbm_version')} / deep v{pair.get('deep_version')}, champions are "
            f"v{lgbm_version} / v{deep_version}"
        )
    return pair


NO_POLICY = "no decision policy stored with the champions: materialize ensemble_weights"


def engine_inputs(costs: CostModel, pair: dict, row: dict, ret_1: float) -> EngineInputs:
    """The stored policy (FLAT with ``NO_POLICY`` when ``pair`` has none, e.g. written before
    the decision engine; ``costs``: the symbol's) and its model's score and uncertainty on a
    published ``row`` whose bar's one-bar log return is ``ret_1``: the
    calibrated P(up) of ``lgbm`` / ``deep`` / ``ensemble`` (the last two with the MC std of the
    deep P(up)) or the reversal rule's, with its stored strength."""
    stored = pair.get("decision")
    if stored is None:
        cost = round_trip_cost_bps(costs)
        return EngineInputs(flat_policy(cost, NO_POLICY), None, math.nan)
    policy, emap = decision_from_dict(stored)
    unc = math.sqrt(row["deep_epistemic_p"])
    scores = {
        "lgbm": (row["lgbm_p_up"], None),
        "deep": (row["deep_p_up"], unc),
        "ensemble": (row["ensemble_p_up"], unc),
        "reversal": (float(reversal_probability(ret_1, stored["reversal_strength"])), None),
    }
    score, uncertainty = scores.get(policy.model, (math.nan, None))
    return EngineInputs(policy, emap, score, uncertainty)


def policy_line(decision: dict) -> str:
    """One line for people on the stored ``decision`` (``fit_champion_ensemble``'s), e.g.
    ``"flat: no validated edge after costs (0 of 49 candidates passed; best lgbm@16+0bps,
    t=1.20)"`` or ``"ensemble over 16 bars, margin 5 bps (2 of 49 candidates passed); on the
    test bars: net +1.20% in 23 trades"``."""
    policy, n = decision["policy"], decision["n_candidates"]
    passed = f"{decision['candidates_passed']} of {n} candidates passed"
    if policy["model"] == "flat":
        best = decision.get("best")
        tail = "" if best is None else f"; best {best}, t={decision['best_t_stat']:.2f}"
        return f"flat: {policy['reason']} ({passed}{tail})"
    test = decision["test"]
    return (
        f"{policy['model']} over {policy['horizon']} bars, margin {policy['margin_bps']:g} bps "
        f"({passed}); on the test bars: net {test['net_return']:+.2%} in {test['n_trades']} "
        "trades"
    )

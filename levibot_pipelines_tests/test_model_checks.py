"""What `calibration_and_skill` warns about: real problems, not noise-level differences."""

from levibot_pipelines.defs.model_checks import skill_problems


def metrics(ll_lgbm=0.6915, ll_deep=0.6920, ll_ens=0.6915, ece=0.01, bss=0.001) -> dict:
    one = {"ece": ece, "bss": bss}
    return {
        "lgbm": {**one, "log_loss": ll_lgbm},
        "deep": {**one, "log_loss": ll_deep},
        "ensemble": {**one, "log_loss": ll_ens},
    }


def test_an_ensemble_worse_by_noise_is_not_a_problem():
    # The demo's case: 0.69157 vs 0.69151, a 6e-5 difference on 200 bars.
    assert skill_problems(metrics(ll_lgbm=0.69151, ll_ens=0.69157)) == []


def test_an_ensemble_clearly_worse_than_its_best_member_is():
    # 0.6930 - 0.6915 = 0.0015 > the 0.001 tolerance.
    assert skill_problems(metrics(ll_ens=0.6930)) == [
        "ensemble log loss 0.69300 > best member 0.69150"
    ]


def test_miscalibration_and_negative_skill_are_named_per_model():
    problems = skill_problems(metrics(ece=0.03, bss=-0.002))
    assert "lgbm: ECE 0.0300 > 0.02" in problems and "deep: BSS -0.0020 < 0" in problems
    assert len(problems) == 6

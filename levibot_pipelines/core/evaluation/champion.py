"""Champion promotion: does a newly registered model version take the ``champion`` alias?

The rule compares like for like: the new version's value of the decision metric on a test
window against the champion's value on that SAME window. The alias moves when

- there is no champion yet, or the new version already holds the alias;
- both values exist and the new one is no worse (ties promote), or the champion's is NaN.

It stays when the champion has no value for the window ("windows differ": values from
different windows are never compared), when the new value is NaN, or when it is worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """Whether the alias moves, and why (the text stored on the version as its ``decision``)."""

    promoted: bool
    reason: str


def champion_should_move(
    new_value: float,
    champion_value: float | None,
    *,
    metric: str,
    higher_is_better: bool,
    new_version: str,
    champion_version: str | None,
) -> Decision:
    """The promotion decision for ``new_version`` scoring ``new_value`` on ``metric``.

    ``champion_version`` is the version holding the alias (``None``: no champion) and
    ``champion_value`` its ``metric`` on the same test window (``None``: never evaluated there).
    """
    if not metric:
        raise ValueError(f"metric must be a non-empty name, got {metric!r}")
    if champion_version is None:
        return Decision(True, "promoted: no champion yet")
    if str(champion_version) == str(new_version):
        return Decision(True, "promoted: already champion")
    if champion_value is None:
        return Decision(False, "kept champion: windows differ")
    return _compare(metric, float(new_value), float(champion_value), higher_is_better)


def _compare(metric: str, value: float, champion_value: float, higher_is_better: bool) -> Decision:
    direction = "higher" if higher_is_better else "lower"
    if math.isnan(value):
        return Decision(False, f"kept champion: new {metric} is NaN")
    if math.isnan(champion_value):
        return Decision(True, f"promoted: champion {metric} is NaN")
    no_worse = value >= champion_value if higher_is_better else value <= champion_value
    verdict = "no worse than" if no_worse else "worse than"
    head = "promoted" if no_worse else "kept champion"
    return Decision(
        no_worse,
        f"{head}: {metric} {value:.6g} {verdict} champion {champion_value:.6g} "
        f"({direction} is better)",
    )

"""The grant rule every backend shares: never more than is left, and the whole-answer hold of a
call not streamed only while it is a small share of what is left."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra import Tier
from orchestra.spend.ledger import Ask, Refusal, SpendTotals
from orchestra.store.ledger_rules import WHOLE_SHARE, grant

usd = st.floats(0.0, 10.0, allow_nan=False)


def ask(min_usd: float, want_usd: float, whole_usd: float | None, daily: float | None) -> Ask:
    return Ask(model="m", tier=Tier.CLOUD, request_id="r", min_usd=min_usd, want_usd=want_usd,
               daily_usd=daily, monthly_usd=None, lease_s=60.0, whole_usd=whole_usd)  # fmt: skip


@given(least=usd, more=usd, whole=st.one_of(st.none(), usd), spent=usd, held=usd, daily=usd)
def test_a_grant_never_exceeds_what_is_left(
    least: float, more: float, whole: float | None, spent: float, held: float, daily: float
) -> None:
    want = least + more
    got = grant(ask(least, want, whole, daily), SpendTotals(today_usd=spent), held)
    left = daily - spent - held
    if least > left + 1e-12:
        assert isinstance(got, Refusal) and got.limit == "daily"
        return
    assert not isinstance(got, Refusal)
    assert least <= got <= max(left, least)
    if whole is not None and whole > want and got > want:
        assert got == whole <= WHOLE_SHARE * left + 1e-12


def test_the_whole_answer_is_held_while_it_is_a_small_share_of_what_is_left() -> None:
    totals = SpendTotals(today_usd=0.0)
    assert grant(ask(0.01, 0.02, 0.25, daily=1.0), totals, 0.0) == pytest.approx(0.25)
    # $0.60 held elsewhere: $0.40 left, of which $0.25 is too large a share: the cap is held.
    assert grant(ask(0.01, 0.02, 0.25, daily=1.0), totals, 0.6) == pytest.approx(0.02)

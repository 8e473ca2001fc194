"""The offer state machine shared by draws and takebacks (broker/offers.py)."""

from __future__ import annotations

import itertools

import pytest

from xlmate.broker.offers import Offers, Outcome, answer
from xlmate.constants import COLORS, Color
from xlmate.messages import OFFER_ACTIONS, OfferAction

W, B = "white", "black"

# Every (standing offer, who acts, action) -> (outcome, offer standing after), written out.
TABLE: dict[tuple[Color | None, Color, OfferAction], tuple[Outcome, Color | None]] = {
    (None, W, "offer"): (Outcome.OFFERED, W),
    (None, W, "accept"): (Outcome.NO_OFFER, None),
    (None, W, "decline"): (Outcome.NO_OFFER, None),
    (None, B, "offer"): (Outcome.OFFERED, B),
    (None, B, "accept"): (Outcome.NO_OFFER, None),
    (None, B, "decline"): (Outcome.NO_OFFER, None),
    (W, W, "offer"): (Outcome.REPEATED, W),
    (W, W, "accept"): (Outcome.NO_OFFER, W),
    (W, W, "decline"): (Outcome.NO_OFFER, W),
    (W, B, "offer"): (Outcome.ACCEPTED, None),
    (W, B, "accept"): (Outcome.ACCEPTED, None),
    (W, B, "decline"): (Outcome.DECLINED, None),
    (B, B, "offer"): (Outcome.REPEATED, B),
    (B, B, "accept"): (Outcome.NO_OFFER, B),
    (B, B, "decline"): (Outcome.NO_OFFER, B),
    (B, W, "offer"): (Outcome.ACCEPTED, None),
    (B, W, "accept"): (Outcome.ACCEPTED, None),
    (B, W, "decline"): (Outcome.DECLINED, None),
}


def test_the_table_covers_every_input() -> None:
    """Each standing offer, side and action appears once in the table."""
    assert set(TABLE) == set(itertools.product((None, *COLORS), COLORS, OFFER_ACTIONS))


@pytest.mark.parametrize(("standing", "color", "action"), sorted(TABLE, key=str))
def test_every_transition_is_the_documented_one(
    standing: Color | None, color: Color, action: OfferAction
) -> None:
    """answer() gives exactly the table's outcome and resulting offer."""
    assert answer(standing, color, action) == TABLE[(standing, color, action)]


def test_a_draw_offer_lapses_when_the_opponent_moves_and_a_takeback_when_the_offerer_does() -> None:
    """after_move: the draw offer survives its offerer's move, the takeback offer its opponent's."""
    offers = Offers(draw=W, takeback=W)
    offers.after_move(W)
    assert (offers.draw, offers.takeback) == (W, None)
    offers = Offers(draw=W, takeback=W)
    offers.after_move(B)
    assert (offers.draw, offers.takeback) == (None, W)


def test_offers_are_kept_per_kind_and_cleared_together() -> None:
    """set/standing address one kind; clear drops both; as_dict is what sync shows."""
    offers = Offers()
    offers.set("draw", B)
    offers.set("takeback", W)
    assert (offers.standing("draw"), offers.standing("takeback")) == (B, W)
    assert offers.as_dict() == {"draw": B, "takeback": W}
    offers.clear()
    assert offers.as_dict() == {"draw": None, "takeback": None}

"""The offer state machine shared by draw and takeback offers (pure, no chess).

A game has at most one standing offer of each kind, made by one side.  The
rules (docs/game-rules.md) are the same for both kinds, so they live here
once as a transition table:

=========================  ============================  ===================
standing offer             ``action`` by ``color``       outcome, then stands
=========================  ============================  ===================
none                       offer                         OFFERED, ``color``
``color``'s own            offer                         REPEATED (no event)
the opponent's             offer                         ACCEPTED, none
the opponent's             accept                        ACCEPTED, none
the opponent's             decline                       DECLINED, none
none or ``color``'s own    accept / decline              NO_OFFER (refused)
=========================  ============================  ===================

Offering against the opponent's standing offer accepts it.  What an outcome
does to the game (ending it in a draw, taking moves back, refusing an offer
when there is no move to take back) is the caller's: ``broker.game``.

Offers also lapse without an answer (``Offers.after_move``): a draw offer when
the offerer's opponent moves (the offer was declined by playing on), a
takeback offer when the offerer moves on (there is a new move to take back).
Both die when the game ends or a takeback is accepted (``Offers.clear``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from xlmate.constants import Color, other
from xlmate.messages import OfferAction

OfferKind = Literal["draw", "takeback"]


class Outcome(Enum):
    """What one answer does to an offer."""

    OFFERED = "offer"  # a new offer stands: publish it
    REPEATED = "repeat"  # the same side offered again: nothing happens
    ACCEPTED = "accept"  # the opponent's offer is taken: the caller acts on it
    DECLINED = "decline"  # the opponent's offer is refused: publish that
    NO_OFFER = "no_offer"  # accept/decline with no opponent's offer standing: refuse


def answer(
    standing: Color | None, color: Color, action: OfferAction
) -> tuple[Outcome, Color | None]:
    """The outcome of ``action`` by ``color`` against ``standing``, and the offer after it."""
    if action == "offer":
        if standing == color:
            return Outcome.REPEATED, standing
        if standing is None:
            return Outcome.OFFERED, color
        action = "accept"  # offering against a standing offer accepts it
    if standing != other(color):
        return Outcome.NO_OFFER, standing
    if action == "decline":
        return Outcome.DECLINED, None
    return Outcome.ACCEPTED, None


@dataclass(slots=True)
class Offers:
    """The standing offers of one game: who offered a draw, who a takeback."""

    draw: Color | None = None
    takeback: Color | None = None

    def standing(self, kind: OfferKind) -> Color | None:
        """Who stands behind the offer of ``kind``, if anyone."""
        return self.draw if kind == "draw" else self.takeback

    def set(self, kind: OfferKind, by: Color | None) -> None:
        """Record the offer of ``kind`` that stands after an answer."""
        if kind == "draw":
            self.draw = by
        else:
            self.takeback = by

    def after_move(self, mover: Color) -> None:
        """Let offers lapse after ``mover`` moved (see the module docstring)."""
        if self.draw is not None and self.draw != mover:
            self.draw = None
        if self.takeback == mover:
            self.takeback = None

    def clear(self) -> None:
        """No offer stands (the game ended, or a takeback was accepted)."""
        self.draw = None
        self.takeback = None

    def as_dict(self) -> dict[str, Color | None]:
        """``{"draw": color | None, "takeback": color | None}`` as ``sync`` shows it."""
        return {"draw": self.draw, "takeback": self.takeback}

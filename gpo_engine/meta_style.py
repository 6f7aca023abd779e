"""How the optimizer model is asked, chosen once per optimizer model.

A chat model follows instructions: it gets the meta-prompt as one user
message and is shown up to MAX_EXEMPLARS answers of the task model. A base
model (the embedded ones) continues patterns instead: it gets a document that
ends inside the prompt it is to write (after <START>), so its answer starts
there; it is shown two exemplars, one short line each, since the embedded
model has a 2048-token context; it writes one instruction per line and runs
on past <END>, so its calls stop at a line break as well.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpo_engine.direction import ScoredPrompt
from gpo_engine.meta_prompts import (
    END,
    Exemplar,
    Messages,
    base_meta_prompt,
    base_revision_request,
    chat_meta_prompt,
    chat_revision_request,
    pick_exemplars,
)
from gpo_engine.models import is_base_model

MAX_EXEMPLARS = 3  # exemplars a chat model is shown

# (current, direction, shown exemplars, budget) -> the step's request
MetaBuilder = Callable[[str, Sequence[ScoredPrompt], Sequence[Exemplar], int], Messages]
# (candidate, current, budget, distance) -> the request to shorten the candidate
RevisionBuilder = Callable[[str, str, int, int], Messages]


@dataclass(frozen=True)
class MetaStyle:
    name: str  # "chat" | "base"
    exemplars: int  # how many answers of the task model the meta-prompt shows
    # The requests end after <START>, so an answer starts inside the prompt.
    # Such a model also copies the "(score N)" notes of the listed prompts,
    # which screening removes.
    prefilled: bool
    stop: tuple[str, ...]  # stop sequences of the optimizer calls
    build_meta: MetaBuilder = field(repr=False)
    build_revision: RevisionBuilder = field(repr=False)

    @staticmethod
    def for_model(model: str) -> MetaStyle:
        """The style the optimizer model `model` is asked in."""
        return BASE if is_base_model(model) else CHAT

    def meta_prompt(
        self,
        current: str,
        direction: Sequence[ScoredPrompt],
        exemplars: Sequence[Exemplar],
        budget: int,
    ) -> Messages:
        """The optimizer's input for one step.

        `direction` is what direction.retrieve returned (ascending scores, the
        current prompt last); `exemplars` may be the whole train minibatch: the
        first `self.exemplars` wrong answers (then right ones) are shown.
        """
        return self.build_meta(current, direction, pick_exemplars(exemplars, self.exemplars),
                               budget)

    def revision_request(self, candidate: str, current: str, budget: int,
                         distance: int) -> Messages:
        """Ask once to bring an over-budget candidate back within the budget."""
        return self.build_revision(candidate, current, budget, distance)


CHAT = MetaStyle("chat", MAX_EXEMPLARS, prefilled=False, stop=(END,),
                 build_meta=chat_meta_prompt, build_revision=chat_revision_request)
BASE = MetaStyle("base", 2, prefilled=True, stop=(END, "\n"),
                 build_meta=base_meta_prompt, build_revision=base_revision_request)

"""What a finished call is charged: the provider's usage, checked against the text itself.

A provider's reported usage is the truth unless the text proves it wrong. Two bounds decide:

- **Too little.** Fewer tokens reported than `least_tokens` finds in the text sent or received
  (a count no common tokenizer goes below) cannot be true: that side is charged at the local
  count, which errs high, and the usage is marked estimated.
- **Too much.** More prompt tokens than `most_prompt_tokens` allows (a token per byte sent, and
  the template's), or more answer tokens than any model gives in one call
  (`MOST_ANSWER_TOKENS`: hidden reasoning counts, so the text is no bound), cannot be true
  either: counted locally the same way. A provider's absurd figure never charges the budget,
  nor makes a record the store cannot hold.
- **Past the cap.** More answer tokens than the cap the call was sent are charged at the cap when
  the text does not prove the provider ran past it (the count is another tokenizer's, or ours);
  when it does, the provider ignored the cap: its reported usage is charged, or, with none to
  trust, the least the text holds.

`AnswerMeter` watches a stream for the second case as it arrives, so a paid call can be cut the
moment its text provably passes its cap: what is never received is never generated (providers
stop generating when the connection closes), so the budget's reservation stays the worst case.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from orchestra.core.model_spec import ModelSpec
from orchestra.core.request import Message
from orchestra.core.result import Usage
from orchestra.spend.estimate import (
    TOKENS_PER_MESSAGE,
    cost_usd,
    count_tokens,
    least_tokens,
    most_prompt_tokens,
)

log = logging.getLogger("orchestra.spend")

# More answer tokens than any model gives in one call (the longest outputs, hidden reasoning
# included, are about 10^5): a report past this is not a count.
MOST_ANSWER_TOKENS = 10_000_000


def settle_usage(
    spec: ModelSpec,
    usage: Usage,
    text: str,
    messages: Sequence[Message],
    cap: int | None,
) -> Usage:
    """The usage to charge for `text` answered to `messages` under answer cap `cap`."""
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    estimated = usage.estimated
    if not sum(least_tokens(m.content) for m in messages) <= prompt <= most_prompt_tokens(messages):
        prompt = sum(count_tokens(m.content) + TOKENS_PER_MESSAGE for m in messages) + 1
        estimated = True
    least = least_tokens(text)
    if not least <= completion <= MOST_ANSWER_TOKENS:
        completion = count_tokens(text)
        estimated = True
    if cap is not None and completion > cap:
        if least <= cap:  # only a count (ours, or another tokenizer's) is past it
            completion = cap
        elif estimated:  # provably past the cap, and nothing trustworthy says by how much
            completion = least
        else:
            log.warning(
                "%s ran past its cap of %d answer tokens (%d reported): charged as reported",
                spec.name, cap, completion,
            )  # fmt: skip
    if estimated and not usage.estimated:
        log.warning(
            "%s reported %d prompt and %d answer tokens for a text of at least %d and %d: "
            "charged %d and %d, counted here",
            spec.name, usage.prompt_tokens, usage.completion_tokens,
            sum(least_tokens(m.content) for m in messages), least, prompt, completion,
        )  # fmt: skip
    if (prompt, completion) == (usage.prompt_tokens, usage.completion_tokens):
        return usage
    cost = cost_usd(spec, prompt, completion)
    if cost is None:  # price unknown here: scale the provider's figure
        reported = usage.prompt_tokens + usage.completion_tokens
        cost = usage.cost_usd * (prompt + completion) / reported if reported else usage.cost_usd
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, estimated=estimated
    )


class AnswerMeter:
    """Counts a streamed answer's least tokens piece by piece (a word split across two pieces
    counted once) and says when it has provably passed `cap`."""

    __slots__ = ("_open_word", "cap", "least")

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.least = 0
        self._open_word = False

    @property
    def reached(self) -> bool:
        """The answer holds at least `cap` tokens: an honest provider has sent all of it."""
        return self.cap is not None and self.least >= self.cap

    def add(self, piece: str) -> bool:
        """Count `piece`; True once the answer has passed its cap."""
        if not piece:
            return False
        n = least_tokens(piece)
        if n and self._open_word and not piece[0].isspace():
            n -= 1  # the previous piece ended mid-word: one word, not two
        self.least += n
        self._open_word = not piece[-1].isspace()
        return self.cap is not None and self.least > self.cap

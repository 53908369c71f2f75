"""One process's replay: stored requests read in batches, decided again, counted.

Policies are pure, so a stored request (its hints, prompt features and agents' verdicts) is all a
policy needs to decide it again. `replay_part` reads the store's rows (one part of them, see
`Store.replay_batches`), rebuilds what the policies read, and counts each policy's decision into
its `PolicyReport`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson

import orchestra.store.complexity_form as complexity_form
from orchestra.core.catalog import Catalog
from orchestra.core.decision import Candidate
from orchestra.core.errors import NoAllowedModelError, OrchestraError
from orchestra.core.paused_gc import paused_gc
from orchestra.core.request import Message, Request
from orchestra.core.tier import ALL_TIERS, Tier
from orchestra.core.trusted import trusted
from orchestra.core.verdict import Verdict
from orchestra.lab.report import PolicyReport
from orchestra.policies.base import Policy, decide_checked
from orchestra.policies.routing import router
from orchestra.spend.estimate import TOKENS_PER_MESSAGE, messages_tokens
from orchestra.store import Store
from orchestra.store.record import features_of

BATCH = 5_000
REFUSED = "NoAllowedModelError"  # the error_kind the runtime records for a refused request
PLACEHOLDER = Message(role="user", content="[replayed: the prompt text was not stored]")


class ReplayedRequest(Request):
    """A stored request rebuilt for a policy: hints and prompt features, not the prompt text.

    `messages` is the stored transcript when prompts were kept (`[store] keep_prompts`), else one
    placeholder message; `features` is the prompt's stored shape (chars, words, lines, messages).
    """

    features: dict[str, int] = {}
    created_at: float = 0.0


async def replay_part(
    store: Store,
    catalog: Catalog,
    policies: Sequence[Policy],
    since: float | None,
    limit: int | None,
    part: tuple[int, int],
    counted: Callable[[int], None] | None = None,
) -> list[PolicyReport]:
    """`replay` of one part of the stored requests (see `Store.replay_batches`), in this
    process; `counted(n)` after each batch of `n`."""
    reports = [PolicyReport(policy=p.name) for p in policies]
    tally = _Tally(catalog, policies)
    builder = _Builder(exact=tally.exact)
    with paused_gc():  # a batch job: see `paused_gc`
        async for batch in store.replay_batches(since, limit, BATCH, part):
            shared = batch.shared
            for row, detail in zip(batch.requests, batch.details, strict=True):
                request = builder.request(row) if tally.exact else builder.shape(row)
                verdicts = builder.verdicts(detail, shared)
                tally.count(reports, row, request, verdicts, builder.live_key(detail, shared))
            if counted is not None:
                counted(len(batch.requests))
    return reports


class _Tally:
    """Counts stored requests into the policies' reports."""

    def __init__(self, catalog: Catalog, policies: Sequence[Policy]) -> None:
        self.catalog = catalog
        self.policies = policies
        self.routers = [router(p) for p in policies]
        self.exact = any(r is None for r in self.routers)
        self.prices = {s.name: (s.input_cost_per_mtok, s.output_cost_per_mtok) for s in catalog}
        # (target, candidates) -> (candidates, their key): candidates are mostly built once by
        # the policies, so the key is too; the entry keeps the tuple alive (keyed by identity).
        self._keys: dict[tuple[Tier | None, int], tuple[Any, tuple[Any, ...]]] = {}

    def count(
        self,
        reports: list[PolicyReport],
        row: tuple[Any, ...],
        request: Request,
        verdicts: list[Verdict],
        live_key: tuple[Any, ...] | None,
    ) -> None:
        """Count one stored request into each policy's report: what happened live (`live_key`:
        its decision's, see `_live_key`), then the policy's decision replayed."""
        (_, _, _, status, model, tier, cost, pt, ct, _, _, _, _, error_kind, _) = row  # fmt: skip
        answered = status == "ok" and model is not None
        answered_by = model if answered else None
        refused = error_kind == REFUSED
        metered = bool(pt or ct)
        if not metered:
            pt = _prompt_estimate(row)
        for policy, route, rep in zip(self.policies, self.routers, reports, strict=True):
            rep.requests += 1
            rep.actual_cost_usd += cost or 0.0
            if answered:
                rep.answered += 1
                rep.answer_tokens += ct or 0
                rep.actual_tier_counts[tier] = rep.actual_tier_counts.get(tier, 0) + 1
            if refused:
                rep.refused_live += 1
            if live_key is not None:
                rep.live_decisions += 1
            try:
                if route is None:
                    decision = decide_checked(policy, request, verdicts, self.catalog)
                    target, candidates = decision.target, decision.candidates
                else:
                    target, candidates = route(request, verdicts, self.catalog)
            except NoAllowedModelError:
                rep.no_allowed_model += 1
                rep.refused_again += refused
                continue
            except OrchestraError:
                rep.errors += 1
                continue
            except Exception:  # as decide_checked would say: a PolicyError
                if route is None:
                    raise
                rep.errors += 1
                continue
            first = candidates[0]
            self._score(rep, first.model, first.tier.value, pt, ct, metered, answered_by, tier)
            if live_key is not None:
                rep.decision_agreement += self._key(target, candidates) == live_key

    def _score(
        self,
        rep: PolicyReport,
        first: str,
        ftier: str,
        prompt_tokens: int,
        completion_tokens: int,
        metered: bool,
        answered_by: str | None,
        answered_tier: str | None,
    ) -> None:
        """Count one replayed decision (its first candidate's model and tier) into `rep`: its
        tier, estimated cost and agreement with what happened live (`answered_by`: the model
        that answered, None when none did). An unmetered request (no tokens stored) is costed
        apart: its prompt's estimate now, the mean answer length once every part is counted."""
        rep.decided += 1
        rep.tier_counts[ftier] = rep.tier_counts.get(ftier, 0) + 1
        pin, pout = self.prices.get(first, (None, None))
        if pin is None or pout is None:
            rep.unpriced += 1
        elif metered:
            rep.estimated_cost_usd += (prompt_tokens * pin + completion_tokens * pout) / 1e6
        else:
            rep.unmetered += 1
            rep.unmetered_prompt_usd += prompt_tokens * pin / 1e6
            rep.unmetered_usd_per_answer_token += pout / 1e6
        if answered_by is not None:
            rep.model_agreement += first == answered_by
            rep.tier_agreement += ftier == answered_tier

    def _key(self, target: Tier | None, candidates: tuple[Candidate, ...]) -> tuple[Any, ...]:
        """The decision's target and (model, tier) chain, comparable with `_live_key`."""
        memo = (target, id(candidates))
        found = self._keys.get(memo)
        if found is not None:
            return found[1]
        key = _decision_key(target, candidates)
        if len(self._keys) >= 4096:
            self._keys.clear()
        self._keys[memo] = (candidates, key)
        return key


def _prompt_estimate(row: tuple[Any, ...]) -> int:
    """A stored request's prompt tokens, estimated (none were counted live): the stored prompt's
    local count, else from its stored shape (a token per 4 characters, at least one a word)."""
    features, prompt = row[9], row[10]
    if prompt:
        messages = tuple(Message.model_validate(m) for m in json.loads(prompt))
        return messages_tokens(messages)
    f = features_of(features) if features else {}
    per_message = TOKENS_PER_MESSAGE * max(1, f.get("messages", 1))
    return max(f.get("words", 0), -(-f.get("chars", 0) // 4)) + per_message


def _decision_key(target: Tier | None, candidates: Sequence[Candidate]) -> tuple[Any, ...]:
    t = target.value if target is not None else None
    return (t, *((c.model, c.tier.value) for c in candidates))


def _live_key(decision: dict[str, Any]) -> tuple[Any, ...]:
    candidates = decision.get("candidates", ())
    return (decision.get("target"), *((c["model"], c["tier"]) for c in candidates))


_VERDICT_FIELDS = frozenset(Verdict.model_fields)
_REQUEST_FIELDS = frozenset(("id", "messages", "model", "tier", "features", "created_at"))


class _Builder:
    """Rows to `Request`s and `Verdict`s, fast: the first of each is validated, the rest are
    constructed without validation; repeated values (allowed tiers, features, shared verdicts)
    are built once."""

    def __init__(self, exact: bool = True) -> None:
        self._exact = exact
        self._shapes: dict[tuple[str | None, str | None], Request] = {}
        self._allowed: dict[tuple[str, ...], frozenset[Tier]] = {}
        self._shared: dict[tuple[str, float], Verdict] = {}  # exact: one per (ref, time)
        self._by_ref: dict[str, Verdict] = {}  # else one per ref
        self._base: dict[str, Verdict] = {}  # exact: a ref's first, to copy for other times
        self._parsed: dict[str, dict[str, Any]] = {}
        self._features: dict[str, dict[str, int]] = {}
        self._complexity: dict[tuple[Any, ...], Verdict] = {}
        self._live: dict[tuple[Any, str], tuple[Any, ...]] = {}
        self._checked_verdict = False
        self._checked_request = False
        self._request_defaults: dict[str, Any] = {}

    def verdicts(self, detail: dict[str, Any], shared: dict[str, str]) -> list[Verdict]:
        """A stored request's verdicts: inline ones built, ambient ones (references to a stored
        sample) built once per sample and shared by every request that saw it."""
        out: list[Verdict] = []
        known = self._by_ref  # built-in routes never read a verdict's time: one per ref
        # (filled only then)
        for v in detail.get("v", ()):
            if type(v) is list:  # format 3's own forms (see `decode_lean`)
                ref = v[0]
                if type(ref) is not str:
                    out.append(self.packed(v))
                    continue
                if (built := known.get(ref)) is not None:
                    out.append(built)
                    continue
                at = v[1]
            else:
                ref = v.get("ref")
                if ref is None:
                    out.append(self.verdict(v))
                    continue
                at = v.get("at", 0.0)
            built = self._timed(ref, at, shared) if self._exact else self._any_time(ref, shared)
            if built is not None:  # else a value lost with its file: replayed without it
                out.append(built)
        return out

    def _any_time(self, ref: str, shared: dict[str, str]) -> Verdict | None:
        """The shared verdict `ref`, built once whatever its time (for built-in routes)."""
        parsed = self.parsed(ref, shared)
        if parsed is None:
            return None
        built = self._by_ref[ref] = self.verdict(parsed)
        if len(self._by_ref) > 10_000:
            self._by_ref.clear()
        return built

    def _timed(self, ref: str, at: float, shared: dict[str, str]) -> Verdict | None:
        """The shared verdict `ref` at time `at`: built once per (ref, time), and from the
        same ref at another time by changing only its time."""
        key = (ref, at)
        built = self._shared.get(key)
        if built is not None:
            return built
        base = self._base.get(ref)
        if base is None:
            parsed = self.parsed(ref, shared)
            if parsed is None:
                return None
            built = self._base[ref] = self.verdict({**parsed, "at": at})
        else:
            built = trusted(Verdict, {**base.__dict__, "at": at}, _VERDICT_FIELDS)
        if len(self._shared) >= 10_000:  # times rarely recur once their sample is past
            self._shared.clear()
        if len(self._base) >= 10_000:
            self._base.clear()
        self._shared[key] = built
        return built

    def parsed(self, ref: str, shared: dict[str, str]) -> dict[str, Any] | None:
        """A shared value, parsed once however many requests refer to it."""
        value = self._parsed.get(ref)
        if value is None:
            text = shared.get(ref)
            if text is None:
                return None
            value = orjson.loads(text)
            if len(self._parsed) >= 100_000:  # full: start again
                self._parsed.clear()
            self._parsed[ref] = value
        return value

    def packed(self, packed: list[Any]) -> Verdict:
        """A complexity verdict stored packed (see `complexity_form`). Built-in routes read
        its score, never its signals nor its time: then one verdict per distinct rest."""
        if self._exact:
            return self.verdict(complexity_form.unpack(packed))
        key = (*packed[1:5], packed[6] if len(packed) > 6 else None)
        found = self._complexity.get(key)
        if found is None:
            found = self.verdict(complexity_form.unpack([0.0, *packed[1:5], None, *packed[6:]]))
            if len(self._complexity) >= 10_000:  # full: start again
                self._complexity.clear()
            self._complexity[key] = found
        return found

    def decision(self, detail: dict[str, Any], shared: dict[str, str]) -> dict[str, Any] | None:
        """The live decision (its candidates and target) of a stored request."""
        d = detail.get("d")
        if not isinstance(d, dict):
            return d
        c = d.get("candidates")
        if "ref" in d:  # format 1: the whole decision shared
            return self.parsed(d["ref"], shared)
        if isinstance(c, str):  # format 3's shared candidate list (see `decode_lean`)
            return {**d, "candidates": self.parsed(c, shared) or []}
        if isinstance(c, dict) and "ref" in c:
            return {**d, "candidates": self.parsed(c["ref"], shared) or []}
        return d

    def live_key(self, detail: dict[str, Any], shared: dict[str, str]) -> tuple[Any, ...] | None:
        """The live decision's `_live_key` (None when none was stored); one per distinct
        shared candidate list and target."""
        d = detail.get("d")
        if isinstance(d, dict) and isinstance(c := d.get("candidates"), str):
            memo = (d.get("target"), c)
            found = self._live.get(memo)
            if found is None:
                found = _live_key({"target": memo[0], "candidates": self.parsed(c, shared) or []})
                if len(self._live) >= 10_000:  # full: start again
                    self._live.clear()
                self._live[memo] = found
            return found
        live = self.decision(detail, shared)
        return _live_key(live) if live is not None else None

    def verdict(self, v: dict[str, Any]) -> Verdict:
        allowed, denied = v.get("allowed"), v.get("denied_models")
        target = v.get("target")
        fields = {
            "agent": v["agent"],
            "target": Tier(target) if target is not None else None,
            "allowed": ALL_TIERS if allowed is None else self._tiers(allowed),
            "denied_models": frozenset(denied) if denied else frozenset(),
            "confidence": v.get("confidence", 0.5),
            "state": v.get("state", "ok"),
            "reason": v.get("reason", ""),
            "metrics": v.get("metrics") or {},
            "at": v.get("at", 0.0),
            "stale": bool(v.get("stale", False)),
            "neutral": bool(v.get("neutral", False)),
        }
        if not self._checked_verdict:
            self._checked_verdict = True
            return Verdict.model_validate(fields)
        return trusted(Verdict, fields, _VERDICT_FIELDS)

    def _tiers(self, names: list[str]) -> frozenset[Tier]:
        key = tuple(names)
        found = self._allowed.get(key)
        if found is None:
            found = self._allowed[key] = frozenset(Tier(t) for t in names)
        return found

    def request(self, row: tuple[Any, ...]) -> Request:
        rid, created, features, prompt, forced_model, forced_tier = (
            row[1], row[2], row[9], row[10], row[11], row[12]
        )  # fmt: skip
        messages = (
            tuple(Message.model_validate(m) for m in json.loads(prompt))
            if prompt
            else (PLACEHOLDER,)
        )
        fields = {
            "id": rid,
            "messages": messages,
            "model": forced_model,
            "tier": Tier(forced_tier) if forced_tier else None,
            "features": f
            if (f := self._features.get(features)) is not None
            else self._parse_features(features),
            "created_at": created,
        }
        if not self._checked_request:
            self._checked_request = True
            valid = ReplayedRequest.model_validate(fields)
            self._request_defaults = {**valid.__dict__}
            return valid
        return trusted(ReplayedRequest, {**self._request_defaults, **fields}, _REQUEST_FIELDS)

    def shape(self, row: tuple[Any, ...]) -> Request:
        """A stored request's hints alone (forced model and tier), one request per distinct
        pair: enough for a built-in policy's route, which reads nothing else."""
        key = (row[11], row[12])
        found = self._shapes.get(key)
        if found is None:
            forced_model, forced_tier = key
            found = self._shapes[key] = ReplayedRequest(
                messages=(PLACEHOLDER,),
                model=forced_model,
                tier=Tier(forced_tier) if forced_tier else None,
            )
        return found

    def _parse_features(self, text: str) -> dict[str, int]:
        value = features_of(text)
        if len(self._features) >= 10_000:  # full: start again
            self._features.clear()
        self._features[text] = value
        return value

"""A request's detail as stored: its decision, verdicts and attempts in one compressed value.

One column instead of a row per verdict and per attempt: a request is one row (plus its ledger
rows when it cost money). The JSON is compressed with zlib and a preset dictionary of the words
every record repeats, so a small record shrinks too.

Most of a record repeats: an ambient agent's verdict is the same for every request until its
next sample, the cost agent says the same until spend moves, similar prompts get the same
decision. Such a value is stored once, in the `shared` table under a key made from its content,
and the detail holds `{"ref": key}` (plus the verdict's own time, `at`). A value is shared from
the second time it is seen; one seen once stays inline.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

from orchestra.core.decision import Decision
from orchestra.core.result import Attempt
from orchestra.core.tier import ALL_TIERS
from orchestra.core.verdict import Verdict

# Words that recur in every detail; zlib starts from them as if it had seen them (changing this
# string makes stored details unreadable: keep it, or version it with `_FORMAT`).
_ZDICT = (
    b'{"ref":"{"agent":"resource","connectivity","cost","complexity","privacy","target":"local",'
    b'"edge","cloud","allowed":["local","edge","cloud"],"confidence":"state":"ok","reason":"'
    b'"metrics":{"score":"signals":{"estimates_usd":{"today_usd":"month_usd":"left_usd":"at":'
    b'"stale":true,"neutral":true,"denied_models":[]},"policy":"default","candidates":[{"model":'
    b'"tier":"local"},"reason":"vote for local (local ","votes":{"excluded":[{"by":"request",'
    b'"ok":true,"latency_ms":"error_kind":"error":"status_code":"retry_in_s":"cached":false,'
    b'"skipped":false,"kinds":[],"simple","moderate","complex","no_budget","clean","sensitive"'
)
# 1: the decision inline or shared whole; 2: the decision inline, its candidate list inline or
# shared on its own (a long catalog's list repeats while the decision's reason and votes vary).
_FORMAT = 2
# Format 2 starts with this byte (its low bits, 111, can start no raw deflate stream, so a format
# 1 value, which has no marker, is told apart) and uses `_ZDICT_2`, which adds the names every
# complexity verdict and decision repeats.
_MARK_2 = b"\xff"
_ZDICT_2 = _ZDICT + (
    b'"log_chars":"log_words":"log_sentences":"words_per_sentence":"mean_word_len":'
    b'"long_word_frac":"capital_frac":"log_lines":"question_marks":"log_numbers":'
    b'"number_density":"decimals":"big_numbers":"percent":"scientific":"math_ops":"latex":'
    b'"units":"variables":"code_marks":"symbols":"symbol_density":"compute_words":'
    b'"explain_words":"sequence_words":"relation_words":"rate_words":"condition_words":'
    b'"constraint_words":"negation_words":"pronouns":"math_words":"science_words":"code_words":'
    b'"complexity score ","vote for edge (local ","vote for cloud (local "," step(s) from '
    b'"target tier, #1 in tier"}{"model":"m0","tier":"cloud","reason":"#1: '
)
# A candidate list this long is shared from the first time it is seen.
_SHARE_CANDIDATES_FROM = 8
_LEVEL = 6
# Verdict fields left out of a stored verdict when they hold their default.
_VERDICT_DEFAULTS: dict[str, Any] = {
    "target": None,
    "allowed": [t.value for t in sorted(ALL_TIERS)],
    "denied_models": [],
    "confidence": 0.5,
    "state": "ok",
    "reason": "",
    "metrics": {},
    "stale": False,
    "neutral": False,
}


def content_key(text: str) -> str:
    """The key a shared value is stored under: 16 bytes of its content's hash."""
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def compact_verdict(v: Verdict) -> dict[str, Any]:
    """A verdict as stored: JSON values, without `at` and without fields at their default."""
    full = v.model_dump(mode="json", fallback=str)
    return {k: x for k, x in full.items() if k != "at" and _VERDICT_DEFAULTS.get(k, ...) != x}


class Interner:
    """Decides what is shared: a value seen before (by its content) is stored once and referred
    to; remembers which keys it has stored, so each is written once per process. Writer thread
    only."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._seen: OrderedDict[str, bool] = OrderedDict()  # key -> already stored?
        self._texts: OrderedDict[int, tuple[Verdict, str]] = OrderedDict()

    def place(self, value: Any, text: str, always: bool = False) -> tuple[Any, str | None]:
        """(what the detail holds, the key to store `text` under if it must be stored now)."""
        key = content_key(text)
        stored = self._seen.pop(key, None)
        shared = stored is not None or always
        self._seen[key] = shared
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        if not shared:
            return value, None  # seen once: inline
        return {"ref": key}, None if stored else key

    def verdict_text(self, v: Verdict) -> str:
        """Compact JSON of a verdict; cached by object for ambient ones (reused across requests)."""
        held = self._texts.get(id(v))
        if held is not None and held[0] is v:
            return held[1]
        text = orjson.dumps(compact_verdict(v), option=orjson.OPT_SORT_KEYS).decode()
        self._texts[id(v)] = (v, text)
        if len(self._texts) > 64:
            self._texts.popitem(last=False)
        return text


def encode(
    decision: Decision | None,
    verdicts: Sequence[Verdict],
    attempts: Sequence[Attempt],
    ambient: Collection[str],
    interner: Interner,
) -> tuple[bytes, list[tuple[str, str]]]:
    """The compressed detail, and the shared values to store with it as (key, JSON)."""
    new: list[tuple[str, str]] = []
    stored_verdicts: list[Any] = []
    for v in verdicts:
        text = interner.verdict_text(v)
        held, key = interner.place(orjson.loads(text), text, always=v.agent in ambient)
        if key is not None:
            new.append((key, text))
        if isinstance(held, dict) and "ref" in held:
            held = {"ref": held["ref"], "at": v.at}
        else:
            held = {**held, "at": v.at}
        stored_verdicts.append(held)
    held_decision: Any = None
    if decision is not None:
        held_decision = orjson.loads(decision.model_dump_json(exclude_defaults=True))
        candidates = held_decision.get("candidates")
        if candidates:
            ctext = orjson.dumps(candidates).decode()
            always = len(candidates) >= _SHARE_CANDIDATES_FROM
            held_decision["candidates"], key = interner.place(candidates, ctext, always=always)
            if key is not None:
                new.append((key, ctext))
    body = {
        "f": _FORMAT,
        "d": held_decision,
        "v": stored_verdicts,
        "a": [a.model_dump(mode="json", exclude_defaults=True) for a in attempts],
    }
    raw = orjson.dumps(body, default=str)
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, zdict=_ZDICT_2)
    return _MARK_2 + packer.compress(raw) + packer.flush(), new


def decode(blob: bytes) -> dict[str, Any]:
    """The detail's JSON: `d` the decision, `v` the verdicts, `a` the attempts, each inline or
    `{"ref": key}` (a shared value; a verdict's `at` stays inline); defaults are left out."""
    if blob[:1] == _MARK_2:
        blob, zdict = blob[1:], _ZDICT_2
    else:
        zdict = _ZDICT
    unpacker = zlib.decompressobj(-15, zdict=zdict)
    data: dict[str, Any] = orjson.loads(unpacker.decompress(blob) + unpacker.flush())
    return data


def refs_of(data: Mapping[str, Any]) -> list[str]:
    """The keys of the shared values a detail refers to."""
    keys = [v["ref"] for v in data.get("v", ()) if "ref" in v]
    d = data.get("d")
    if isinstance(d, dict) and "ref" in d:  # format 1: the whole decision shared
        keys.append(d["ref"])
    elif isinstance(d, dict) and isinstance(c := d.get("candidates"), dict) and "ref" in c:
        keys.append(c["ref"])
    return keys


def resolved(value: Any, shared: Mapping[str, str]) -> Any:
    """`value` with a reference replaced by the shared value (None if it is missing)."""
    if isinstance(value, dict) and "ref" in value:
        text = shared.get(value["ref"])
        if text is None:
            return None
        return {**orjson.loads(text), **{k: x for k, x in value.items() if k != "ref"}}
    return value


def verdicts_of(data: Mapping[str, Any], shared: Mapping[str, str]) -> list[dict[str, Any]]:
    """The detail's verdicts as `Verdict.model_dump(mode="json")` gives them; a reference whose
    shared value is missing is dropped."""
    out = []
    for v in data.get("v", ()):
        full = resolved(v, shared)
        if full is not None:
            out.append(Verdict.model_validate(full).model_dump(mode="json"))
    return out


def decision_of(data: Mapping[str, Any], shared: Mapping[str, str]) -> dict[str, Any] | None:
    d = resolved(data.get("d"), shared)
    if d is None:
        return None
    candidates = d.get("candidates")
    if isinstance(candidates, dict) and "ref" in candidates:
        text = shared.get(candidates["ref"])
        d = {**d, "candidates": [] if text is None else orjson.loads(text)}
    return Decision.model_validate(d).model_dump(mode="json")


def attempts_of(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [Attempt.model_validate(a).model_dump(mode="json") for a in data.get("a", ())]

"""A request's detail as stored: its decision, verdicts and attempts in one compressed value.

One column instead of a row per verdict and per attempt: a request is one row (plus its ledger
rows when it cost money). The JSON is compressed with zlib and a preset dictionary of the words
every record repeats, so a small record shrinks too.

Most of a record repeats: an ambient agent's verdict is the same for every request until its
next sample, the cost agent says the same until spend moves, similar prompts get the same
decision. Such a value is stored once, in the `shared` table under a short key (see
`Interner`), and the detail refers to it (a verdict with its own time, `at`). A value is shared
from the second time it is seen; one seen once stays inline.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import orjson

import orchestra.store.complexity_form as complexity
from orchestra.core.decision import Candidate, Decision
from orchestra.core.result import Attempt
from orchestra.core.verdict import Verdict
from orchestra.store.forms import attempt_form, candidates_form, decision_form, dumps, verdict_json

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
# 3: a list `[decision, verdicts, attempts]` with marker `_MARK_3` and `_ZDICT_3`; shared values
# are referred to by a short key (see `Interner`), a verdict by `[key, at]`, a decision's shared
# candidate list by its key alone, the complexity verdict as a list (see `complexity.pack`).
# `decode` gives every format as format 2 reads (`{"ref": key}` for a reference).
_FORMAT = 3
_MARK_3 = b"\xfe"  # its low bits, 110, start no raw deflate stream either
_ZDICT_3 = _ZDICT_2 + (
    b'"latency_ms":0.5,"error_kind":"timeout","skipped":true},{"model":"","tier":"local","ok":'
    b'false,"vote for local (local 0.50, edge 0.25)","target":"local","votes":{"local":0.5,'
    b'"edge":0.25}},[["",1700000000.0],["",1700000000.0],["",1700000000.0],[1700000000.0,0.3,'
    b'0.5,"moderate","edge",[5.0,3.0,1.609,0.5,4.0,0.05,0.02,0,0.693,1.099,0.1,0,0,0,0,0,0,0,0,'
    b'0,0.693,0.01,0,0,0,0,0,1.386,0,0,0.1]],["",1700000000.0]],[{"model":"","tier":"edge",'
    b'"ok":true,"latency_ms":1.0}]]'
)
# A candidate list this long is shared from the first time it is seen.
_SHARE_CANDIDATES_FROM = 8
_LEVEL = 6
# Per-object caches (ambient verdicts and catalog candidate lists recur as the same objects).
_CACHED = 64


class Interner:
    """Decides what is shared: a value seen before (by its content) is stored once and referred
    to by a key; remembers the keys it gave, so each value is written once per process. Writer
    thread only.

    A key is this interner's random 64-bit prefix (16 hex digits) and a counter: short, and
    its prefix repeats within a detail, so it compresses (a content hash would not). Older
    details refer by content hash (32 hex digits); both live in `shared`."""

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._prefix = secrets.token_hex(8)
        self._count = 0
        self._seen: OrderedDict[bytes, str | None] = OrderedDict()  # digest -> key, None: once
        self._verdicts: OrderedDict[int, tuple[Verdict, dict[str, Any], bytes, bytes]] = (
            OrderedDict()
        )
        self._lists: OrderedDict[tuple[int, ...], tuple[Any, list[Any], bytes, bytes]] = (
            OrderedDict()
        )

    def place(self, digest: bytes, always: bool = False) -> tuple[str | None, bool]:
        """(the key to refer to the value by, None: inline; whether to store it now)."""
        key = self._seen.pop(digest, "")
        stored = bool(key)
        if not stored and (key is None or always):
            key = f"{self._prefix}{self._count:x}"
            self._count += 1
        self._seen[digest] = key or None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return key or None, bool(key) and not stored

    def verdict(self, v: Verdict, ambient: bool) -> tuple[dict[str, Any], bytes, bytes]:
        """(compact verdict, its JSON, its digest); cached by object for ambient ones (the same
        sample is in every request until the next)."""
        held = self._verdicts.get(id(v)) if ambient else None
        if held is not None and held[0] is v:
            return held[1], held[2], held[3]
        compact, text = verdict_json(v)
        digest = _digest(text)
        if ambient:
            _remember(self._verdicts, id(v), (v, compact, text, digest))
        return compact, text, digest

    def candidates(self, cs: Sequence[Candidate]) -> tuple[list[Any], bytes, bytes]:
        """(stored candidates, their JSON, its digest); cached by the candidates' identities (a
        decision's tuple is new, its catalog candidates are not; the entry keeps them alive)."""
        ids = tuple(map(id, cs))
        held = self._lists.get(ids)
        if held is not None:
            self._lists.move_to_end(ids)
            return held[1], held[2], held[3]
        form = candidates_form(cs)
        text = dumps(form)
        digest = _digest(text)
        _remember(self._lists, ids, (tuple(cs), form, text, digest))
        return form, text, digest


def _digest(text: bytes) -> bytes:
    return hashlib.blake2b(text, digest_size=16).digest()


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    cache[key] = value
    if len(cache) > _CACHED:
        cache.popitem(last=False)


def encode(
    decision: Decision | None,
    verdicts: Sequence[Verdict],
    attempts: Sequence[Attempt],
    ambient: Collection[str],
    interner: Interner,
) -> tuple[bytes, list[tuple[str, str]]]:
    """The compressed detail, and the shared values to store with it as (key, JSON)."""
    new: list[tuple[str, str]] = []
    held_verdicts = [_verdict(v, v.agent in ambient, interner, new) for v in verdicts]
    held_decision = _decision(decision, interner, new) if decision is not None else None
    body = [held_decision, held_verdicts, [attempt_form(a) for a in attempts]]
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, zdict=_ZDICT_3)
    return _MARK_3 + packer.compress(dumps(body)) + packer.flush(), new


def _verdict(v: Verdict, ambient: bool, interner: Interner, new: list[tuple[str, str]]) -> Any:
    """A verdict as format 3 holds it: `[key, at]`, the complexity list, or a dict."""
    compact, text, digest = interner.verdict(v, ambient)
    key, store = interner.place(digest, always=ambient)
    if store:
        assert key is not None
        new.append((key, text.decode()))
    if key is not None:
        return [key, v.at]
    packed = complexity.pack(compact, v.at)
    if packed is not None:
        return packed
    return {**orjson.loads(text), "at": v.at}  # keys sorted, as a shared one reads back


def _decision(d: Decision, interner: Interner, new: list[tuple[str, str]]) -> dict[str, Any]:
    """A decision as format 3 holds it: its candidate list inline, or its shared key."""
    held = decision_form(d)
    if not d.candidates:
        held["candidates"] = []
        return held
    form, text, digest = interner.candidates(d.candidates)
    key, store = interner.place(digest, always=len(form) >= _SHARE_CANDIDATES_FROM)
    if store:
        assert key is not None
        new.append((key, text.decode()))
    held["candidates"] = key if key is not None else form
    return held


def decode(blob: bytes) -> dict[str, Any]:
    """The detail's JSON: `d` the decision, `v` the verdicts, `a` the attempts, each inline or
    `{"ref": key}` (a shared value; a verdict's `at` stays inline); defaults are left out."""
    mark = blob[:1]
    if mark == _MARK_3:
        return _from_3(_inflate(blob[1:], _ZDICT_3))
    if mark == _MARK_2:
        return _inflate(blob[1:], _ZDICT_2)  # type: ignore[no-any-return]
    return _inflate(blob, _ZDICT)  # type: ignore[no-any-return]


def decode_lean(blob: bytes) -> dict[str, Any]:
    """As `decode`, but a format 3 detail keeps its own forms, which are cheaper to read in
    bulk (replay): a shared verdict `[key, at]`, the complexity verdict packed (see
    `complexity_form`), a decision's shared candidate list its key alone."""
    if blob[:1] == _MARK_3:
        d, verdicts, attempts = _inflate(blob[1:], _ZDICT_3)
        return {"f": 3, "d": d, "v": verdicts, "a": attempts}
    return decode(blob)


def _inflate(raw: bytes, zdict: bytes) -> Any:
    unpacker = zlib.decompressobj(-15, zdict=zdict)
    return orjson.loads(unpacker.decompress(raw) + unpacker.flush())


def _from_3(body: list[Any]) -> dict[str, Any]:
    """A format 3 body in format 2's shape."""
    d, verdicts, attempts = body
    if d is not None and isinstance(d.get("candidates"), str):
        d["candidates"] = {"ref": d["candidates"]}
    return {"f": 3, "d": d, "v": [_verdict_from_3(v) for v in verdicts], "a": attempts}


def _verdict_from_3(v: Any) -> dict[str, Any]:
    if isinstance(v, dict):
        return v
    if isinstance(v[0], str):
        return {"ref": v[0], "at": v[1]}
    return complexity.unpack(v)


def refs_of(data: Mapping[str, Any]) -> list[str]:
    """The keys of the shared values a detail refers to (as `decode` or `decode_lean` gives
    it)."""
    keys = []
    for v in data.get("v", ()):
        if type(v) is list:  # decode_lean's: `[key, at]`, or a packed complexity verdict
            if type(v[0]) is str:
                keys.append(v[0])
        elif "ref" in v:
            keys.append(v["ref"])
    d = data.get("d")
    if isinstance(d, dict):
        c = d.get("candidates")
        if "ref" in d:  # format 1: the whole decision shared
            keys.append(d["ref"])
        elif isinstance(c, str):  # decode_lean's
            keys.append(c)
        elif isinstance(c, dict) and "ref" in c:
            keys.append(c["ref"])
    return keys


def lean_refs(details: Sequence[Mapping[str, Any]]) -> set[str]:
    """The keys of the shared values `decode_lean`'s details refer to."""
    keys: set[str] = set()
    add = keys.add
    for data in details:
        if data.get("f") != 3:
            keys.update(refs_of(data))
            continue
        for v in data["v"]:
            if type(v) is list and type(v[0]) is str:
                add(v[0])
            elif type(v) is dict and "ref" in v:
                add(v["ref"])
        d = data["d"]
        if isinstance(d, dict) and type(c := d.get("candidates")) is str:
            add(c)
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

"""A request's detail as stored: its decision, verdicts and attempts in one compressed value.

One column instead of a row per verdict and per attempt: a request is one row (plus its ledger
rows). The JSON is compressed with zlib and a preset dictionary of the words every record
repeats, so a small record shrinks too. An ambient agent's verdict (resource, connectivity) is
the same for every request until its next sample: it is stored once, in `samples`, under a key
made from its content, and the detail holds `{"ref": key}`.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from orchestra.core.decision import Decision
from orchestra.core.result import Attempt
from orchestra.core.verdict import Verdict

# Words that recur in every detail; zlib starts from them as if it had seen them (changing this
# string makes old details unreadable: keep it, or version it with `_FORMAT`).
_ZDICT = (
    b'{"ref":"{"agent":"resource","connectivity","cost","complexity","privacy","target":"local",'
    b'"edge","cloud","allowed":["local","edge","cloud"],"confidence":"state":"ok","reason":"'
    b'"metrics":{"score":"signals":{"estimates_usd":{"today_usd":"month_usd":"left_usd":"at":'
    b'"stale":true,"neutral":true,"denied_models":[]},"policy":"default","candidates":[{"model":'
    b'"tier":"local"},"reason":"vote for local (local ","votes":{"excluded":[{"by":"request",'
    b'"ok":true,"latency_ms":"error_kind":"error":"status_code":"retry_in_s":"cached":false,'
    b'"skipped":false,"kinds":[],"simple","moderate","complex","no_budget","clean","sensitive"'
)
_FORMAT = 1
_LEVEL = 6


def ambient_key(verdict_json: str) -> str:
    """The key an ambient verdict is stored under: 16 bytes of its content's hash."""
    return hashlib.blake2b(verdict_json.encode(), digest_size=16).hexdigest()


class VerdictCache:
    """Ambient verdicts serialised once: the same object recurs in every request until the
    agent's next sample. Holds (verdict, json, key) for the last `size` objects seen."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._seen: OrderedDict[int, tuple[Verdict, str, str]] = OrderedDict()

    def json_and_key(self, verdict: Verdict) -> tuple[str, str]:
        held = self._seen.get(id(verdict))
        if held is not None and held[0] is verdict:
            return held[1], held[2]
        text = verdict.model_dump_json(fallback=str)
        key = ambient_key(text)
        self._seen[id(verdict)] = (verdict, text, key)
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return text, key


def encode(
    decision: Decision | None,
    verdicts: Sequence[Verdict],
    attempts: Sequence[Attempt],
    ambient: Collection[str],
    cache: VerdictCache,
) -> tuple[bytes, list[tuple[str, Verdict, str]]]:
    """The compressed detail, and the ambient verdicts it refers to as (key, verdict, json)."""
    refs: list[tuple[str, Verdict, str]] = []
    stored: list[Any] = []
    for v in verdicts:
        if v.agent in ambient:
            text, key = cache.json_and_key(v)
            refs.append((key, v, text))
            stored.append({"ref": key})
        else:
            stored.append(v.model_dump(mode="json", exclude_defaults=True, fallback=str))
    body = {
        "f": _FORMAT,
        "d": decision.model_dump(mode="json", exclude_defaults=True) if decision else None,
        "v": stored,
        "a": [a.model_dump(mode="json", exclude_defaults=True) for a in attempts],
    }
    raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    packer = zlib.compressobj(_LEVEL, zlib.DEFLATED, -15, zdict=_ZDICT)
    return packer.compress(raw) + packer.flush(), refs


def decode(blob: bytes) -> dict[str, Any]:
    """The detail's JSON: `d` the decision, `v` the verdicts (inline, or `{"ref": key}`), `a`
    the attempts; values equal to their defaults are left out."""
    unpacker = zlib.decompressobj(-15, zdict=_ZDICT)
    data: dict[str, Any] = json.loads(unpacker.decompress(blob) + unpacker.flush())
    return data


def verdicts_of(data: Mapping[str, Any], samples: Mapping[str, str]) -> list[dict[str, Any]]:
    """The detail's verdicts as full dicts (as `Verdict.model_dump(mode="json")` gives them),
    references resolved through `samples` (key -> stored JSON); an unresolved one is dropped."""
    out: list[dict[str, Any]] = []
    for v in data.get("v", ()):
        if "ref" in v:
            text = samples.get(v["ref"])
            if text is None:
                continue
            out.append(json.loads(text))
        else:
            out.append(Verdict.model_validate(v).model_dump(mode="json"))
    return out


def refs_of(data: Mapping[str, Any]) -> list[str]:
    return [v["ref"] for v in data.get("v", ()) if "ref" in v]


def decision_of(data: Mapping[str, Any]) -> dict[str, Any] | None:
    d = data.get("d")
    return None if d is None else Decision.model_validate(d).model_dump(mode="json")


def attempts_of(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [Attempt.model_validate(a).model_dump(mode="json") for a in data.get("a", ())]

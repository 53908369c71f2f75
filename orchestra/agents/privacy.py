"""The privacy agent: keeps prompts holding secrets or personal data off remote tiers.

Credentials (API keys and tokens, private keys, passwords) are found by
`orchestra.core.credentials`, the shapes the redactor masks too; personal data (e-mail, phone,
card, IBAN) here.
"""

from __future__ import annotations

import asyncio
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from orchestra.agents.base import Agent
from orchestra.core.credentials import CREDENTIAL_KINDS, find_credentials, holds_digit
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict

__all__ = [
    "BUILTIN_KINDS",
    "CREDENTIAL_KINDS",
    "MAX_SCAN_CHARS",
    "PERSONAL_KINDS",
    "PrivacyAgent",
    "find_kinds",
]

PERSONAL_KINDS = ("email", "phone", "card", "iban")
BUILTIN_KINDS = CREDENTIAL_KINDS + PERSONAL_KINDS
_CREDENTIAL_KINDS = frozenset(CREDENTIAL_KINDS)
# Scanning is linear in this; it bounds the worst case of one message (a longer message is only
# scanned up to here).
MAX_SCAN_CHARS = 100_000
# Prompts longer than this are scanned in a worker thread, off the event loop.
OFF_LOOP_CHARS = 16_000

# -- email -------------------------------------------------------------------------------------
# Found at each "@": the domain forwards (labels and a 2-24 letter TLD), the local part backwards
# (RFC 5321 caps it at 64) on the reversed slice, so no scan ever starts at a letter.
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
_LOCAL_REVERSED = re.compile(r"[A-Za-z0-9._%+-]{1,64}")
_LOCAL_CHARS = frozenset(string.ascii_letters + string.digits + "._%+-")
_TLD = re.compile(r"[A-Za-z]{2,24}")
# RFC 2606/6761 reserved names belong to nobody; file extensions catch "logo@2x.png".
_RESERVED_DOMAINS = ("example.com", "example.org", "example.net")
_RESERVED_TLDS = frozenset({"example", "test", "invalid", "localhost", "local"})
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp", "css", "js", "ts", "py"})

# -- phone / card / iban -----------------------------------------------------------------------
# These run on a length-preserving map of the text (digit -> "0", A-Z -> "A", a-z -> "a"), so
# each regex starts with a literal ("0", "AA00") and the engine skips ahead fast.
_SHAPE = str.maketrans(
    string.digits + string.ascii_uppercase + string.ascii_lowercase,
    "0" * 10 + "A" * 26 + "a" * 26,
)
# A digit run with the separators phones and cards use (no newline, comma, slash or colon:
# those separate values, lists, dates and times).
# Unbounded so a long run is never cut mid-number; `_windows` bounds the work per run.
# It needs 9+ digits; the group is unambiguous (each repeat consumes exactly one digit, which
# no separator can be), so it cannot backtrack catastrophically. `(?<!00)` drops starts inside
# a run: the run was tried from its first digit.
_NUMBER_RUN = re.compile(r"0(?<!00)(?:[ \t().-]*0){8}[0 \t().-]*")
# IBAN: country letters, check digits, then 11-40 letters/digits/spaces (validated after).
_IBAN_RUN = re.compile(r"AA00[A0 ]{11,40}")
_DATE = re.compile(
    r"(?<!\d)(?:(?:19|20)\d\d[-.](?:0?[1-9]|1[0-2])[-.](?:0?[1-9]|[12]\d|3[01])"
    r"|\d{1,2}[-.]\d{1,2}[-.](?:19|20)\d\d)(?!\d)"
)
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_GROUPS = re.compile(r"[ \t().-]+")
# Lengths by country (SWIFT IBAN registry): a known length is what makes the cut point exact.
_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip
_DIGITS = "0123456789"
_NUMERIC_KINDS = frozenset({"phone", "card", "iban"})  # found on the shape map (see `_numeric`)
_NUMBER_KINDS = frozenset({"phone", "card"})  # found in digit runs (see `_numbers`)
_MAX_NUMBER_CHARS = 32  # "+44 (0) 20 7946 0958 x", "3782-822463-10005"


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _is_card(window: str) -> bool:
    """13-19 digits, grouped as printed on cards (or not at all), a network's first digit, Luhn."""
    if not set(window) <= set(_DIGITS + " -"):
        return False
    seps = {c for c in window if c in " -"}
    if len(seps) > 1 or "  " in window or "--" in window:
        return False
    groups = [len(g) for g in re.split(r"[ -]", window)]
    digits = window.replace(" ", "").replace("-", "")
    if not 13 <= len(digits) <= 19 or digits[0] not in "23456":  # Mastercard 2/5, Amex 3, ...
        return False
    grouped = (
        len(groups) == 1
        or groups in ([4, 6, 5], [4, 6, 4])  # Amex, Diners
        or (all(g == 4 for g in groups[:-1]) and 1 <= groups[-1] <= 4)
    )
    return grouped and _luhn(digits)


def _is_phone(window: str, before: str) -> bool:
    """International (+CC …) or a national shape: trunk-0 numbers, or NANP (NXX) NXX-XXXX."""
    digits = "".join(c for c in window if c.isdigit())
    if not 9 <= len(digits) <= 15 or _DATE.search(window) or _IPV4.search(window):
        return False
    if "isbn" in before.lower():
        return False
    if before.endswith("+"):
        return window[0] != "0"  # +CC: country codes never start with 0
    groups = [g for g in _GROUPS.split(window) if g]
    if digits[0] == "0":
        # Trunk prefix: no lone digit group ("0-306-40615-2" is an ISBN-10).
        return len(groups) > 0 and all(len(g) >= 2 for g in groups)
    if [len(g) for g in groups] == [1, 3, 3, 4] and groups[0] == "1":
        groups = groups[1:]
    return (
        [len(g) for g in groups] == [3, 3, 4]
        and groups[0][0] in "23456789"
        and groups[1][0] in "23456789"
        and bool(re.fullmatch(r"\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}", window.lstrip("1 .-")))
    )


def _windows(run: str, run_shape: str) -> Iterable[tuple[int, int]]:
    """(start, end) of whitespace-aligned sub-spans of `run` with 9+ digits, short enough to be one
    card or phone number (at most 32 chars), longest first per start: linear in the run."""
    bounds = [(m.start(), m.end()) for m in re.finditer(r"[^ \t]+", run)]
    for i, (start, _) in enumerate(bounds):
        for j in range(min(len(bounds) - 1, i + 7), i - 1, -1):
            end = bounds[j][1]
            if end - start > _MAX_NUMBER_CHARS:
                continue
            if run_shape.count("0", start, end) < 9:
                break  # shorter windows from this start hold fewer digits still
            yield start, end


def _numbers(
    text: str, shape: str, found: Counter[str], kinds: frozenset[str], skip: list[tuple[int, int]]
) -> None:
    """Cards and phones in the digit runs of `text` (`shape` is its mapped twin), outside the
    `skip` spans (IBANs, whose digit groups would otherwise pass for phones)."""
    for m in _NUMBER_RUN.finditer(shape):
        start = m.start()
        if any(s <= start < e for s, e in skip):
            continue
        # A run glued to a word, version or larger number ("v1.2", "A0 …"): only its later,
        # space-separated parts may stand alone.
        glued = start > 0 and shape[start - 1] in "Aa.,/_"
        run_shape = m.group().rstrip(" \t().-")
        run = text[start : start + len(run_shape)]
        before = text[max(0, start - 12) : start]
        # Cards first over the whole run, so a phone-shaped window can't swallow a card.
        taken: list[tuple[int, int]] = []
        for kind in ("card", "phone"):
            if kind not in kinds:
                continue
            for ws, we in _windows(run, run_shape):
                if (glued and ws == 0) or any(ws < e and s < we for s, e in taken):
                    continue
                lead = text[max(0, start + ws - 12) : start + ws] if ws else before
                window = run[ws:we]
                if kind == "card":
                    hit = not lead.endswith("+") and _is_card(window.strip("(). -"))
                else:
                    hit = _is_phone(window.lstrip("(").rstrip(")"), lead)
                if hit:
                    found[kind] += 1
                    taken.append((ws, we))


def _ibans(text: str, shape: str, found: Counter[str]) -> list[tuple[int, int]]:
    """Count IBANs (country length + mod-97) and return their spans."""
    spans: list[tuple[int, int]] = []
    for m in _IBAN_RUN.finditer(shape):
        start = m.start()
        if start and shape[start - 1] in "0Aa":
            continue
        length = _IBAN_LENGTHS.get(text[start : start + 2])
        if length is None:
            continue
        chars: list[str] = []
        candidate = text[start : m.end()]
        i = 0
        while i < len(candidate) and len(chars) < length:
            if candidate[i] != " ":
                chars.append(candidate[i])
            elif i + 1 < len(candidate) and candidate[i + 1] == " ":
                break  # a double space ends the number
            i += 1
        if len(chars) != length or (i < len(candidate) and candidate[i] != " "):
            continue  # too short, or the run goes on past the country's length
        iban = "".join(chars)
        rearranged = iban[4:] + iban[:4]
        if int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1:
            found["iban"] += 1
            spans.append((start, start + i))
    return spans


def _emails(text: str, found: Counter[str]) -> None:
    at = text.find("@")
    while at != -1:
        if not (at and text[at - 1] in _LOCAL_CHARS and text[at + 1 : at + 2].isalnum()):
            at = text.find("@", at + 1)  # no address can sit here: skip the regex work
            continue
        dm = _DOMAIN.match(text, at + 1)
        lm = _LOCAL_REVERSED.match(text[max(0, at - 64) : at][::-1])
        if dm and lm:
            domain = dm.group().lower()
            local = lm.group()[::-1].lstrip(".")
            labels = domain.split(".")
            tld = labels[-1]
            if (
                local
                and len(labels) >= 2
                and all(labels)
                and _TLD.fullmatch(tld)
                and tld not in _RESERVED_TLDS
                and tld not in _FILE_TLDS
                and not domain.endswith(_RESERVED_DOMAINS)
            ):
                found["email"] += 1
        at = text.find("@", at + 1)


def find_kinds(
    text: str,
    kinds: frozenset[str] = frozenset(BUILTIN_KINDS),
    custom: Mapping[str, re.Pattern[str]] | None = None,
) -> Counter[str]:
    """How many findings of each kind `text` holds (its first `MAX_SCAN_CHARS` characters)."""
    text = text[:MAX_SCAN_CHARS]
    found: Counter[str] = Counter()
    if "email" in kinds and "@" in text:
        _emails(text, found)
    has_digit = holds_digit(text)
    if not kinds.isdisjoint(_CREDENTIAL_KINDS):
        for finding in find_credentials(text, kinds, has_digit=has_digit):
            found[finding.kind] += 1
    if has_digit and (numeric := kinds & _NUMERIC_KINDS):
        _numeric(text, numeric, found)
    if custom:
        _custom(text, custom, found)
    return +found  # drop zero counts


def _numeric(text: str, numeric: frozenset[str], found: Counter[str]) -> None:
    """Phones, cards and IBANs (the `numeric` ones among them) in `text`, which holds a digit."""
    shape = text.translate(_SHAPE)
    if shape.count("0") < 9:  # every phone, card and IBAN has at least nine digits
        return
    ibans = _ibans(text, shape, found) if "iban" in numeric else []
    if numeric & _NUMBER_KINDS:
        _numbers(text, shape, found, numeric, ibans)


def _custom(text: str, custom: Mapping[str, re.Pattern[str]], found: Counter[str]) -> None:
    """Non-empty matches of each user pattern, counted under its own name."""
    for kind, pattern in custom.items():
        found[kind] += sum(1 for m in pattern.finditer(text) if m.end() > m.start())


class PrivacyAgent(Agent):
    """Finds secrets and personal data in every message of a request and then allows only LOCAL
    (or LOCAL and EDGE with `allow_edge`). The verdict names the kinds found, never the values.

    `kinds` limits the built-in detectors: by default the credentials (`CREDENTIAL_KINDS`: API
    keys and tokens, private keys, passwords), `"all"` adds personal data (`PERSONAL_KINDS`:
    e-mail, phone, card, IBAN), or a list picks any of `BUILTIN_KINDS`. `patterns` adds user
    regexes, each reported under its own name (`{"employee_id": r"EMP-\\d{6}"}`).
    """

    name = "privacy"
    # Room for a 100k-char worst case; past it the agent fails closed rather than open.
    timeout_s = 0.5
    fail_closed = True  # a scan that fails or overruns must not let a secret through

    def __init__(
        self,
        allow_edge: bool = False,
        kinds: Sequence[str] | str | None = None,
        patterns: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(allow_edge, bool):
            raise ValueError(f"allow_edge must be true or false, not {allow_edge!r}")
        self.allow_edge = allow_edge
        self.kinds = self._valid_kinds(kinds)
        self.patterns = self._compiled(patterns)
        self.allowed = frozenset({Tier.LOCAL, Tier.EDGE} if allow_edge else {Tier.LOCAL})

    @staticmethod
    def _valid_kinds(kinds: Sequence[str] | str | None) -> frozenset[str]:
        if kinds is None:
            # Credentials only: on by default, it must not keep every prompt that names a
            # person or a number local; personal data is the user's call.
            return _CREDENTIAL_KINDS
        if kinds == "all":
            return frozenset(BUILTIN_KINDS)
        if isinstance(kinds, str) or not isinstance(kinds, Sequence):
            raise ValueError(f'kinds must be a list of kind names or "all", got {kinds!r}')
        unknown = [k for k in kinds if k not in BUILTIN_KINDS]
        if unknown:
            raise ValueError(
                f"unknown privacy kind(s) {', '.join(map(repr, unknown))}; built-in kinds are "
                f"{', '.join(BUILTIN_KINDS)} (add your own with `patterns`)"
            )
        return frozenset(kinds)

    @staticmethod
    def _compiled(patterns: Mapping[str, str] | None) -> dict[str, re.Pattern[str]]:
        if patterns is None:
            return {}
        if not isinstance(patterns, Mapping):
            raise ValueError(f"patterns must map a kind name to a regex, got {patterns!r}")
        compiled: dict[str, re.Pattern[str]] = {}
        for kind, pattern in patterns.items():
            if not isinstance(kind, str) or not re.fullmatch(r"[A-Za-z][\w-]{0,63}", kind):
                raise ValueError(f"pattern name {kind!r} must be a word (letters, digits, _ -)")
            if kind in BUILTIN_KINDS:
                raise ValueError(f"pattern name {kind!r} is a built-in kind; choose another name")
            if not isinstance(pattern, str):
                raise ValueError(f"pattern {kind!r} must be a regex string, got {pattern!r}")
            try:
                compiled[kind] = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {kind!r} is not a valid regex: {exc}") from None
            if compiled[kind].search("") is not None:
                raise ValueError(f"pattern {kind!r} matches the empty string")
        return compiled

    async def check(self, request: Request | None) -> Verdict:
        texts = [m.content for m in request.messages] if request is not None else []
        if sum(map(len, texts)) > OFF_LOOP_CHARS:
            # A long prompt can take milliseconds (a pathological 100 KB one, 0.25 s): scan it in
            # a worker thread so other requests keep moving. Overrunning fails closed (local).
            return self.judge(await asyncio.to_thread(self._scan, texts))
        return self.judge(self._scan(texts))

    def _scan(self, texts: list[str]) -> Counter[str]:
        if len(texts) == 1:  # the common case, without a second Counter to merge into
            return find_kinds(texts[0], self.kinds, self.patterns)
        found: Counter[str] = Counter()
        for text in texts:
            found.update(find_kinds(text, self.kinds, self.patterns))
        return found

    def judge(self, found: Mapping[str, int]) -> Verdict:
        """The verdict for finding counts by kind (pure)."""
        kinds = sorted(k for k, n in found.items() if n > 0)
        if not kinds:
            return self.verdict(
                confidence=0.0,
                state="clean",
                reason="no secrets or personal data found",
                metrics={"kinds": [], "count": 0},
            )
        where = "local or edge" if self.allow_edge else "local"
        return self.verdict(
            target=Tier.LOCAL,
            allowed=self.allowed,
            confidence=1.0,
            state="sensitive",
            reason=f"found: {', '.join(kinds)} (kept {where})",
            metrics={"kinds": kinds, "count": sum(found[k] for k in kinds)},
        )

"""The privacy agent: keeps prompts holding secrets or personal data off remote tiers."""

from __future__ import annotations

import asyncio
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from orchestra.agents.base import Agent
from orchestra.core.request import Request
from orchestra.core.tier import Tier
from orchestra.core.verdict import Verdict

__all__ = ["BUILTIN_KINDS", "MAX_SCAN_CHARS", "PrivacyAgent", "find_kinds"]

BUILTIN_KINDS = ("api_key", "private_key", "password", "email", "phone", "card", "iban")
# Scanning is linear in this; it bounds the worst case of one message (a longer message is only
# scanned up to here).
MAX_SCAN_CHARS = 100_000
# Prompts longer than this are scanned in a worker thread, off the event loop.
OFF_LOOP_CHARS = 16_000

# -- api_key -----------------------------------------------------------------------------------
# Provider key shapes, each behind a cheap literal gate (`str.__contains__` is memchr-fast, a
# regex search is not). The lookbehind keeps a prefix inside a longer word ("risk-…") out.
_PROVIDER_KEYS = re.compile(
    # Each branch starts with a literal so the engine can jump between candidates; the
    # word-boundary check on the character before is done in Python (`_starts_a_word`).
    r"sk-[A-Za-z0-9_-]{20,}"  # OpenAI sk-…, sk-proj-…, sk-svcacct-…; Anthropic sk-ant-api03-…
    r"|[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret and restricted keys
    r"|gsk_[A-Za-z0-9]{20,}"  # Groq
    r"|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_\w{22,}"  # GitHub classic and fine-grained tokens
    r"|xox[baprs]-[A-Za-z0-9-]{10,}"  # Slack bot/app/user/refresh tokens
)
_PROVIDER_GATES = ("sk-", "k_", "gh", "xox")  # every branch above holds one of these
# AWS access key ids (long-lived AKIA, temporary ASIA: 16 more [0-9A-Z]) and Google API keys
# (AIza + 35): all start with "A", a letter prose rarely has.
_PROVIDER_KEYS_A = re.compile(
    r"A(?:KIA|SIA)[0-9A-Z]{16}(?![A-Za-z0-9])|AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"
)
# Generic: a keyword, then at most 20 letters of the same identifier (api_key, ACCESS_TOKEN),
# then a separator (`:`, `=`, `=>`, ` is `, or plain spaces as in "Bearer x"), then a token of
# 32+ chars. Bounded repeats only, so no catastrophic backtracking. Matched at keyword hits.
_GENERIC_KEYWORDS = ("key", "token", "secret", "bearer")
_GENERIC_TAIL = re.compile(
    r"""[A-Za-z_-]{0,20}["']?(?:[ \t]{0,3}(?:[:=]>?|is)[ \t]{0,3}|[ \t]{1,3})["'`]?"""
    r"([A-Za-z0-9+/_.~=-]{32,512})(?![A-Za-z0-9+/_.~=-])"
)
# A UUID is an identifier, not a credential.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Random base64/hex of 32+ chars sits at 3.7+ bits/char; identifiers and prose well below.
_MIN_ENTROPY = 3.5

# -- private_key -------------------------------------------------------------------------------
# PEM / OpenSSH / PGP private key headers (public keys and certificates are fine).
_PRIVATE_KEY = re.compile(
    r"-----BEGIN (?:RSA |EC |OPENSSH |DSA |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
)

# -- password ----------------------------------------------------------------------------------
# An assignment: password/passwd/passphrase/pwd (optionally quoted, as a JSON key), then `:` or
# `=`, then a quoted value or a bare one up to whitespace/quote/comma/semicolon. Matched at
# keyword hits; "my password is strong" has no assignment and does not match.
_PASSWORD_KEYWORDS = ("pass", "pwd")
_PASSWORD = re.compile(
    r"""(?i)(?<![A-Za-z])(?:password|passwd|passphrase|pwd)["']?[ \t]{0,3}[:=][ \t]{0,3}"""
    r"""(?:"([^"\n]{1,256})"|'([^'\n]{1,256})'|([^\s"',;]{1,256}))"""
)
# Values that stand for a password without being one. `changeme` and friends are documented
# defaults/placeholders: they reveal nothing, so they do not force a prompt local.
_PLACEHOLDERS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "changeme", "change_me",
        "change-me", "yourpassword", "your_password", "your-password", "mypassword",
        "my_password", "example", "placeholder", "redacted", "hidden", "removed", "none",
        "null", "nil", "undefined", "todo", "tbd", "dummy", "empty", "true", "false",
    }
)  # fmt: skip
_CODE_REF = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+")  # config.password, self.pwd: a reference

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


def _entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


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


def _keyword_hits(lower: str, keywords: Sequence[str]) -> Iterable[tuple[int, int]]:
    """(start, end) of each keyword in `lower`, the length-preserving lowered text."""
    for kw in keywords:
        i = lower.find(kw)
        while i != -1:
            yield i, i + len(kw)
            i = lower.find(kw, i + 1)


def _starts_a_word(text: str, start: int) -> bool:
    """No letter, digit, `_` or `-` just before `start` ("risk-…" holds no `sk-` key)."""
    return start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_-")


def _api_keys(text: str, lower: str | None, found: Counter[str]) -> None:
    """Provider key shapes, then (if `lower` is given) keyword-led high-entropy tokens."""
    spans: list[tuple[int, int]] = []
    # Every non-AWS/Google shape holds "-" or "_": memchr-fast gates before any regex runs.
    # then literal gates (a regex alternation scans char by char, ~20x slower than `in`).
    if ("-" in text or "_" in text) and any(g in text for g in _PROVIDER_GATES):
        spans += [
            m.span() for m in _PROVIDER_KEYS.finditer(text) if _starts_a_word(text, m.start())
        ]
    if "A" in text:
        spans += [
            m.span() for m in _PROVIDER_KEYS_A.finditer(text) if _starts_a_word(text, m.start())
        ]
    if lower is not None:
        _generic_keys(text, lower, spans)
    if spans:
        found["api_key"] += len(set(spans))


def _generic_keys(text: str, lower: str, spans: list[tuple[int, int]]) -> None:
    """Append to `spans` each keyword-led token that looks random and is not inside a provider
    key already in `spans`."""
    for _, end in _keyword_hits(lower, _GENERIC_KEYWORDS):
        m = _GENERIC_TAIL.match(text, end)
        if m is None:
            continue
        if any(s <= m.start(1) < e for s, e in spans):
            continue  # already counted as a provider key
        if _looks_random(m.group(1)):
            spans.append(m.span(1))


def _looks_random(value: str) -> bool:
    """Letters and digits at credential-like entropy, and not a UUID."""
    return (
        not _UUID.fullmatch(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _entropy(value) >= _MIN_ENTROPY
    )


def _is_placeholder(value: str, quoted: bool) -> bool:
    v = value.strip()
    low = v.lower()
    return (
        len(v) < 3
        or len(set(v)) == 1  # ***, xxx, 000
        or not any(c.isalnum() for c in v)  # ..., ???, =
        or low in _PLACEHOLDERS
        or v[0] in "<{[$%"  # <password>, {{ pw }}, ${DB_PASS}, %(pw)s: templates and env refs
        or "(" in v  # getpass(), os.environ.get(...): code, not a value
        or (not quoted and "[" in v)  # os.environ["PW"], cfg["pw"]
        or (not quoted and bool(_CODE_REF.fullmatch(v)))
        or (not quoted and v.isidentifier() and ("pass" in low or "pwd" in low))
    )


def _passwords(text: str, lower: str, found: Counter[str]) -> None:
    seen: set[int] = set()
    for i, _ in _keyword_hits(lower, _PASSWORD_KEYWORDS):
        # "pass" sits inside "password"/"passwd"/"passphrase"; "pwd" is its own keyword.
        if i in seen:
            continue
        seen.add(i)
        m = _PASSWORD.match(text, i)
        if m is None:
            continue
        double, single, bare = m.groups()
        value = double if double is not None else single if single is not None else bare
        if not _is_placeholder(value, quoted=bare is None):
            found["password"] += 1


def find_kinds(
    text: str,
    kinds: frozenset[str] = frozenset(BUILTIN_KINDS),
    custom: Mapping[str, re.Pattern[str]] | None = None,
) -> Counter[str]:
    """How many findings of each kind `text` holds (its first `MAX_SCAN_CHARS` characters)."""
    text = text[:MAX_SCAN_CHARS]
    found: Counter[str] = Counter()
    if "private_key" in kinds and "PRIVATE KEY" in text:
        found["private_key"] += len(_PRIVATE_KEY.findall(text))
    if "email" in kinds and "@" in text:
        _emails(text, found)
    has_digit = any(d in text for d in _DIGITS)  # ten memchr calls: cheaper than one regex
    lower: str | None = None  # lowered once, and only for a scan that needs it
    if "api_key" in kinds and len(text) >= 20:
        # A generic token must hold a digit, so without one the keyword scan is skipped.
        lower = _lowered(text) if has_digit else None
        _api_keys(text, lower, found)
    if "password" in kinds and (":" in text or "=" in text):
        _passwords(text, _lowered(text) if lower is None else lower, found)
    if has_digit and (numeric := kinds & _NUMERIC_KINDS):
        _numeric(text, numeric, found)
    if custom:
        _custom(text, custom, found)
    return +found  # drop zero counts


def _lowered(text: str) -> str:
    """`text` lowered, keeping its length (offsets in it are offsets in `text`)."""
    lower = text.lower()
    if len(lower) != len(text):  # a few non-ASCII letters grow when lowered
        lower = "".join(c.lower()[:1] or c for c in text)
    return lower


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

    `kinds` limits the built-in detectors (default: all of `BUILTIN_KINDS`); `patterns` adds
    user regexes, each reported under its own name (`{"employee_id": r"EMP-\\d{6}"}`).
    """

    name = "privacy"
    # Room for a 100k-char worst case; past it the agent fails closed rather than open.
    timeout_s = 0.5
    fail_closed = True  # a scan that fails or overruns must not let a secret through

    def __init__(
        self,
        allow_edge: bool = False,
        kinds: Sequence[str] | None = None,
        patterns: Mapping[str, str] | None = None,
    ) -> None:
        if not isinstance(allow_edge, bool):
            raise ValueError(f"allow_edge must be true or false, not {allow_edge!r}")
        self.allow_edge = allow_edge
        self.kinds = self._valid_kinds(kinds)
        self.patterns = self._compiled(patterns)
        self.allowed = frozenset({Tier.LOCAL, Tier.EDGE} if allow_edge else {Tier.LOCAL})

    @staticmethod
    def _valid_kinds(kinds: Sequence[str] | None) -> frozenset[str]:
        if kinds is None:
            return frozenset(BUILTIN_KINDS)
        if isinstance(kinds, str) or not isinstance(kinds, Sequence):
            raise ValueError(f"kinds must be a list of kind names, got {kinds!r}")
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

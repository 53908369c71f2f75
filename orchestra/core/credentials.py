"""Credential shapes, defined once: what the redactor masks and the privacy agent flags.

`find_credentials(text)` returns where each credential sits (its kind and span); the privacy
agent counts the findings, the redactor (`mask=True`) replaces them. Masking also takes what
detection leaves alone because it would be a false alarm in a prompt (a password placeholder,
a short `Bearer` token): a needless mask costs nothing, a needless local-only verdict does.

Every scan is linear in the text (it also runs on long provider error bodies): each regex is
either a literal followed by bounded repeats, or one whose unbounded repeats are possessive and
cannot start again inside a run they already scanned; keyword-led scans skip keywords that sit
inside a token already examined.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import NamedTuple

__all__ = ["CREDENTIAL_KINDS", "Finding", "find_credentials", "holds_digit", "lowered"]

CREDENTIAL_KINDS = ("api_key", "private_key", "password")
_ALL = frozenset(CREDENTIAL_KINDS)
# The shortest shape: "Bearer " and an 8-char token (masking); AKIA… is 20.
_MIN_KEY_CHARS = 15

# -- api_key -----------------------------------------------------------------------------------
# Provider key shapes, one regex each, grouped by a character every match holds. The gate is
# memchr-fast (`str.__contains__` on one char); each regex starts with a literal, so the engine
# jumps from candidate to candidate (an alternation of them would try every "s", "r", "g" and
# "h" of the prose around, ~20x slower). The word-boundary check on the character before is
# done in Python (`_starts_a_word`), which keeps that jump. A shape either fails within its
# minimum length or matches its whole run, so no run is scanned twice.
PROVIDER_KEYS: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...] = (
    (
        "-",
        (
            # OpenAI sk-…, sk-proj-…, sk-svcacct-…; Anthropic sk-ant-api03-…
            re.compile(r"sk-[A-Za-z0-9_-]{20,}"),
            re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),  # Slack bot/app/user/refresh tokens
        ),
    ),
    (
        "_",
        (
            re.compile(r"sk_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe secret keys
            re.compile(r"rk_(?:live|test)_[A-Za-z0-9]{16,}"),  # Stripe restricted keys
            re.compile(r"gsk_[A-Za-z0-9]{20,}"),  # Groq
            re.compile(r"gh[pousr]_[A-Za-z0-9]{36,}"),  # GitHub classic tokens
            re.compile(r"github_pat_\w{22,}"),  # GitHub fine-grained tokens
            re.compile(r"hf_[A-Za-z0-9]{30,}"),  # Hugging Face access tokens
        ),
    ),
    (
        # AWS access key ids (long-lived AKIA, temporary ASIA: 16 more [0-9A-Z]) and Google API
        # keys (AIza + 35): all start with "A", a letter prose rarely has. Fixed lengths.
        "A",
        (
            re.compile(
                r"A(?:KIA|SIA)[0-9A-Z]{16}(?![A-Za-z0-9])|AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])"
            ),
        ),
    ),
)
# A JWT: base64url header and payload (both JSON objects, so both start "eyJ"), then an optional
# signature. The lookbehind sits after the literal so the engine still jumps to each "eyJ", and
# a start inside a run ("xeyJ…", "eyJeyJ…") is refused at once instead of rescanning the run.
JWT = re.compile(
    r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{8,}+\.eyJ[A-Za-z0-9_-]{8,}+(?:\.[A-Za-z0-9_-]++)?"
)
# Generic: a keyword, then at most 20 letters of the same identifier (api_key, ACCESS_TOKEN),
# then a separator (`:`, `=`, `=>`, ` is `, or plain spaces as in "Bearer x"), then a token of
# 32+ chars (at most `MAX_GENERIC_CHARS`, checked after: a longer run is a blob, not a key).
# Matched at keyword hits; the repeats are bounded or possessive, so nothing backtracks.
GENERIC_KEYWORDS = ("key", "token", "secret", "bearer")
GENERIC_TAIL = re.compile(
    r"""[A-Za-z_-]{0,20}+["']?(?:[ \t]{0,3}(?:[:=]>?|is)[ \t]{0,3}|[ \t]{1,3})["'`]?"""
    r"([A-Za-z0-9+/_.~=-]{32,}+)"
)
MAX_GENERIC_CHARS = 512
# An AWS secret access key after its name (aws_secret_access_key, SecretAccessKey): 40 base64
# chars, taken whatever their entropy (matched at "secret" hits).
AWS_SECRET_TAIL = re.compile(
    r"""(?i)(?:[_-]?access)?[_-]?key["']?[ \t]{0,3}[:=]>?[ \t]{0,3}["'`]?"""
    r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
# An HTTP bearer token (RFC 6750 token68, "=" taken anywhere as the generic token does, so a
# mask never stops short of what detection flags), matched at "bearer" hits. Detection wants
# 16+ chars with a letter and a digit ("Bearer authentication" is prose); masking takes any 8+.
BEARER_TAIL = re.compile(r"[ \t]{1,3}([A-Za-z0-9+/_.~=-]{8,}+)")
_MIN_BEARER_CHARS = 16
# A UUID is an identifier, not a credential.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Random base64/hex of 32+ chars sits at 3.7+ bits/char; identifiers and prose well below.
_MIN_ENTROPY = 3.5

# -- private_key -------------------------------------------------------------------------------
# A PEM / OpenSSH / PGP private key block (public keys and certificates are fine): the header,
# the body (base64, encapsulated headers such as "Proc-Type: 4,ENCRYPTED", line breaks, also as
# the `\n` of a JSON echo) and the footer when present, so a key cut short is masked too. The
# body never holds "-----", so it stops at the footer or at the next header.
_PEM_LABEL = r"(?:RSA |EC |OPENSSH |DSA |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
PRIVATE_KEY = re.compile(
    rf"-----BEGIN {_PEM_LABEL}"
    r"(?:[A-Za-z0-9+/=\s\\:,]++|-(?!----))*+"
    rf"(?:-----END {_PEM_LABEL})?"
)

# -- password ----------------------------------------------------------------------------------
# An assignment: password/passwd/passphrase/pwd (optionally quoted, as a JSON key, also escaped
# as in a JSON echo), then `:` or `=`, then a quoted value or a bare one up to whitespace, quote,
# comma or semicolon. Matched at keyword hits; "my password is strong" has no assignment and
# does not match. Groups: double-quoted, single-quoted, bare value.
PASSWORD_KEYWORDS = ("pass", "pwd")
PASSWORD = re.compile(
    r"""(?i)(?<![A-Za-z])(?:password|passwd|passphrase|pwd)(?:\\?["'])?[ \t]{0,3}[:=][ \t]{0,3}"""
    r"""(?:\\?"((?:[^"\\\n]|\\[^"\n])++)\\?"|'([^'\n]++)'|([^\s"',;]++))"""
)
# Values that stand for a password without being one. `changeme` and friends are documented
# defaults/placeholders: they reveal nothing, so they do not force a prompt local.
PLACEHOLDERS = frozenset(
    {
        "password", "passwd", "pwd", "passphrase", "secret", "changeme", "change_me",
        "change-me", "yourpassword", "your_password", "your-password", "mypassword",
        "my_password", "example", "placeholder", "redacted", "hidden", "removed", "none",
        "null", "nil", "undefined", "todo", "tbd", "dummy", "empty", "true", "false",
    }
)  # fmt: skip
_CODE_REF = re.compile(r"[A-Za-z_]\w*(?:\.\w+)+")  # config.password, self.pwd: a reference


class Finding(NamedTuple):
    """One credential: its kind (one of `CREDENTIAL_KINDS`) and where it sits in the text."""

    kind: str
    start: int
    end: int


def find_credentials(
    text: str,
    kinds: frozenset[str] = _ALL,
    *,
    has_digit: bool | None = None,
    mask: bool = False,
) -> list[Finding]:
    """The credentials of the `kinds` asked for in `text`, in no particular order.

    `has_digit` says whether `text` holds a digit, when the caller knows already. With `mask`,
    also what only detection leaves out (placeholder passwords, short bearer tokens), and every
    keyword-led token is looked at, digit or not.
    """
    found: list[Finding] = []
    if "private_key" in kinds and "PRIVATE KEY" in text:
        found += [Finding("private_key", *m.span()) for m in PRIVATE_KEY.finditer(text)]
    lower: str | None = None  # lowered once, and only for a scan that needs it
    if "api_key" in kinds and len(text) >= _MIN_KEY_CHARS:
        if has_digit is None:
            has_digit = holds_digit(text)
        # A generic or bearer token must hold a digit (an AWS secret need not, but is named by
        # "secret"), so without either the keyword scan is skipped.
        if mask or has_digit or "ecret" in text or "ECRET" in text:
            lower = lowered(text)
        found += _api_keys(text, lower, mask)
    if "password" in kinds and (":" in text or "=" in text):
        found += _passwords(text, lowered(text) if lower is None else lower, mask)
    return found


def holds_digit(text: str) -> bool:
    """Whether `text` holds an ASCII digit: ten memchr calls, cheaper than one regex search (and
    written out, as a generator costs more than the calls)."""
    return (
        "0" in text or "1" in text or "2" in text or "3" in text or "4" in text
        or "5" in text or "6" in text or "7" in text or "8" in text or "9" in text
    )  # fmt: skip


def lowered(text: str) -> str:
    """`text` lowered, keeping its length (offsets in it are offsets in `text`)."""
    lower = text.lower()
    if len(lower) != len(text):  # a few non-ASCII letters grow when lowered
        lower = "".join(c.lower()[:1] or c for c in text)
    return lower


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


def _api_keys(text: str, lower: str | None, mask: bool) -> list[Finding]:
    """Provider key shapes and JWTs, then (if `lower` is given) keyword-led tokens."""
    spans: list[tuple[int, int]] = []
    for gate, shapes in PROVIDER_KEYS:
        if gate in text:
            for shape in shapes:
                spans += [m.span() for m in shape.finditer(text) if _starts_a_word(text, m.start())]
    if "J" in text:
        spans += [m.span() for m in JWT.finditer(text)]
    if lower is not None:
        _keyword_keys(text, lower, spans, mask)
    if not spans:
        return []
    return [Finding("api_key", s, e) for s, e in sorted(set(spans))]


def _keyword_keys(text: str, lower: str, spans: list[tuple[int, int]], mask: bool) -> None:
    """Append to `spans` each keyword-led token that is a credential and is not inside a key
    already in `spans`."""
    hits = sorted(_keyword_hits(lower, GENERIC_KEYWORDS))
    if not hits:
        return
    # The keys found so far, merged and sorted, so "inside one?" is a bisection, not a scan
    # (a text can hold many keys and many keywords).
    taken: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if taken and s <= taken[-1][1]:
            taken[-1] = (taken[-1][0], max(e, taken[-1][1]))
        else:
            taken.append((s, e))
    starts = [s for s, _ in taken]
    done = 0  # end of the last token examined: a keyword inside it starts nothing new
    for start, end in hits:
        if start < done:
            continue
        m = None
        if lower.startswith("secret", start):
            m = AWS_SECRET_TAIL.match(text, end)
        elif lower.startswith("bearer", start):
            m = BEARER_TAIL.match(text, end)
            if m is not None:
                done = m.end()  # taken or not, so that masking and detection skip alike
                if not (mask or _is_bearer_token(m.group(1))):
                    m = None
        generic = m is None
        if m is None:
            m = GENERIC_TAIL.match(text, end)
        if m is None:
            continue
        done = m.end()
        i = bisect_right(starts, m.start(1)) - 1
        if i >= 0 and m.start(1) < taken[i][1]:
            continue  # inside a provider key, found already
        token = m.group(1)
        if not generic or (len(token) <= MAX_GENERIC_CHARS and _looks_random(token)):
            spans.append(m.span(1))


def _is_bearer_token(token: str) -> bool:
    return (
        len(token) >= _MIN_BEARER_CHARS
        and any(c.isdigit() for c in token)
        and any(c.isalpha() for c in token)
    )


def _entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


def _looks_random(value: str) -> bool:
    """Letters and digits at credential-like entropy, and not a UUID."""
    return (
        not _UUID.fullmatch(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and _entropy(value) >= _MIN_ENTROPY
    )


def _is_placeholder(value: str, quoted: bool) -> bool:
    """Whether a password value stands for a password without being one (`<password>`,
    `${DB_PASS}`, `getpass()`, `changeme`, `***`)."""
    v = value.strip()
    low = v.lower()
    return (
        len(v) < 3
        or len(set(v)) == 1  # ***, xxx, 000
        or not any(c.isalnum() for c in v)  # ..., ???, =
        or low in PLACEHOLDERS
        or v[0] in "<{[$%"  # <password>, {{ pw }}, ${DB_PASS}, %(pw)s: templates and env refs
        or "(" in v  # getpass(), os.environ.get(...): code, not a value
        or (not quoted and "[" in v)  # os.environ["PW"], cfg["pw"]
        or (not quoted and bool(_CODE_REF.fullmatch(v)))
        or (not quoted and v.isidentifier() and ("pass" in low or "pwd" in low))
    )


def _passwords(text: str, lower: str, mask: bool) -> list[Finding]:
    """The value of each password assignment (the key name is not part of the finding)."""
    found: list[Finding] = []
    done = 0  # end of the last assignment: a keyword inside its value starts nothing new
    for i, _ in sorted(_keyword_hits(lower, PASSWORD_KEYWORDS)):
        if i < done:
            continue
        m = PASSWORD.match(text, i)
        if m is None:
            continue
        done = m.end()
        group = next(g for g in (1, 2, 3) if m.group(g) is not None)
        if mask or not _is_placeholder(m.group(group), quoted=group != 3):
            found.append(Finding("password", *m.span(group)))
    return found

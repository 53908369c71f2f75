"""The redactor masks every credential the privacy agent detects, and stays linear in the text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.agents.privacy import CREDENTIAL_KINDS, find_kinds
from orchestra.core.credentials import find_credentials
from orchestra.core.redact import MASK, Redactor

ROOT = Path(__file__).resolve().parents[1]

# Assembled from parts so secret scanners do not flag this file (AWS's documented examples).
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
JWT = "eyJhbGciOiJIUzI1NiJ9" + ".eyJzdWIiOiIxMjM0NTY3ODkwIn0.k3Yx_Qz-9"
PEM_BODY = "MIIEowIBAAKCAQEA7Vx1\\nProc-Type: 4,ENCRYPTED\\nb3BlbnNzaC1rZXk+/=="

# (text, the text once masked): every credential shape, and the key names kept.
MASKED = [
    ("use sk-proj-Xy7kQ2mN9pL4vR8sT1wZ3bC6dF0gH5jK please", "use *** please"),
    ("ANTHROPIC_API_KEY=sk-ant-api03-Qm3xZ9vB7nK2pL5rT8wY1cF4hJ6dG0sA", "ANTHROPIC_API_KEY=***"),
    (f"aws_access_key_id = {AWS_KEY}", "aws_access_key_id = ***"),
    ("ASIA" + "Y34FZKBOKMUTVV7A expires", "*** expires"),
    (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = ***"),
    (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', '{"SecretAccessKey": "***"}'),
    ("token ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5", "token ***"),
    ("pat github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "pat ***"),
    ("slack xoxb-123456789012-abcdefGHIJKL", "slack ***"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc and rk_live_4eC39HqLyjWDarjtT1zdp7dc", "*** and ***"),
    ("maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "maps ***"),
    ("GROQ gsk_8fJ2kL9mQ4nR7sT1vW3xY5zB", "GROQ ***"),
    ("HF hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "HF ***"),
    ("Authorization: Bearer abcdefghij", "Authorization: Bearer ***"),
    (f"Authorization: Bearer {JWT}", "Authorization: Bearer ***"),
    (f"cookie {JWT}; path=/", "cookie ***; path=/"),
    ("SECRET_TOKEN: 9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZyyXXq", "SECRET_TOKEN: ***"),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc+/=\n-----END RSA PRIVATE KEY-----\nthen",
        "***\nthen",
    ),
    (  # as a provider echoes it in JSON
        f'{{"content": "-----BEGIN OPENSSH PRIVATE KEY-----\\n{PEM_BODY}\\n'
        '-----END OPENSSH PRIVATE KEY-----"}',
        '{"content": "***"}',
    ),
    ("cut short -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg", "cut short ***"),
    ('db_password = "hunter2!x" ok', 'db_password = "***" ok'),
    ('{"user": "ann", "password": "correct horse battery"}', '{"user": "ann", "password": "***"}'),
    ('{\\"password\\": \\"s3cr3t\\"}', '{\\"password\\": \\"***\\"}'),
    ("PWD=Tr0ub4dor&3 next", "PWD=*** next"),
    ("passwd: xyzzy99", "passwd: ***"),
    ("password=changeme", "password=***"),  # a placeholder to the agent, masked all the same
]

# Provider error text that holds no credential: it must come through unchanged.
UNCHANGED = [
    "Rate limit reached for gpt-4o-mini in organization org-abc123 on tokens per min (TPM)",
    "Incorrect API key provided: sk-proj-********abcd. Find your API key at /account/api-keys.",
    "risk-assessment-framework-for-enterprises",
    "session token 123e4567-e89b-12d3-a456-426614174000",
    "my password is strong, and the max_tokens is 4096",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCg\n-----END PUBLIC KEY-----",
    "the key rotation policy: keys=3, tokens=1200",
]


@pytest.mark.parametrize(("text", "masked"), MASKED)
def test_every_credential_shape_is_masked(text: str, masked: str) -> None:
    assert Redactor()(text) == masked


@pytest.mark.parametrize("text", UNCHANGED)
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert Redactor()(text) == text


def test_known_values_are_masked_longest_first() -> None:
    redact = Redactor(["abcd", "abcdefgh", "xyz"])  # "xyz": too short to mask safely
    assert redact("abcdefgh abcd xyz") == f"{MASK} {MASK} xyz"
    redact.add("xyz1")
    assert redact("xyz1") == MASK


# Pieces people write around credentials; hypothesis glues them together at random.
PIECES = [
    *(text for text, _ in MASKED),
    *UNCHANGED,
    "key", "token", "secret", "Bearer", "password", "pwd", "pass", "=", ": ", " is ", '"', "'",
    "\\", "\n", " ", "-", "_", "sk-", "eyJ", "AKIA", "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----", "9f8e7d6c5b4a39281706f5e4d3c2b1a0", "ZZyyXXq0123456789abcdef",
]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=12)), max_size=12))
def test_the_redactor_masks_whatever_the_privacy_agent_flags_as_a_credential(
    pieces: list[str],
) -> None:
    text = "".join(pieces)
    masks = sorted((f.start, f.end) for f in find_credentials(text, mask=True))
    for finding in find_credentials(text):
        # Each character the agent flags lies under one of the redactor's masks.
        assert all(any(s <= i < e for s, e in masks) for i in range(finding.start, finding.end)), (
            finding,
            text,
        )
    # And the agent's own scan of the same text agrees with `find_credentials`.
    counts = find_kinds(text, frozenset(CREDENTIAL_KINDS))
    assert sum(counts.values()) == len(find_credentials(text))


# 1 MB strings built to make a backtracking regex (or a rescan per keyword) go quadratic.
ADVERSARIAL = [
    "eyJ",
    "eyJaaaaaaaaa.",
    "sk-",
    "sk-" + "a" * 19 + " ",
    "key=",
    "keykey_",
    "key=" + "Ab3x" * 8 + " ",
    "Bearer abc1",
    "secret_access_key=",
    'pwd="',
    "pwd='",
    "password=",
    "-----BEGIN PRIVATE KEY-----\n-",
    "AKIA" + "A" * 15 + " ",
]


@pytest.mark.parametrize("unit", ADVERSARIAL)
def test_a_megabyte_of_adversarial_text_is_masked_in_linear_time(unit: str) -> None:
    # Measured at 0.05-0.25 s per string; a quadratic scan would take minutes. The time is not
    # asserted (machines vary): the run just has to end well inside the timeout.
    script = (
        "import sys; from orchestra.core.redact import Redactor; "
        "unit = sys.argv[1]; text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]; "
        "Redactor(['some-known-value'])(text)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, unit], cwd=ROOT, timeout=5, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

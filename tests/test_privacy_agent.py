"""The privacy agent: what it flags, what it leaves alone, and that it never repeats a secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra import (
    ALL_TIERS,
    AllCandidatesFailed,
    NoAllowedModelError,
    Orchestra,
    ProviderError,
    Request,
    Tier,
    Verdict,
    agent,
)
from orchestra.agents.privacy import (
    BUILTIN_KINDS,
    CREDENTIAL_KINDS,
    PERSONAL_KINDS,
    PrivacyAgent,
    find_kinds,
)
from orchestra.agents.registry import build_agents, builtin_agent_type
from orchestra.config import parse_config
from orchestra.core.errors import ConfigError
from orchestra.testing import Call, FunctionBackend, StubProvider

# AWS's documented example key, assembled so secret scanners do not flag this file.
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"

POSITIVES = [
    ("api_key", "use sk-proj-Xy7kQ2mN9pL4vR8sT1wZ3bC6dF0gH5jK please"),
    ("api_key", "ANTHROPIC_API_KEY=sk-ant-api03-Qm3xZ9vB7nK2pL5rT8wY1cF4hJ6dG0sA"),
    ("api_key", "aws_access_key_id = " + AWS_KEY),
    ("api_key", "token ghp_aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"),
    ("api_key", "github_pat_11ABCDEFG0123456789_abcdefghijklmnop"),
    ("api_key", "maps key AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    ("api_key", "slack xoxb-123456789012-abcdefGHIJKL"),
    ("api_key", "stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'"),
    ("api_key", "GROQ gsk_8fJ2kL9mQ4nR7sT1vW3xY5zB"),
    ("api_key", "SECRET_TOKEN: 9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZyyXXq"),
    ("api_key", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.k3Yx"),
    ("api_key", "Authorization: Bearer 7Fq2xK9mW4pL8sT1vZ3b"),
    ("api_key", "the cookie holds eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.k3Yx_Qz"),
    ("api_key", "restricted rk_live_51HxYzAbCdEfGhIjKlMn"),
    ("api_key", "HF_TOKEN=hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    ("api_key", "temporary ASIA" + "Y34FZKBOKMUTVV7A with its session"),
    ("api_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("api_key", '{"SecretAccessKey": "wJalrXUtnFEMIxKzMDENGxbPxRfiCYEXAMPLEKEY"}'),  # no digit
    ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA\n"),
    ("private_key", "-----BEGIN PRIVATE KEY-----"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\n"),
    ("password", 'db_password = "hunter2!x"'),
    ("password", '{"user": "ann", "password": "correct horse battery"}'),
    ("password", "PWD=Tr0ub4dor&3"),
    ("password", "passwd: xyzzy99"),
    ("email", "write to jane.doe+news@acme-mail.co.uk today"),
    ("phone", "call +44 20 7946 0958"),
    ("phone", "ring +1 (415) 555-2671 after lunch"),
    ("phone", "mobile: 06 12 34 56 78"),
    ("phone", "office (415) 555-2671"),
    ("phone", "Tel +4915112345678"),
    ("card", "card 4111 1111 1111 1111 exp 12/27"),
    ("card", "5500-0000-0000-0004"),
    ("card", "amex 3782 822463 10005"),
    ("card", "4012888888881881"),
    ("iban", "IBAN DE89 3704 0044 0532 0130 00, thanks"),
    ("iban", "pay GB82WEST12345698765432"),
    ("iban", "FR14 2004 1010 0505 0001 3M02 606"),
]

NEGATIVES = [
    "The meeting is on 2024-01-15 at 12:30:45.",
    "Upgrade to version 1.2.3.4 (build 2024.01.15)",
    "It costs $1,234.56 or €1.234,56, about 1 234 567 in total",
    "ISBN 978-3-16-148410-0 and ISBN 0-306-40615-2",
    "order 4111111111111112",  # 16 digits failing Luhn
    "id 123e4567-e89b-12d3-a456-426614174000",
    "session token 123e4567-e89b-12d3-a456-426614174000",
    "my password is strong and I keep it to myself",
    "Write a haiku about the sea, then explain its meter.",
    "password = '***'",
    "password: <password>",
    "password=changeme",
    "password = os.environ['DB_PASSWORD']",
    "pwd = getpass.getpass()",
    "password = password",
    "ssh user@localhost and mail me@example.com",
    "see logo@2x.png",
    "timestamp 1700000000123, host 192.168.100.200",
    "from 1990 - 2024 - 2025, rows 12.03.2024 15",
    "the api key rotation policy is documented",
    "risk-assessment-framework-for-enterprises",
    "Bearer authentication sends an Authorization: Bearer <token> header",
    "set Authorization: Bearer $OPENAI_API_KEY",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCg\n-----END PUBLIC KEY-----",
    "UK numbers look like DE89 but this is not an IBAN DE00 1234 5678 9012 3456 78",
]


async def check(prompt: str | list[dict[str, str]], **kwargs: object) -> Verdict:
    """The verdict of an agent scanning every built-in kind (unless `kinds` says otherwise)."""
    kwargs.setdefault("kinds", "all")
    return await PrivacyAgent(**kwargs).check(Request.of(prompt))  # type: ignore[arg-type]


def assert_no_leak(verdict: Verdict, secret: str) -> None:
    """Neither the value nor any 6-char piece of it appears in the serialized verdict."""
    assert_no_leak_in(verdict.model_dump_json(), secret)


def assert_no_leak_in(dumped: str, secret: str) -> None:
    assert secret not in dumped
    for i in range(len(secret) - 5):
        assert secret[i : i + 6] not in dumped, secret[i : i + 6]


@pytest.mark.parametrize(("kind", "prompt"), POSITIVES)
async def test_flags_each_kind(kind: str, prompt: str) -> None:
    verdict = await check(prompt)
    assert verdict.state == "sensitive"
    assert verdict.metrics["kinds"] == [kind]
    assert verdict.metrics["count"] == 1
    assert (verdict.target, verdict.allowed, verdict.confidence) == (
        Tier.LOCAL,
        frozenset({Tier.LOCAL}),
        1.0,
    )
    assert verdict.reason.startswith(f"found: {kind}")


@pytest.mark.parametrize("prompt", NEGATIVES)
async def test_leaves_look_alikes_alone(prompt: str) -> None:
    verdict = await check(prompt)
    assert (verdict.state, verdict.target, verdict.confidence) == ("clean", None, 0.0)
    assert verdict.allowed == ALL_TIERS
    assert verdict.metrics == {"kinds": [], "count": 0}


async def test_reason_lists_every_kind_sorted_and_the_count() -> None:
    verdict = await check(f"mail jane@acme.io the key {AWS_KEY} and ann@acme.io")
    assert verdict.metrics == {"kinds": ["api_key", "email"], "count": 3}
    assert verdict.reason.startswith("found: api_key, email")


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-Xy7kQ2mN9pL4vR8sT1wZ3bC6dF0gH5jK",
        AWS_KEY,
        "hunter2!xQz",
        "jane.doe@acme-mail.co.uk",
        "+44 20 7946 0958",
        "4111 1111 1111 1111",
        "DE89370400440532013000",
    ],
)
async def test_the_verdict_never_repeats_the_value(secret: str) -> None:
    verdict = await check(f'config: password = "{secret}" and also {secret}')
    assert verdict.state == "sensitive"
    assert_no_leak(verdict, secret)


async def test_allow_edge_opens_the_lan_only() -> None:
    verdict = await check("my card 4111 1111 1111 1111", allow_edge=True)
    assert verdict.allowed == frozenset({Tier.LOCAL, Tier.EDGE})
    assert verdict.target is Tier.LOCAL
    clean = await check("hello", allow_edge=True)
    assert clean.allowed == ALL_TIERS


async def test_kinds_limits_the_detectors() -> None:
    prompt = "mail jane@acme.io, card 4111 1111 1111 1111"
    verdict = await check(prompt, kinds=["card"])
    assert verdict.metrics["kinds"] == ["card"]
    assert (await check(prompt, kinds=[])).state == "clean"


async def test_by_default_only_credentials_are_looked_for() -> None:
    assert PrivacyAgent().kinds == frozenset(CREDENTIAL_KINDS)
    assert PrivacyAgent(kinds="all").kinds == frozenset(BUILTIN_KINDS)
    assert set(BUILTIN_KINDS) == {*CREDENTIAL_KINDS, *PERSONAL_KINDS}
    personal = "mail jane@acme.io, card 4111 1111 1111 1111, call +44 20 7946 0958"
    assert (await check(personal, kinds=None)).state == "clean"
    assert (await check(personal)).metrics["kinds"] == ["card", "email", "phone"]
    for kind, prompt in POSITIVES:
        if kind in CREDENTIAL_KINDS:
            assert (await check(prompt, kinds=None)).metrics["kinds"] == [kind], prompt


def test_personal_data_is_asked_for_in_the_config() -> None:
    def privacy(settings: dict[str, object]) -> PrivacyAgent:
        config = parse_config({"agents": {"privacy": settings}})
        (agent,) = [a for a in build_agents(config.agents) if isinstance(a, PrivacyAgent)]
        return agent

    assert privacy({}).kinds == frozenset(CREDENTIAL_KINDS)
    assert privacy({"kinds": "all"}).kinds == frozenset(BUILTIN_KINDS)
    assert privacy({"kinds": ["api_key", "email"]}).kinds == {"api_key", "email"}
    with pytest.raises(ConfigError, match='"all"'):
        privacy({"kinds": "everything"})


async def test_custom_patterns_report_their_own_kind() -> None:
    verdict = await check("ticket for EMP-123456", patterns={"employee_id": r"EMP-\d{6}"})
    assert verdict.metrics == {"kinds": ["employee_id"], "count": 1}
    assert verdict.reason.startswith("found: employee_id")
    assert_no_leak(verdict, "EMP-123456")
    assert (await check("EMP-12", patterns={"employee_id": r"EMP-\d{6}"})).state == "clean"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kinds": ["email", "ssn"]}, "unknown privacy kind"),
        ({"kinds": "email"}, "list of kind names"),
        ({"kinds": ["custom"]}, "patterns"),
        ({"patterns": {"bad": "EMP-(\\d"}}, "not a valid regex"),
        ({"patterns": {"anything": "x*"}}, "empty string"),
        ({"patterns": {"email": "x"}}, "built-in kind"),
        ({"patterns": {"": "x"}}, "must be a word"),
        ({"patterns": {"n": 3}}, "regex string"),
        ({"allow_edge": "yes"}, "allow_edge"),
    ],
)
def test_invalid_config_raises_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrivacyAgent(**kwargs)  # type: ignore[arg-type]


async def test_every_message_is_scanned() -> None:
    messages = [
        {"role": "system", "content": "You are helpful. Internal key: " + AWS_KEY},
        {"role": "user", "content": "my mail is jane@acme.io"},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "What's the weather?"},
    ]
    verdict = await check(messages)
    assert verdict.metrics == {"kinds": ["api_key", "email"], "count": 2}


async def test_only_the_first_100k_chars_of_a_message_are_scanned() -> None:
    hidden = "x " * 60_000 + AWS_KEY
    assert (await check(hidden)).state == "clean"
    assert (await check(AWS_KEY + " " + "x " * 60_000)).state == "sensitive"


def test_registered_as_a_builtin_per_request_agent() -> None:
    assert builtin_agent_type("privacy") is PrivacyAgent
    assert PrivacyAgent.name == "privacy" and PrivacyAgent().interval is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_gives_a_valid_verdict(text: str) -> None:
    agent = PrivacyAgent(patterns={"employee_id": r"EMP-\d{6}"})
    found = find_kinds(text, agent.kinds, agent.patterns)
    verdict = agent.judge(found)
    assert Verdict.model_validate_json(verdict.model_dump_json()) == verdict
    assert set(verdict.metrics["kinds"]) <= {*BUILTIN_KINDS, "employee_id"}
    assert (verdict.state == "clean") == (verdict.metrics["count"] == 0)


def luhn_complete(body: str) -> str:
    """`body` plus the check digit that makes it pass Luhn."""
    for check_digit in "0123456789":
        digits = body + check_digit
        total = sum(
            (d * 2 - 9 if d > 4 else d * 2) if i % 2 else d
            for i, d in enumerate(int(c) for c in reversed(digits))
        )
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    """A Luhn-valid number of a real network's prefix and length, printed as people do."""
    prefix, length = draw(
        st.sampled_from([("4", 16), ("4", 13), ("51", 16), ("55", 16), ("22", 16), ("6011", 16)])
    )
    body = prefix + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=length - len(prefix) - 1,
                      max_size=length - len(prefix) - 1))
    )  # fmt: skip
    digits = luhn_complete(body)
    sep = draw(st.sampled_from(["", " ", "-"]))
    return sep.join(digits[i : i + 4] for i in range(0, len(digits), 4))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), card_numbers(), st.text(max_size=200))
def test_any_text_with_a_card_number_is_flagged(before: str, card: str, after: str) -> None:
    # Whitespace around the number is what makes it a number of its own.
    assert "card" in find_kinds(f"{before} {card}\n{after}")


# -- end to end --------------------------------------------------------------------------------


async def test_a_key_never_reaches_the_cloud_nor_the_history(
    stub: StubProvider, write_config: Callable[..., Path]
) -> None:
    key = "sk-proj-Xy7kQ2mN9pL4vR8sT1wZ3bC6dF0gH5jK"
    config = write_config(model_toml("stub-cloud", stub.url))
    async with Orchestra(config=config, agents=[PrivacyAgent()]) as orc:
        with pytest.raises(NoAllowedModelError, match="privacy"):
            await orc.complete(f"Why does my OpenAI key {key} fail?")
        answered = await orc.complete("What is the capital of France?")
        history = await orc.history()
    assert answered.text == "Paris"
    assert len(stub.requests) == 1  # only the clean prompt went out
    dumped = json.dumps(history)
    assert key not in dumped
    for i in range(len(key) - 5):
        assert key[i : i + 6] not in dumped


async def test_a_default_runtime_keeps_an_aws_key_on_the_local_tier(stub: StubProvider) -> None:
    """On by default: no `[agents]` section, and an agent voting cloud, louder than the rest."""
    config = parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "models": [
                # The stub only gives the connectivity agent a cloud endpoint that answers its
                # probes; every call goes to the function backend.
                {"name": "cloud", "tier": "cloud", "litellm_model": "openai/big",
                 "api_base": stub.url, "api_key_env": "STUB_API_KEY"},
                {"name": "local", "tier": "local", "litellm_model": "ollama/tiny"},
            ],
            # Loud enough to outvote the built-in agents whatever the machine's load.
            "policy": {"weights": {"cloud-please": 10.0}},
        }
    )  # fmt: skip

    @agent(name="cloud-please")
    def cloud_please(request: Request | None) -> dict[str, object]:
        return {"target": "cloud", "confidence": 1.0, "reason": "cloud answers better"}

    backend = FunctionBackend(lambda call: f"{call.model} answers")
    async with Orchestra(config, backend=backend) as orc:
        orc.hook_agent(cloud_please)
        clean = await orc.complete("What is the capital of France?")
        leaky = await orc.complete(f"Why does boto3 reject my key {AWS_KEY}?")
        history = await orc.history()
    # The vote for cloud wins a clean prompt...
    assert (clean.model, clean.tier) == ("cloud", Tier.CLOUD)
    # ...but not one holding a key: it is answered locally, and the cloud is not even a fallback.
    assert (leaky.model, leaky.tier) == ("local", Tier.LOCAL)
    assert [c.model for c in leaky.decision.candidates] == ["local"]
    privacy = next(v for v in leaky.verdicts if v.agent == "privacy")
    assert privacy.state == "sensitive" and privacy.metrics["kinds"] == ["api_key"]
    assert [call.model for call in backend.calls] == ["cloud", "local"]
    assert_no_leak_in(json.dumps(history), AWS_KEY)


async def test_a_default_runtime_fails_rather_than_send_a_key_to_the_cloud(
    stub: StubProvider,
) -> None:
    """With the local model down, a prompt holding a key fails: the cloud is no fallback."""
    config = parse_config(
        {
            "embedded": {"enabled": False},
            "health": {"enabled": False},
            "models": [
                {"name": "local", "tier": "local", "litellm_model": "ollama/tiny"},
                {"name": "cloud", "tier": "cloud", "litellm_model": "openai/big",
                 "api_base": stub.url, "api_key_env": "STUB_API_KEY"},
            ],
        }
    )  # fmt: skip

    def answer(call: Call) -> str:
        if call.model == "local":
            raise ProviderError("local model crashed", kind="server", model="local")
        return "cloud answers"

    prompt = f"aws_access_key_id = {AWS_KEY}"
    backend = FunctionBackend(answer)
    async with Orchestra(config, backend=backend) as orc:
        decision, _ = await orc.decide(prompt)
        with pytest.raises(AllCandidatesFailed) as raised:
            await orc.complete(prompt, timeout_s=5)
    assert "privacy" in decision.reason and "cloud" in decision.reason
    assert {a.model for a in raised.value.attempts} == {"local"}
    assert {call.model for call in backend.calls} == {"local"}

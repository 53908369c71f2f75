"""The config file (orchestra.config) and the defaults it drives (orchestra.agents.registry)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import model_toml

from orchestra import Config, ConfigError, PolicyError, Tier, load_config
from orchestra.agents.registry import build_agents
from orchestra.config import parse_config, resolve_config_path
from orchestra.policies.base import Policy
from orchestra.policies.default import DefaultPolicy
from orchestra.policies.registry import PolicyConfig, resolve_policy

URL = "http://127.0.0.1:9/v1"  # never contacted: loading a config opens no socket


def write(tmp_path: Path, text: str, name: str = "custom.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message, "the error names the file"
    return message


# -- loading -----------------------------------------------------------------------------------


def test_valid_file_loads(write_config: Callable[..., Path]) -> None:
    path = write_config(
        model_toml("gpt-stub", URL),
        model_toml("edge-box", URL, tier="edge", context_window=4096),
        extra=(
            "[budget]\ndaily_usd = 1.5\nmonthly_usd = 20\n"
            '[policy]\nname = "default"\nweights = { complexity = 2.0, cost = 0.5 }\n'
        ),
    )
    config = load_config(path)
    assert [m.name for m in config.models] == ["gpt-stub", "edge-box"]
    first, second = config.models
    assert first.tier is Tier.CLOUD and first.api_base == URL
    assert first.api_key_env == "STUB_API_KEY" and first.input_cost_per_mtok == 0.15
    assert second.tier is Tier.EDGE and second.context_window == 4096
    assert config.budget.daily_usd == 1.5 and config.budget.monthly_usd == 20.0
    assert config.policy.weights == {"complexity": 2.0, "cost": 0.5}
    assert config.embedded.enabled is False
    assert config.source == path


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config.source == path
    assert config.model_dump() == Config().model_dump()
    assert config.models == ()
    assert config.embedded.enabled is True
    assert config.policy.name == "default" and config.policy.weights == {}
    assert config.budget.daily_usd is None and config.budget.monthly_usd is None
    assert config.agents.enabled == ("resource", "connectivity", "cost", "complexity", "privacy")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "orchestra.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(missing)
    assert str(missing) in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[[models]\nname = 'x'\n")
    assert "not valid TOML" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    folder = tmp_path / "conf.d"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(folder)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (model_toml("m", URL, tier="moon"), "models[0].tier"),
        (model_toml("m", URL, input_cost_per_mtok=-1.0), "models[0].input_cost_per_mtok"),
        (model_toml("a", URL) + model_toml("b", URL, timeout_s=0), "models[1].timeout_s"),
        (model_toml("m", URL, context_window="big"), "models[0].context_window"),
        ("[budget]\ndaily_usd = -5\n", "budget.daily_usd"),
        ("[embedded]\nn_ctx = 16\n", "embedded.n_ctx"),
        ("[store]\nflush_interval_s = 0\n", "store.flush_interval_s"),
        ("[policy]\nweights = { cost = 'heavy' }\n", "policy.weights.cost"),
        ("request_timeout_s = -1\n", "request_timeout_s"),
        # No scheme, or none we can call: said now, not as a connection error at the first call.
        (model_toml("m", "localhost:11434"), "models[0].api_base"),
        (model_toml("m", "ftp://127.0.0.1/v1"), "models[0].api_base"),
        (model_toml("m", "http://"), "models[0].api_base"),
    ],
)
def test_bad_field_names_its_path(tmp_path: Path, text: str, field: str) -> None:
    message = config_error(tmp_path, text)
    assert f"  {field}: " in message, message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("colour = 'red'\n", "colour"),
        ("[budget]\nweekly_usd = 3\n", "budget.weekly_usd"),
        ("[embedded]\nmodel_path = '/tmp/x.gguf'\n", "embedded.model_path"),
        ("[discovery]\nlan = true\n", "discovery.lan"),
        (model_toml("m", URL, provider="openai"), "models[0].provider"),
    ],
)
def test_unknown_keys_rejected(tmp_path: Path, text: str, field: str) -> None:
    message = config_error(tmp_path, text)
    assert field in message and "xtra" in message, message  # pydantic: "Extra inputs ..."


def test_api_key_in_file_rejected_without_echoing_it(tmp_path: Path) -> None:
    secret = "sk-live-do-not-print-me-123456"
    message = config_error(tmp_path, model_toml("m", URL, api_key=secret))
    assert "models[0]" in message and "api_key_env" in message
    assert secret not in message


def test_duplicate_model_names_rejected(tmp_path: Path) -> None:
    message = config_error(tmp_path, model_toml("twin", URL) + model_toml("twin", URL))
    assert "'twin'" in message and "twice" in message


def test_embedded_name_clash(tmp_path: Path) -> None:
    clash = model_toml("smollm2-135m", URL, tier="local")
    message = config_error(tmp_path, clash)
    assert "smollm2-135m" in message and "embedded" in message
    # with the embedded model off, the name is free
    off = write(tmp_path, clash + "[embedded]\nenabled = false\n", name="off.toml")
    assert [m.name for m in load_config(off).models] == ["smollm2-135m"]
    renamed = write(tmp_path, clash + "[embedded]\nname = 'tiny'\n", name="renamed.toml")
    assert load_config(renamed).embedded.name == "tiny"


def test_parse_config_without_source_says_config() -> None:
    with pytest.raises(ConfigError, match=r"^config: invalid configuration"):
        parse_config({"budget": {"daily_usd": -1}})


# -- which file --------------------------------------------------------------------------------


def policy_file(tmp_path: Path, name: str, where: str) -> Path:
    return write(tmp_path, f'[policy]\nname = "{where}"\n', name=name)


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # nothing anywhere: defaults (conftest chdirs to tmp_path and clears $ORCHESTRA_CONFIG)
    assert resolve_config_path(None) is None
    defaults = load_config()
    assert defaults.source is None and defaults.policy.name == "default"

    local = policy_file(tmp_path, "orchestra.toml", "local")
    assert load_config().policy.name == "local"
    assert resolve_config_path(None) == Path("orchestra.toml")
    assert load_config().source is not None and load_config().source.resolve() == local

    env = policy_file(tmp_path, "env.toml", "env")
    monkeypatch.setenv("ORCHESTRA_CONFIG", str(env))
    assert load_config().policy.name == "env"
    assert load_config().source == env

    explicit = policy_file(tmp_path, "explicit.toml", "explicit")
    assert load_config(explicit).policy.name == "explicit"
    assert load_config(str(explicit)).source == explicit


def test_env_config_that_does_not_exist_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_file(tmp_path, "orchestra.toml", "local")
    missing = tmp_path / "gone.toml"
    monkeypatch.setenv("ORCHESTRA_CONFIG", str(missing))
    with pytest.raises(ConfigError, match="not found") as info:
        load_config()
    assert str(missing) in str(info.value)


def test_local_file_is_only_used_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_file(tmp_path, "orchestra.toml", "local")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config().policy.name == "default"


# -- discovery defaults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("models", "discovery", "expected"),
    [
        (False, "", (True, True)),
        (True, "", (False, False)),
        (True, "[discovery]\nollama = true\n", (True, False)),
        (True, "[discovery]\nenv_providers = true\n", (False, True)),
        (False, "[discovery]\nollama = false\nenv_providers = false\n", (False, False)),
    ],
)
def test_discovery_defaults(
    tmp_path: Path, models: bool, discovery: str, expected: tuple[bool, bool]
) -> None:
    text = (model_toml("m", URL) if models else "") + discovery
    config = load_config(write(tmp_path, text))
    assert (config.discover_ollama, config.discover_env_providers) == expected


# -- policies ----------------------------------------------------------------------------------


def test_resolve_default_policy() -> None:
    policy = resolve_policy(PolicyConfig())
    assert isinstance(policy, DefaultPolicy) and isinstance(policy, Policy)
    assert policy.name == "default" and policy.weights == {}


def test_resolve_policy_passes_weights() -> None:
    policy = resolve_policy(PolicyConfig(weights={"complexity": 2.0}))
    assert isinstance(policy, DefaultPolicy)
    assert policy.weights == {"complexity": 2.0}


def test_unknown_policy_lists_builtins() -> None:
    with pytest.raises(PolicyError) as info:
        resolve_policy(PolicyConfig(name="fastest"))
    message = str(info.value)
    assert "'fastest'" in message and "default" in message and "module:Class" in message


def test_policy_from_module_and_class() -> None:
    import policy_fixture

    policy = resolve_policy(PolicyConfig(name="policy_fixture:FirstModelPolicy"))
    assert isinstance(policy, policy_fixture.FirstModelPolicy)
    assert policy.weights == {}
    weighted = resolve_policy(
        PolicyConfig(name="policy_fixture:FirstModelPolicy", weights={"cost": 1.5})
    )
    assert isinstance(weighted, policy_fixture.FirstModelPolicy)
    assert weighted.weights == {"cost": 1.5}


def test_policy_instance_used_as_is() -> None:
    import policy_fixture

    assert resolve_policy(PolicyConfig(name="policy_fixture:READY_MADE")) is (
        policy_fixture.READY_MADE
    )


def test_policy_that_takes_no_weights() -> None:
    assert resolve_policy(PolicyConfig(name="policy_fixture:NoWeightsPolicy")).name == (
        "no-weights"
    )
    with pytest.raises(PolicyError, match="cannot build"):
        resolve_policy(PolicyConfig(name="policy_fixture:NoWeightsPolicy", weights={"x": 1}))


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("no_such_module_zz:Policy", "cannot load"),
        ("policy_fixture:Missing", "cannot load"),
        ("policy_fixture.sub:Policy", "cannot load"),
        ("policy_fixture:", "cannot load"),
        ("policy_fixture:NOT_A_POLICY", "not a policy"),
        ("json:loads", "not a policy"),
        (":Policy", "cannot load"),
        (".relative:Policy", "cannot load"),
    ],
)
def test_broken_policy_path(name: str, match: str) -> None:
    with pytest.raises(PolicyError, match=match) as info:
        resolve_policy(PolicyConfig(name=name))
    assert repr(name) in str(info.value)


# -- built-in agents ---------------------------------------------------------------------------


def agents_config(tmp_path: Path, text: str) -> Config:
    return load_config(write(tmp_path, text))


def test_builtin_agents_default_set(tmp_path: Path) -> None:
    agents = build_agents(agents_config(tmp_path, "").agents)
    assert [a.agent_name for a in agents] == [
        "resource",
        "connectivity",
        "cost",
        "complexity",
        "privacy",
    ]


def test_builtin_agent_settings_applied(tmp_path: Path) -> None:
    text = '[agents]\nenabled = ["resource", "complexity"]\n'
    text += "[agents.resource]\ninterval = 0.5\ncpu_busy = 70\n"
    text += "[agents.complexity]\nedge_from = 0.2\ncloud_from = 0.6\n"
    resource, complexity = build_agents(agents_config(tmp_path, text).agents)
    assert resource.agent_name == "resource" and resource.interval == 0.5
    assert resource.cpu_busy == 70  # type: ignore[attr-defined]
    assert complexity.agent_name == "complexity"
    assert (complexity.edge_from, complexity.cloud_from) == (0.2, 0.6)  # type: ignore[attr-defined]


def test_unknown_agent_name(tmp_path: Path) -> None:
    config = agents_config(tmp_path, '[agents]\nenabled = ["resource", "telepathy"]\n')
    with pytest.raises(ConfigError) as info:
        build_agents(config.agents)
    message = str(info.value)
    assert "'telepathy'" in message and "resource" in message and "complexity" in message


def test_agent_settings_that_are_not_a_table_fail_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[agents.resource\] must be a table"):
        agents_config(tmp_path, "[agents]\nresource = 5\n")


def test_settings_for_an_agent_that_is_not_enabled_are_rejected(tmp_path: Path) -> None:
    text = '[agents]\nenabled = ["cost"]\n[agents.resource]\ninterval = 1.0\n'
    with pytest.raises(ConfigError, match="not enabled"):
        agents_config(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[agents.resource]\nnonsense = 1\n", "nonsense"),
        ("[agents.complexity]\nedge_from = 0.9\ncloud_from = 0.1\n", "edge_from"),
    ],
)
def test_bad_agent_setting(tmp_path: Path, text: str, fragment: str) -> None:
    config = agents_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        build_agents(config.agents)
    assert fragment in str(info.value)
    assert "agents." in str(info.value)


def test_a_misspelt_setting_is_named_with_the_settings_there_are(tmp_path: Path) -> None:
    """Not Python's "__init__() got an unexpected keyword argument": the table, the key, and
    what the agent or policy takes instead."""
    config = agents_config(tmp_path, "[agents.complexity]\nedge_form = 0.5\n")
    with pytest.raises(ConfigError) as info:
        build_agents(config.agents)
    assert str(info.value) == (
        "[agents.complexity]: unknown setting 'edge_form'; it takes: edge_from, cloud_from, "
        "scorer, model"
    )
    policy = PolicyConfig.model_validate({"name": "cost_saver", "max_teir": "edge"})
    with pytest.raises(PolicyError) as refused:
        resolve_policy(policy)
    assert str(refused.value).endswith("unknown setting 'max_teir'; it takes: max_tier, weights")


def test_misspelt_agents_key_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="enabeld"):
        build_agents(agents_config(tmp_path, '[agents]\nenabeld = ["cost"]\n').agents)

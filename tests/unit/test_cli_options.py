"""The process commands' options come from one table over the config dataclasses (xlmate/cli.py)."""

from __future__ import annotations

import dataclasses
import os

import click
import pytest

from xlmate.cli import BROKER_OPTIONS, DISCOVERY_OPTIONS, EDGE_OPTIONS, _build, cli
from xlmate.config import BrokerConfig, DiscoveryConfig, EdgeConfig

COMMANDS = {"discovery": DiscoveryConfig, "broker": BrokerConfig, "edge": EdgeConfig}
OPTIONS = {"discovery": DISCOVERY_OPTIONS, "broker": BROKER_OPTIONS, "edge": EDGE_OPTIONS}
REQUIRED = {"edge": ["--region", "eu"]}


def parse(name: str, args: list[str]) -> object:
    """The config ``xlmate NAME ARGS`` would run with (environment included), without running."""
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    ctx = command.make_context(name, list(args), auto_envvar_prefix=f"XLMATE_{name.upper()}")
    return _build(COMMANDS[name], ctx.params, OPTIONS[name])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_defaults_are_the_dataclass_defaults(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no flags and no variables, each command builds exactly its config class's defaults."""
    for key in [k for k in os.environ if k.startswith("XLMATE_")]:
        monkeypatch.delenv(key)
    expected = COMMANDS[name](**({"region": "eu"} if name == "edge" else {}))
    assert parse(name, REQUIRED.get(name, [])) == expected


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_names_a_config_field(name: str) -> None:
    """Each option of a process command is a field of its config (no third definition)."""
    fields = {f.name for f in dataclasses.fields(COMMANDS[name])}
    command = cli.commands[name]
    for param in command.params:
        assert param.name in fields, param.name


def test_environment_variables_reach_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """XLMATE_EDGE_<OPTION> sets each kind of option; older field-named variables still work."""
    monkeypatch.setenv("XLMATE_EDGE_REGION", "us-east")
    monkeypatch.setenv("XLMATE_EDGE_PORT", "9101")
    monkeypatch.setenv("XLMATE_EDGE_RATE_PER_S", "5.5")
    monkeypatch.setenv("XLMATE_EDGE_EDGE_ID", "legacy-name")  # before: --id's variable
    monkeypatch.setenv("XLMATE_EDGE_TRUSTED_PROXY", "127.0.0.1 10.0.0.0/8")
    monkeypatch.setenv("XLMATE_CURVE_DIR", "/etc/xlmate/keys")
    config = parse("edge", [])
    assert isinstance(config, EdgeConfig)
    assert (config.region, config.port, config.rate_per_s) == ("us-east", 9101, 5.5)
    assert config.id == "legacy-name" and config.discovery == "tcp://127.0.0.1:5570"
    assert config.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert str(config.curve_dir) == "/etc/xlmate/keys"
    flagged = parse("edge", ["--id", "flag-wins", "--discovery", ""])
    assert isinstance(flagged, EdgeConfig)
    assert flagged.id == "flag-wins" and flagged.discovery is None  # '' means "do not register"

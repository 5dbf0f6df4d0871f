"""environments/registry.py and `python -m environments`: plugins by name, and errors that say how to fix them."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from environments import registry
from environments.__main__ import main as cli
from environments.base import Environment
from environments.echo import EchoEnvironment

HERE = __name__  # these classes are entry-point targets below


class Unnamed(EchoEnvironment):
    name = ""


class Misnamed(EchoEnvironment):
    name = "other"


class Incomplete(Environment):
    name = "incomplete"


class HalfMultiTurn(EchoEnvironment):
    name = "half"
    multi_turn = True


def _register(monkeypatch, *pairs: tuple[str, str]) -> None:
    fake = [EntryPoint(name=n, value=v, group=registry.GROUP) for n, v in pairs]
    monkeypatch.setattr(registry, "_entry_points", lambda: fake)


def test_builtin_echo_is_found_through_its_entry_point():
    assert "echo" in registry.available()
    assert registry.available()["echo"].value == "environments.echo:EchoEnvironment"
    assert registry.load("echo") is EchoEnvironment


def test_unknown_name_lists_installed_and_says_how_to_fix(monkeypatch):
    _register(monkeypatch, ("echo", "environments.echo:EchoEnvironment"))
    with pytest.raises(registry.PluginError) as err:
        registry.load("nope")
    msg = str(err.value)
    assert "'nope'" in msg and "installed: echo" in msg
    assert "pip install the plugin package or check the entry point in its pyproject" in msg


@pytest.mark.parametrize("value, expected", [
    ("no_such_module_xyz:Env", r"importing module 'no_such_module_xyz' failed: ModuleNotFoundError"),
    ("environments.echo:Missing", r"names an attribute module 'environments.echo' does not have"),
    ("environments.echo:LENGTHS", r"not a subclass of environments.base.Environment"),
    (f"{HERE}:Unnamed", r"empty `name`; set `name = 'broken'`"),
    (f"{HERE}:Misnamed", r"has name 'other' but is registered as 'broken'"),
])
def test_broken_plugins_explain_themselves(monkeypatch, value, expected):
    _register(monkeypatch, ("broken", value))
    with pytest.raises(registry.PluginError, match=expected):
        registry.load("broken")


def test_missing_methods_and_import_time_exceptions(monkeypatch, tmp_path):
    _register(monkeypatch, ("incomplete", f"{HERE}:Incomplete"), ("half", f"{HERE}:HalfMultiTurn"),
              ("crashy", "polyrl_crashy_plugin:Env"))
    with pytest.raises(registry.PluginError, match="does not implement load_tasks, verify, reference_response"):
        registry.load("incomplete")
    with pytest.raises(registry.PluginError, match="multi_turn = True but does not implement reset, step"):
        registry.load("half")
    (tmp_path / "polyrl_crashy_plugin.py").write_text("raise RuntimeError('no GPU found')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(registry.PluginError, match="'polyrl_crashy_plugin' raised RuntimeError: no GPU found"):
        registry.load("crashy")


def test_a_name_claimed_by_two_packages_is_an_error(monkeypatch):
    _register(monkeypatch, ("echo", "environments.echo:EchoEnvironment"), ("echo", "other_pkg:Echo"))
    assert registry.available()["echo"].value == "environments.echo:EchoEnvironment"
    with pytest.raises(registry.PluginError, match="more than one package"):
        registry.load("echo")


def test_cli_list(monkeypatch, capsys):
    _register(monkeypatch, ("echo", "environments.echo:EchoEnvironment"), ("broken", "no_such_module_xyz:Env"))
    assert cli(["list", "--tasks"]) == 1  # a broken plugin is reported, the others still listed
    out, err = capsys.readouterr()
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "VERSION", "MULTI_TURN", "MODULE", "TASKS"]
    assert "echo 0.1.0 False environments.echo 30" in [" ".join(r.split()) for r in rows]
    assert "broken" in err and "ModuleNotFoundError" in err
    _register(monkeypatch, ("echo", "environments.echo:EchoEnvironment"))
    assert cli(["list"]) == 0


def test_cli_new_validates_the_name_and_target(tmp_path, capsys):
    for bad in ("9lives", "my-env", "MyEnv", "a b"):
        assert cli(["new", bad, "--dir", str(tmp_path)]) == 2
        assert "lower-case Python identifier" in capsys.readouterr().err
    assert cli(["new", "echo", "--dir", str(tmp_path)]) == 2
    assert "already installed" in capsys.readouterr().err
    assert cli(["new", "fresh_env", "--dir", str(tmp_path)]) == 0
    pkg = tmp_path / "polyrl-env-fresh-env"
    assert {p.name for p in pkg.rglob("*") if p.is_file()} == {
        "pyproject.toml", "README.md", "polyrl_env_fresh_env.py", "test_fresh_env.py"}
    assert 'fresh_env = "polyrl_env_fresh_env:FreshEnvEnvironment"' in (pkg / "pyproject.toml").read_text()
    assert cli(["new", "fresh_env", "--dir", str(tmp_path)]) == 2  # never overwrites
    assert "not empty" in capsys.readouterr().err


def test_generated_module_is_a_valid_plugin(tmp_path, monkeypatch):
    assert cli(["new", "gen_check", "--dir", str(tmp_path)]) == 0
    monkeypatch.syspath_prepend(str(tmp_path / "polyrl-env-gen-check"))
    _register(monkeypatch, ("gen_check", "polyrl_env_gen_check:GenCheckEnvironment"))
    cls = registry.load("gen_check")
    env = cls({"num_tasks": 6}, 1)
    records = env.load_tasks()
    assert len(records) == 6 and all(env.verify(r, env.reference_response(r)).reward == 1.0 for r in records)

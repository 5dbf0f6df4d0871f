import subprocess
from pathlib import Path

import pytest
import yaml

from rl.config import (
    ConfigError,
    PolyrlConfig,
    build_config,
    parse_override,
    reference_markdown,
    save_resolved,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_configs_folder_is_not_empty():
    names = {p.name for p in CONFIGS}
    assert {"tiny-cpu.yaml", "gpu-1.yaml", "multinode-gpu.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def _assert_subset(raw, dumped, where=""):
    """Every value the YAML sets is the value the validated config holds (nothing silently dropped)."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            assert k in dumped, f"{where}{k} missing from the validated config"
            _assert_subset(v, dumped[k], f"{where}{k}.")
    else:
        assert raw == dumped, f"{where}: file says {raw!r}, config holds {dumped!r}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_validates(path):
    cfg = build_config(path)
    assert isinstance(cfg, PolyrlConfig)
    assert cfg.envs, "every shipped config names its environments"
    _assert_subset(yaml.safe_load(path.read_text()), cfg.model_dump(mode="json"))


def test_default_is_tiny_cpu():
    cfg = build_config()
    assert cfg.model.path == "tiny"
    assert cfg.rollout.num_gpus == 0 and cfg.learner.num_gpus == 0
    # one core each for rollout and learner on the 2-core machine (issue 4)
    assert cfg.rollout.num_cpus == 1 and cfg.learner.num_cpus == 1


def test_unknown_key_names_key_value_and_allowed_keys():
    with pytest.raises(ConfigError) as exc:
        build_config(overrides=["learner.lrr=0.1"])
    msg = str(exc.value)
    assert "learner.lrr" in msg and "0.1" in msg
    assert "lr" in msg and "zero_stage" in msg  # the allowed keys are listed


def test_unknown_section_in_yaml(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("learnr:\n  lr: 1.0e-5\n")
    with pytest.raises(ConfigError) as exc:
        build_config(f)
    assert "learnr" in str(exc.value) and "learner" in str(exc.value)


@pytest.mark.parametrize(
    "override, key, allowed",
    [
        ("learner.zero_stage=5", "learner.zero_stage", "0, 1, 2, 3"),
        ("loss.is_mode=tokenmask", "loss.is_mode", "'token_mask'"),
        ("rollout.top_p=1.5", "rollout.top_p", "less than or equal to 1"),
        ("learner.lr=abc", "learner.lr", "valid number"),
        ("run.samples_per_prompt=1", "run.samples_per_prompt", "greater than or equal to 2"),
        ("envs.math.weight=0", "envs.math.weight", "greater than 0"),
    ],
)
def test_bad_value_names_key_value_and_what_is_allowed(override, key, allowed):
    with pytest.raises(ConfigError) as exc:
        build_config(overrides=[override])
    msg = str(exc.value)
    assert f"'{key}'" in msg
    assert override.split("=", 1)[1] in msg
    assert allowed in msg


def test_cross_field_error_is_explained():
    with pytest.raises(ConfigError, match="prompts_per_step=2 is smaller than the 3 environments"):
        build_config(envs="math,code,tools", overrides=["run.prompts_per_step=2"])
    with pytest.raises(ConfigError, match="no environment"):
        build_config(envs=" , ")


def test_overrides_and_envs_shorthand():
    cfg = build_config(envs="math,code", overrides=["learner.lr=1e-5", "run.steps=7", "rollout.stop=[a, b]", "envs.code.weight=2"])
    assert cfg.learner.lr == pytest.approx(1e-5)
    assert cfg.run.steps == 7
    assert cfg.rollout.stop == ["a", "b"]
    assert list(cfg.envs) == ["math", "code"] and cfg.envs["code"].weight == 2.0


@pytest.mark.parametrize("text", ["learner.lr", "=3", "a..b=1", "run.steps.x=3"])
def test_malformed_overrides(text):
    with pytest.raises(ConfigError):
        build_config(overrides=[text])


def test_parse_override_types():
    assert parse_override("a.b=3") == (["a", "b"], 3)
    assert parse_override("a=true") == (["a"], True)
    assert parse_override("a=1e-5")[1] == pytest.approx(1e-5)
    assert parse_override("a=hello") == (["a"], "hello")


def test_resolved_config_saved_and_reloads(tmp_path):
    cfg = build_config(overrides=["learner.lr=3e-4", "run.name=x"])
    out = save_resolved(cfg, tmp_path / "run")
    again = build_config(out)
    assert again == cfg


def test_readme_reference_matches_the_code():
    readme = (REPO / "README.md").read_text()
    start, end = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
    assert start in readme and end in readme
    embedded = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert embedded == reference_markdown().strip(), "regenerate with: python -m rl.config --reference"


def test_config_cli_prints_resolved_config(python, clean_env):
    out = subprocess.run(
        [python, "-m", "rl.config", "--envs", "math", "learner.lr=2e-5"],
        cwd=REPO, env=clean_env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    assert printed["learner"]["lr"] == pytest.approx(2e-5) and list(printed["envs"]) == ["math"]


def test_train_cli_bad_config_exits_2_with_message(python, clean_env):
    out = subprocess.run(
        [python, "rl/train.py", "learner.zero_stage=9"], cwd=REPO, env=clean_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2
    assert "learner.zero_stage" in out.stderr and "9" in out.stderr

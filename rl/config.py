"""The run configuration: component sections assembled, loaded from YAML, overridden from the command line.

    python rl/train.py --config configs/tiny-cpu.yaml --envs math,json_schema learner.lr=1e-5 run.steps=10

Precedence: defaults in the Section classes < the YAML file < `--envs` < dotted overrides. Every error names
the key, the value and what is allowed, and is raised before anything starts (issue 2).
`python -m rl.config --reference` prints the Markdown reference the README embeds.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from curricula.config import CurriculumConfig
from environments.config import EnvConfig
from rl.dashboard import DashboardConfig
from rl.evaluate import EvalConfig
from rl.learner import LearnerConfig
from rl.loss import LossConfig
from rl.model import REPO_ROOT, ModelConfig
from rl.rollout import RolloutConfig
from rl.section import Section

DEFAULT_CONFIG = REPO_ROOT / "configs" / "tiny-cpu.yaml"
README_START, README_END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


class RunConfig(Section):
    name: str = "polyrl"
    """Run name; the run directory is <output_dir>/<name>."""
    output_dir: str = "runs"
    """Parent directory of run directories (checkpoints, TensorBoard events, resolved config)."""
    seed: int = Field(0, ge=0)
    """Seed for task sampling, rollouts and learner initialisation."""
    steps: int = Field(60, ge=1)
    """Optimizer steps."""
    prompts_per_step: int = Field(16, ge=1)
    """Tasks per step, split across environments by their weights."""
    samples_per_prompt: int = Field(8, ge=2)
    """G: responses per task, at least 2 (GRPO normalises advantages within this group)."""
    max_staleness: int = Field(1, ge=0)
    """Oldest accepted sample, in policy versions behind the learner; 0 is synchronous GRPO."""
    checkpoint_every: int = Field(20, ge=0)
    """Steps between checkpoints; 0 saves only at the end."""
    keep_checkpoints: int = Field(3, ge=0)
    """Checkpoints kept on disk (the newest); older ones are deleted after a new one is published. 0 keeps all."""
    watchdog_s: float = Field(600.0, ge=0)
    """Report a stall (log + watchdog/* metrics, naming what each role is waiting for) when no sample batch and
    no step completed for this long; 0 turns the watchdog off."""
    watchdog_abort_s: float = Field(0.0, ge=0)
    """Fail the run (StallError) after this long without progress; 0 only reports."""



class ClusterConfig(Section):
    address: str | None = None
    """Ray address: None starts a local Ray (or joins the job's cluster under `ray job submit`), 'auto' joins
    a running cluster."""
    num_cpus: int | None = None
    """CPUs for a local Ray; None lets Ray count them."""
    namespace: str = "polyrl"
    """Ray namespace of the run's named actors."""


class PolyrlConfig(Section):
    run: RunConfig = RunConfig()
    """The run: steps, batch shape, asynchrony, checkpoints."""
    cluster: ClusterConfig = ClusterConfig()
    """Where Ray runs."""
    model: ModelConfig = ModelConfig()
    """The policy."""
    rollout: RolloutConfig = RolloutConfig()
    """Rollout workers (vLLM)."""
    learner: LearnerConfig = LearnerConfig()
    """Learners (DeepSpeed)."""
    loss: LossConfig = LossConfig()
    """GRPO loss and importance sampling."""
    curriculum: CurriculumConfig = CurriculumConfig()
    """Task sampling."""
    eval: EvalConfig = EvalConfig()
    """Held-out evaluation."""
    dashboard: DashboardConfig = DashboardConfig()
    """Metrics sinks besides TensorBoard and metrics.jsonl (Weights & Biases)."""
    envs: dict[str, EnvConfig] = {"math": EnvConfig(), "json_schema": EnvConfig()}
    """Environments by registered plugin name; `--envs a,b` keeps exactly these."""

    @model_validator(mode="after")
    def _check(self) -> "PolyrlConfig":
        if not self.envs:
            raise ValueError("no environments: set envs in the YAML or pass --envs NAME[,NAME...]")
        if self.run.prompts_per_step < len(self.envs):
            raise ValueError(
                f"run.prompts_per_step={self.run.prompts_per_step} is smaller than the {len(self.envs)} environments"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name


class ConfigError(ValueError):
    """A configuration the user wrote is wrong; the message says which key, which value, what is allowed."""


# ----------------------------------------------------------------------------------------------- errors


def _model_at(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, str | None]:
    """The Section class that owns the last key of `loc`, and that key (None when not a Section field)."""
    model: Any = PolyrlConfig
    for part in loc[:-1]:
        if isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields:
            model = _unwrap(model.model_fields[part].annotation)
            if typing.get_origin(model) is dict:  # envs: dict[str, EnvConfig] -> skip the name
                model = typing.get_args(model)[1]
        elif isinstance(part, str) and model is not None:
            continue
        else:
            return None, None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return model, str(loc[-1]) if loc else None
    return None, None


def _unwrap(tp: Any) -> Any:
    """Optional[X] -> X."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _allowed(model: type[BaseModel] | None, key: str | None) -> str:
    if model is None or key is None or key not in model.model_fields:
        return ""
    field = model.model_fields[key]
    tp = _unwrap(field.annotation)
    parts = [f"expected {_type_name(field.annotation)}"]
    if typing.get_origin(tp) is Literal:
        parts = ["allowed: " + ", ".join(repr(a) for a in typing.get_args(tp))]
    if field.description:
        desc = " ".join(field.description.split())
        parts.append(desc if len(desc) <= 160 else desc[:157] + "...")
    return "; ".join(parts)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        value = e.get("input")
        value_s = repr(value) if not isinstance(value, dict) else "{...}"
        if len(value_s) > 80:
            value_s = value_s[:77] + "..."
        if e["type"] == "extra_forbidden":
            owner, _ = _model_at(loc)
            allowed = ", ".join(owner.model_fields) if owner else "?"
            parent = ".".join(str(p) for p in loc[:-1]) or "top level"
            lines.append(f"unknown key '{key}' (value {value_s}); keys allowed in {parent}: {allowed}")
        elif not loc:
            lines.append(e["msg"].removeprefix("Value error, "))
        else:
            owner, field = _model_at(loc)
            hint = _allowed(owner, field)
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"bad value for '{key}': {value_s}: {msg}" + (f" ({hint})" if hint else ""))
    return "invalid config:\n  " + "\n  ".join(lines)


# ----------------------------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[list[str], Any]:
    """'learner.lr=1e-5' -> (['learner', 'lr'], 1e-05). Values are parsed as YAML ('[a, b]', 'true', '3')."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.sub=value (e.g. learner.lr=1e-5)")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override '{text}': empty key segment in '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML: {exc}") from None
    except (ValueError, RecursionError) as exc:  # an int over 4,300 digits, nesting deeper than the stack (issue 10)
        raise ConfigError(f"override '{key}': value cannot be loaded ({type(exc).__name__}: {str(exc)[:120]})") from None
    if isinstance(value, str):  # YAML 1.1 reads '1e-5' as a string; numbers are what users mean
        try:
            value = float(value) if any(c in value for c in ".eE") and not value.isalpha() else value
        except ValueError:
            pass
    return parts, value


def _set_path(tree: dict, parts: list[str], value: Any, original: str) -> None:
    node = tree
    for i, p in enumerate(parts[:-1]):
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(
                f"override '{original}': '{'.'.join(parts[: i + 1])}' is a value ({child!r}), not a section"
            )
        node = child
    node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (configs/ has: {', '.join(_shipped())})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file '{path}' is not UTF-8 text ({exc}); save it as UTF-8") from None
    except (ValueError, RecursionError) as exc:  # an int over 4,300 digits, nesting deeper than the stack (issue 10)
        raise ConfigError(f"config file '{path}' cannot be loaded ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must be a mapping of sections, got {type(data).__name__}")
    return data


def _shipped() -> list[str]:
    return sorted(p.name for p in (REPO_ROOT / "configs").glob("*.yaml"))


def build_config(
    config_path: str | Path | None = None,
    envs: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> PolyrlConfig:
    """YAML file (default configs/tiny-cpu.yaml) + --envs shorthand + dotted overrides -> validated config."""
    raw = load_yaml(config_path or DEFAULT_CONFIG)
    if envs is not None:
        names = [n.strip() for n in envs.split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--envs '{envs}' names no environment (e.g. --envs math,json_schema)")
        current = raw.get("envs") or {}
        if not isinstance(current, dict):
            raise ConfigError(f"config file: 'envs' must be a mapping of environment names to settings (e.g. "
                              f"envs: {{math: {{}}}}), got {type(current).__name__} {str(current)[:60]!r}")
        raw["envs"] = {n: (current.get(n) or {}) for n in names}
    for text in overrides:
        parts, value = parse_override(text)
        _set_path(raw, parts, value, text)
    try:
        return PolyrlConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help=f"YAML run config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    parser.add_argument("--envs", default=None, help="comma-separated environment plugins, e.g. math,json_schema")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. learner.lr=1e-5 run.steps=10")


def from_args(args: argparse.Namespace) -> PolyrlConfig:
    return build_config(args.config, args.envs, args.overrides)


def to_yaml(cfg: PolyrlConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def save_resolved(cfg: PolyrlConfig, run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "config.yaml"
    out.write_text("# resolved polyrl config: defaults + file + --envs + overrides\n" + to_yaml(cfg))
    return out


# ----------------------------------------------------------------------------------------------- reference


def reference_markdown() -> str:
    """A Markdown table per section, generated from the Section classes so the README never drifts."""
    out = []

    def emit(model: type[BaseModel], prefix: str) -> None:
        rows, nested = [], []
        for name, field in model.model_fields.items():
            tp = _unwrap(field.annotation)
            key = f"{prefix}{name}"
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                nested.append((tp, key + "."))
                continue
            if typing.get_origin(tp) is dict and isinstance(typing.get_args(tp)[1], type) and issubclass(
                typing.get_args(tp)[1], BaseModel
            ):
                nested.append((typing.get_args(tp)[1], key + ".NAME."))
                continue
            default = field.get_default(call_default_factory=True)
            desc = " ".join((field.description or "").split())
            type_s = _type_name(field.annotation).replace(" | ", " or ")  # a bare | would split the table cell
            rows.append(f"| `{key}` | `{type_s}` | `{default!r}` | {desc} |")
        if rows:
            out.append(f"\n#### `{prefix.rstrip('.') or 'top level'}`\n")
            out.append("| key | type | default | meaning |\n|---|---|---|---|")
            out.extend(rows)
        for sub, p in nested:
            emit(sub, p)

    emit(PolyrlConfig, "")
    return "\n".join(out).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.config", description="Validate and print a run config.")
    parser.add_argument("--reference", action="store_true", help="print the Markdown configuration reference")
    parser.add_argument("--write-readme", action="store_true", help="replace the reference embedded in README.md")
    add_cli_arguments(parser)
    args = parser.parse_args(argv)
    if args.reference:
        sys.stdout.write(reference_markdown())
        return 0
    if args.write_readme:
        readme = REPO_ROOT / "README.md"
        text = readme.read_text()
        head, rest = text.split(README_START, 1)
        _, tail = rest.split(README_END, 1)
        readme.write_text(f"{head}{README_START}\n{reference_markdown()}{README_END}{tail}")
        print(f"updated the configuration reference in {readme}")
        return 0
    try:
        cfg = from_args(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(to_yaml(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

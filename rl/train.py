"""polyrl's entry point: parse config -> setup -> run -> cleanup (STYLE.md rule 2).

    python rl/train.py --envs math,json_schema                      # local Ray, tiny policy on CPU
    python rl/train.py --config configs/gpu-1.yaml learner.lr=2e-6  # another config plus overrides
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python rl/train.py --envs math,json_schema                  # an existing Ray cluster

State of the build: config, run directory and policy checks are here (issue 2); environment servers
(issue 3) and the asynchronous GRPO loop (issue 4) plug into `setup` and `run`.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):
    # Run as a script, sys.path[0] is rl/, where rl/types.py would shadow the standard library's `types`
    # (pathlib imports it): put the repository root there before anything else is imported.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402
import json  # noqa: E402

from rl.config import ConfigError, PolyrlConfig, add_cli_arguments, from_args, save_resolved, to_yaml  # noqa: E402


def parse_config(argv: list[str] | None) -> tuple[PolyrlConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="rl/train.py", description="Train a policy with asynchronous multi-env GRPO.")
    add_cli_arguments(parser)
    parser.add_argument("--resume", action="store_true", help="continue the run in the run directory")
    args = parser.parse_args(argv)
    return from_args(args), args


def _check_policy(cfg: PolyrlConfig) -> dict:
    """The policy directory must hold an HF config and tokenizer; nothing is downloaded at run time."""
    path = cfg.model.resolved_path()
    if not (path / "config.json").is_file():
        hint = "make demo builds it (python -m rl.tiny_policy --build && python -m rl.warm_start)" if cfg.model.path == "tiny" else (
            "model.path must be a local Hugging Face model directory"
        )
        raise ConfigError(f"model.path={cfg.model.path!r}: no config.json in {path}; {hint}")
    hf_config = json.loads((path / "config.json").read_text())
    return {"path": str(path), "architecture": (hf_config.get("architectures") or ["?"])[0]}


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = parse_config(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("resolved config:\n" + to_yaml(cfg), flush=True)
    saved = save_resolved(cfg, cfg.run_dir)
    print(f"run directory: {cfg.run_dir} (config saved to {saved})")
    try:
        policy = _check_policy(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"policy: {policy['architecture']} at {policy['path']}")
    print(f"environments: {', '.join(cfg.envs)}")
    print("training loop: not in this build yet (asynchronous GRPO, issue 4); config and policy checked.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

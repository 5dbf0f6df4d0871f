"""polyrl's entry point: parse config -> setup -> run -> cleanup (STYLE.md rule 2).

    python rl/train.py --envs math,json_schema                      # local Ray, tiny policy on CPU
    python rl/train.py --config configs/gpu-1.yaml learner.lr=2e-6  # another config plus overrides
    RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
        python rl/train.py --envs math,json_schema                  # an existing Ray cluster

Setup creates one role at a time (_create_env_servers, _create_learners, _create_rollout_workers); the loop
itself is rl/orchestrator.py.
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
    """The policy directory must hold an HF config and tokenizer; nothing is downloaded at run time. For the tiny
    policy, "stale" says why the cache is not what make demo would build now (main prints it as a warning)."""
    path = cfg.model.resolved_path()
    if not (path / "config.json").is_file():
        hint = "make demo builds it (python -m rl.tiny_policy --build && python -m rl.warm_start)" if cfg.model.path == "tiny" else (
            "model.path must be a local Hugging Face model directory"
        )
        raise ConfigError(f"model.path={cfg.model.path!r}: no config.json in {path}; {hint}")
    hf_config = json.loads((path / "config.json").read_text())
    info = {"path": str(path), "architecture": (hf_config.get("architectures") or ["?"])[0]}
    if cfg.model.path == "tiny":
        from rl.warm_start import staleness

        if reason := staleness():
            info["stale"] = reason
    return info


# ----------------------------------------------------------------------------------------------- setup


def _init_ray(cfg: PolyrlConfig) -> bool:
    """Join the job's cluster under `ray job submit` (RAY_ADDRESS), cluster.address if set, else start a local
    Ray. Returns True when this process started Ray (and so shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    kwargs = {"namespace": cfg.cluster.namespace, "log_to_driver": True}
    if cfg.cluster.address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=cfg.cluster.address or os.environ["RAY_ADDRESS"], **kwargs)
        return False
    # address="local": a new local Ray even if an earlier `ray start` left /tmp/ray/ray_current_cluster behind
    ray.init(address="local", num_cpus=cfg.cluster.num_cpus, include_dashboard=False, **kwargs)
    return True


def _create_env_servers(cfg: PolyrlConfig, log) -> tuple[dict, list]:
    """Start a local server per environment without a URL; connect to the others. Plugins resolve by name."""
    from environments.client import EnvClient
    from environments.registry import load
    from environments.serve import start_local

    clients, servers = {}, []
    for name, env_cfg in cfg.envs.items():
        url = env_cfg.url
        if url is None:
            load(name)  # fails here, with the installed names, if the plugin is missing
            server = start_local(name, options=env_cfg.options, seed=cfg.run.seed)
            servers.append(server)
            url = server.url
        clients[name] = EnvClient.from_config(name, env_cfg, url=url)
        log(f"environment {name}: {url}")
    return clients, servers


def _placement(role_cfg) -> dict:
    opts = {"num_cpus": role_cfg.num_cpus, "num_gpus": role_cfg.num_gpus}
    if role_cfg.resources:
        opts["resources"] = dict(role_cfg.resources)
    return opts


def _create_rollout_workers(cfg: PolyrlConfig) -> list:
    import ray

    from rl.rollout import RolloutWorker

    actor = ray.remote(RolloutWorker)
    # Ray restarts a dead worker (constructor args again); the orchestrator re-sends URLs and weights (issue 10)
    workers = [actor.options(**_placement(cfg.rollout), max_restarts=cfg.rollout.max_restarts,
                             max_task_retries=0).remote(cfg.model, cfg.rollout, cfg.run.seed, i)
               for i in range(cfg.rollout.num_workers)]
    ray.get([w.ready.remote() for w in workers])
    return workers


def _create_learners(cfg: PolyrlConfig) -> list:
    import ray

    from rl.learner import Learner

    actor = ray.remote(Learner)
    n = cfg.learner.num_learners
    learners = [actor.options(**_placement(cfg.learner)).remote(r, n, cfg.model, cfg.learner, cfg.loss, cfg.run.seed,
                                                                      cfg.rollout.temperature)
                for r in range(n)]
    addr, port = ray.get(learners[0].address.remote())  # rank 0's node hosts the rendezvous
    ray.get([lr.setup.remote(addr, port) for lr in learners])
    return learners


# ----------------------------------------------------------------------------------------------- run


def _install_stop_handlers(holder: list, log) -> dict:
    """SIGINT/SIGTERM: the first one asks the loop to stop cleanly after the current step (checkpoint, summary,
    actors and servers shut down); a second one aborts at once. Installed after ray.init, whose C++ SIGTERM
    handler would otherwise abort the process without any cleanup (seen in the soak, docs/reliability-soak.md)."""
    import signal

    def on_signal(signum, frame):
        name = signal.Signals(signum).name
        orch = holder[0] if holder else None
        if orch is None or orch.stop_requested:
            raise KeyboardInterrupt(f"{name} received" + (" twice" if orch is not None else " during set-up"))
        orch.stop_requested = f"{name} received"
        log(f"{name}: stopping after the current step (checkpoint, then exit); send it again to abort now")

    return {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}


def run(cfg: PolyrlConfig, resume: bool = False, log=print, stop_after: int | None = None,
        faults=None, handle_signals: bool = False) -> dict:
    """setup -> run -> cleanup; returns the run summary (also written to <run dir>/summary.json).
    handle_signals: SIGINT/SIGTERM stop the run cleanly after the current step (the CLI sets it)."""
    import asyncio
    import signal

    import ray

    from rl.orchestrator import Orchestrator, Roles

    started_ray = _init_ray(cfg)
    roles = Roles(rollout=[], learners=[], clients={})
    holder: list = []
    previous = _install_stop_handlers(holder, log) if handle_signals else {}
    try:
        roles.clients, roles.servers = _create_env_servers(cfg, log)
        roles.learners = _create_learners(cfg)
        roles.rollout = _create_rollout_workers(cfg)
        # multi-turn episodes call /reset and /step from the rollout workers themselves
        urls = {n: {"url": c.url, "timeout_s": cfg.envs[n].timeout_s, "retries": cfg.envs[n].retries,
                    "secret": os.environ.get(cfg.envs[n].secret_env) if cfg.envs[n].secret_env else None}
                for n, c in roles.clients.items()}
        ray.get([w.set_environments.remote(urls) for w in roles.rollout])
        roles.env_urls = urls
        log(f"ray: {len(roles.rollout)} rollout worker(s), {len(roles.learners)} learner(s) ready")
        orch = Orchestrator(cfg, roles, cfg.run_dir, log=log, faults=faults)
        holder.append(orch)

        async def main_loop() -> dict:
            await orch.load_tasks()
            start = await orch.restore() if resume else 0
            summary = await orch.run(start, stop_after=stop_after)
            for c in roles.clients.values():
                await c.aclose()
            return summary

        summary = asyncio.run(main_loop())
        if summary.get("killed"):
            orch.metrics.close()
            return summary
        if summary.get("stopped"):  # a clean stop: checkpointed, no final export
            summary["client_metrics"] = {n: dict(c.metrics) for n, c in roles.clients.items()}
            (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
            orch.metrics.close()
            return summary
        export = cfg.run_dir / "final"
        ray.get(roles.learners[0].save_hf.remote(str(export)))
        summary["export"] = str(export)
        summary["client_metrics"] = {n: dict(c.metrics) for n, c in roles.clients.items()}
        (cfg.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
        orch.metrics.close()
        return summary
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for actor in roles.rollout + roles.learners:
            ray.kill(actor)
        for server in roles.servers:
            server.stop()
        if started_ray:
            ray.shutdown()


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
    print(f"policy: {policy['architecture']} at {policy['path']}", flush=True)
    if "stale" in policy:
        print(f"WARNING: stale policy: {policy['stale']}", file=sys.stderr, flush=True)
    from ray.exceptions import RayActorError

    from environments.client import EnvDown
    from rl.watchdog import StallError

    try:
        summary = run(cfg, resume=args.resume, log=lambda m: print(m, flush=True), handle_signals=True)
    except (EnvDown, StallError) as err:  # expected operational failures: the message says what to do
        print(f"error: {err}\nthe last checkpoint is in {cfg.run_dir / 'checkpoints'}; fix the cause and rerun "
              "with --resume", file=sys.stderr)
        return 1
    except RayActorError as err:  # a learner died (OOM, preemption): the job cannot continue without it
        print(f"error: an actor of the run died and could not be recovered: {str(err).splitlines()[0]}\n"
              f"the last checkpoint is in {cfg.run_dir / 'checkpoints'}; rerun with --resume", file=sys.stderr)
        return 1
    if summary.get("stopped"):
        print(f"stopped after step {summary['steps']} ({summary['stopped']}); the checkpoint is in "
              f"{cfg.run_dir / 'checkpoints'}; continue with: python rl/train.py ... --resume", flush=True)
        return 0
    print(f"done: {summary['steps']} steps; final held-out eval {json.dumps(summary['final_eval'])}; "
          f"policy exported to {summary['export']}; TensorBoard: tensorboard --logdir {cfg.run_dir / 'tensorboard'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

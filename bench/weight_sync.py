"""Weight sync: seconds per step from the learner's state dict to a reloaded rollout engine, vs memory bandwidth.

    python bench/weight_sync.py                  # tiny policy and a ~57M-parameter random Qwen3-MoE, 10 syncs each
    python bench/weight_sync.py --quick          # tiny policy only, 3 syncs (smoke run)
    python bench/weight_sync.py --model DIR --syncs 10 --no-big

The path measured is the orchestrator's own (rl/orchestrator.py Orchestrator.sync_weights): real actors created
by rl/train.py's _create_learners (DeepSpeed, ZeRO stage from configs/tiny-cpu.yaml) and _create_rollout_workers
(vLLM); `learner.state_dict.remote()` puts the weights in Ray's object store, the driver waits for the object
without fetching it, and `worker.update_weights.remote(ref, version)` reloads them through collective_rpc +
reload_weights (+ the CPU MoE repacking). Per sync the bench reports:

- export: state_dict on rank 0 (gather, revert HF weight conversion, clone) + serialisation into the object store;
- load:   seconds inside update_weights (the rollout actor's own figure: reload_weights, MoE repack, cache reset);
- total:  driver wall time from the state_dict call to update_weights returning (export + transfer + load).

The floor is model bytes / memory bandwidth: one copy of the weights at this machine's single-thread copy rate
(measured here with numpy and torch on buffers far larger than the caches, timed by CPU time so that a busy
machine does not distort it; see memory_bandwidth). total / floor is then the number of
"full weight copies" the sync costs; the path has at least ~4 (clone on the learner, write into the object store,
read out of it in the rollout actor, copy into vLLM's parameters).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_common import REPO, default_model, init_ray, machine, model_params, table, write_result  # noqa: E402

BIG_DIR = REPO / ".cache" / "bench-qwen3-moe-57m"


def memory_bandwidth(mb: int = 512, repeats: int = 5) -> dict:
    """Single-thread copy rate (bytes written per second; each byte is also read once) with numpy and torch.

    Timed by this thread's CPU time as well as wall time: on a shared machine a niced process is descheduled
    for most of the wall time (wall-clock rates of 0.35 GB/s were seen at load 15), while its CPU time still
    measures the copy itself (memory stalls count as CPU time). The CPU-time rate is the one used as the floor;
    the wall-time rate is kept in the JSON."""
    import numpy as np
    import torch

    n = mb * 2**20
    src = np.ones(n, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ts, td = torch.from_numpy(src), torch.from_numpy(dst)
    out = {"buffer_mb": mb}
    for name, copy in (("numpy", lambda: np.copyto(dst, src)), ("torch", lambda: td.copy_(ts))):
        wall, cpu = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.thread_time()
            copy()
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
        out[f"{name}_copy_gb_s"] = n / max(min(cpu), 1e-9) / 1e9
        out[f"{name}_copy_wall_gb_s"] = n / min(wall) / 1e9
        out[f"{name}_copy_wall_median_gb_s"] = n / statistics.median(wall) / 1e9
    torch.set_num_threads(threads)
    return out


def build_big(path: Path) -> Path:
    """A random Qwen3-MoE ~8x the tiny policy (hidden 512, 8 layers, 8 experts of 512), same tokenizer."""
    from rl.tiny_policy import TinyPolicySpec, build, is_built

    spec = TinyPolicySpec(seed=1, hidden_size=512, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                          moe_intermediate_size=512)
    if not is_built(path, spec):
        print(f"building {path} ...", flush=True)
        build(path, spec)
    return path


def measure(model_dir: Path, syncs: int, log=print) -> dict:
    """Start one learner and one rollout worker on `model_dir` the way rl/train.py does; time `syncs` syncs."""
    import ray

    from rl.config import build_config
    from rl.train import _create_learners, _create_rollout_workers

    cfg = build_config(None, "math", [f"model.path={model_dir}"])
    learners = _create_learners(cfg)
    workers = _create_rollout_workers(cfg)
    try:
        runs = []
        for v in range(1, syncs + 1):
            t0 = time.perf_counter()
            ref = learners[0].state_dict.remote()
            ray.wait([ref], num_returns=1, fetch_local=False)
            export = time.perf_counter() - t0
            load = ray.get(workers[0].update_weights.remote(ref, v))
            total = time.perf_counter() - t0
            runs.append({"export_s": export, "load_s": load, "total_s": total})
            log(f"  sync {v}/{syncs}: export {export * 1e3:.1f} ms, load {load * 1e3:.1f} ms, total {total * 1e3:.1f} ms")
        state = ray.get(learners[0].state_dict.remote())
        nbytes = sum(t.numel() * t.element_size() for t in state.values())
        return {"model": str(model_dir), "params": sum(t.numel() for t in state.values()), "bytes": nbytes,
                "tensors": len(state), "zero_stage": cfg.learner.zero_stage, "runs": runs}
    finally:
        for a in learners + workers:
            ray.kill(a)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="policy directory (default: the tiny policy)")
    p.add_argument("--syncs", type=int, default=10, help="timed syncs per model (the first one is reported apart)")
    p.add_argument("--no-big", action="store_true", help="skip the ~57M-parameter model")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny policy only, 3 syncs")
    p.add_argument("--json", default=None, help="results path (default bench/results/weight_sync.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.syncs, args.no_big = 3, True
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import ray

    start = machine()
    init_ray()  # first: it also lowers this process's priority (engine_common.renice_tree)
    bw = memory_bandwidth(256 if args.quick else 512)
    print(f"memory bandwidth (single-thread copy, by CPU time): numpy {bw['numpy_copy_gb_s']:.2f} GB/s, torch "
          f"{bw['torch_copy_gb_s']:.2f} GB/s (by wall time {bw['numpy_copy_wall_gb_s']:.2f} / "
          f"{bw['torch_copy_wall_gb_s']:.2f}); load average {start['load_average']}", flush=True)
    models = [args.model or default_model()]
    if not args.no_big:
        models.append(build_big(BIG_DIR))
    results = []
    try:
        for m in models:
            print(f"{m} ({model_params(m) or '?'} params):", flush=True)
            results.append(measure(m, args.syncs))
    finally:
        ray.shutdown()
    rate = max(bw["numpy_copy_gb_s"], bw["torch_copy_gb_s"]) * 1e9
    rows = []
    for r in results:
        steady = r["runs"][1:] or r["runs"]
        med = {k: statistics.median(x[k] for x in steady) for k in ("export_s", "load_s", "total_s")}
        floor = r["bytes"] / rate
        r.update({"median_after_first": med, "first": r["runs"][0], "floor_s": floor,
                  "copies_equivalent": med["total_s"] / floor})
        rows.append([Path(r["model"]).name, f"{r['params'] / 1e6:.2f}M", f"{r['bytes'] / 2**20:.1f} MiB",
                     f"{med['export_s'] * 1e3:.1f}", f"{med['load_s'] * 1e3:.1f}", f"{med['total_s'] * 1e3:.1f}",
                     f"{r['runs'][0]['total_s'] * 1e3:.0f}", f"{floor * 1e3:.2f}", f"{med['total_s'] / floor:.0f}x"])
    print()
    print(table(rows, ["model", "params", "bytes", "export ms", "load ms", "total ms", "first total ms",
                       "bytes/bandwidth ms", "total/floor"]))
    print("(medians over syncs 2..N; the first sync pays one-off allocations)")
    write_result("weight_sync", {"args": {k: str(v) for k, v in vars(args).items()}, "machine_at_start": start,
                                 "memory_bandwidth": bw, "models": results}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

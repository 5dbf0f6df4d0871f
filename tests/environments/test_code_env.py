"""environments.code: generated tasks, references scoring 1.0 in the sandbox, task files, and a server that
stays healthy while hostile programs are verified."""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

import environments.code as code_env
from environments.code import CodeEnvironment, extract_code
from environments.code import files as code_files
from environments.code import generator
from environments.registry import load
from environments.server import create_app
from verifiers.code_harness import normalise
from verifiers.sandbox import CallTest, StdioTest, available

N_TASKS = 600  # 200 per difficulty: every generator kind many times

pytestmark = pytest.mark.skipif(available("bubblewrap") is not None,
                                reason=f"bubblewrap backend unavailable: {available('bubblewrap')}")


@pytest.fixture(scope="module")
def env_and_records():
    env = CodeEnvironment({"num_tasks": N_TASKS}, seed=0)
    return env, env.load_tasks()


def _sample(records, per_level: int):
    by_level: dict[str, list] = {}
    for r in records:
        by_level.setdefault(r.task.difficulty, []).append(r)
    return [r for level in by_level.values() for r in level[:per_level]]


def _verify_all(env, pairs):
    with ThreadPoolExecutor(2) as pool:  # two sandboxes at a time, like the server's two verify workers
        return list(pool.map(lambda p: env.verify(*p), pairs))


def _exec_trusted(program: str, test) -> bool:
    """Run one of OUR reference programs in this process (fast; generator outputs checked independently)."""
    glob = {"__name__": "__main__" if isinstance(test, StdioTest) else "solution"}
    if isinstance(test, CallTest):
        exec(program, glob)  # noqa: S102 - the generator's own reference programs
        return glob[test.fn](*test.args) == test.expected
    out, old_stdin = io.StringIO(), sys.stdin
    sys.stdin = io.StringIO(test.input)
    try:
        with contextlib.redirect_stdout(out):
            exec(program, glob)  # noqa: S102
    finally:
        sys.stdin = old_stdin
    return normalise(out.getvalue()) == normalise(test.output)


def test_doctests():
    for module in (code_env, generator, code_files):
        failed, attempted = doctest.testmod(module)
        assert attempted > 0 and failed == 0, module.__name__


def test_plugin_entry_point():
    cls = load("code")
    assert cls is CodeEnvironment and cls.name == "code" and cls.verify_workers == 2


def test_tasks_ids_and_prompts(env_and_records):
    _, records = env_and_records
    assert Counter(r.task.difficulty for r in records) == {"easy": 200, "medium": 200, "hard": 200}
    ids = [r.task.task_id for r in records]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"(easy|medium|hard)-\d{6}", i) for i in ids)
    for r in records:
        prompt = r.task.prompt[0].content
        assert r.task.meta == {} and prompt.endswith(generator.SUFFIX) and prompt.isascii()
        assert len(prompt) < 200 and len(r.reference.solution) < 230, (prompt, r.reference.solution)
        assert len(r.reference.tests) == generator.N_TESTS


def test_generator_is_deterministic_and_varied(env_and_records):
    _, records = env_and_records
    again = CodeEnvironment({"num_tasks": 30}, seed=0).load_tasks()
    assert [(r.task, r.reference) for r in again] == [(r.task, r.reference) for r in records[:30]]
    other = CodeEnvironment({"num_tasks": 30}, seed=1).load_tasks()
    assert [r.reference for r in other] != [r.reference for r in again]
    assert len({r.task.prompt[0].content for r in records}) > 80  # parameterised shapes, not a few fixed prompts


def test_every_reference_program_passes_its_tests(env_and_records):
    """All 600 references against all their tests, in-process (they are ours): the generator is right."""
    _, records = env_and_records
    for r in records:
        for t in r.reference.tests:
            assert _exec_trusted(r.reference.solution, t), (r.task.task_id, r.reference.solution, t)


def test_reference_responses_score_one_in_the_sandbox(env_and_records):
    env, records = env_and_records
    sample = _sample(records, 12)
    verdicts = _verify_all(env, [(r, env.reference_response(r)) for r in sample])
    for r, v in zip(sample, verdicts):
        assert (v.reward, v.status) == (1.0, "ok"), (r.task.task_id, v.reason)
        assert v.components["format"] == 1.0 and v.components["all_passed"] == 1.0


def _perturbations(r) -> list[str]:
    program = r.reference.solution
    if isinstance(r.reference.tests[0], CallTest):
        return [program + "\n_f = f\ndef f(*a):\n    return [_f(*a)]",  # wraps every result: all wrong
                program.replace("return ", "return None and ", 1)]
    return [program + "\nprint('extra')",  # one line too many: all wrong
            "import sys\n_d = sys.stdin.read()\nif len(_d) % 2:\n    print('odd')\n    raise SystemExit\n"
            "import io\nsys.stdin = io.StringIO(_d)\n" + program]  # right only on even-length inputs


def test_perturbed_references_score_below_one(env_and_records):
    env, records = env_and_records
    sample = _sample(records, 5)
    pairs = [(r, f"```python\n{p}\n```") for r in sample for p in _perturbations(r)]
    verdicts = _verify_all(env, pairs)
    partial = 0
    for (r, response), v in zip(pairs, verdicts):
        assert v.status == "ok", (r.task.task_id, v.reason)
        if "_d = sys.stdin.read()" in response:
            even = sum(len(t.input) % 2 == 0 for t in r.reference.tests) / len(r.reference.tests)
            assert v.reward == pytest.approx(even), (response, v.reason)  # fraction of tests passed
            partial += 0 < v.reward < 1
        else:
            assert v.reward == 0.0, (r.task.task_id, response, v.reason)
    assert partial > 0  # partial credit happened at least once


def test_all_or_nothing_reward(env_and_records):
    _, records = env_and_records
    env = CodeEnvironment({"num_tasks": 3, "reward": "all_or_nothing"})
    r = records[0]
    half = "import sys\n_d = sys.stdin.read()\nif len(_d) % 2:\n    raise SystemExit\nimport io\n" \
           "sys.stdin = io.StringIO(_d)\n" + r.reference.solution
    assert env.verify(r, env.reference_response(r)).reward == 1.0
    assert env.verify(r, f"```python\n{half}\n```").reward == 0.0


def test_answer_extraction():
    assert extract_code("text\n```python\nprint(1)\n```\nmore\n```py\nprint(2)\n```") == ("print(2)", "fenced")
    assert extract_code("```\nprint(3)\n```") == ("print(3)", "fenced")
    assert extract_code("```python\nprint(1)\n```\n```bash\nrm -rf /\n```")[0] == "print(1)"
    assert extract_code("```python\nprint(1)")[0] is None and "unclosed" in extract_code("```python\nprint(1)")[1]
    assert extract_code("print(1)")[0] is None


def test_responses_without_code_score_zero_with_a_reason(env_and_records):
    env, records = env_and_records
    for response in ("", "print(1)", "```python\nprint(1)", "```js\nconsole.log(1)\n```"):
        v = env.verify(records[0], response)
        assert (v.reward, v.status, v.components["format"]) == (0.0, "ok", 0.0) and "code block" in v.reason


def test_bad_options():
    with pytest.raises(ValueError, match="Valid options: num_tasks"):
        CodeEnvironment({"num_task": 3})
    with pytest.raises(ValueError, match="backend"):
        CodeEnvironment({"backend": "chroot"})
    with pytest.raises(ValueError, match="no tasks"):
        CodeEnvironment({"num_tasks": 0}).load_tasks()


def test_unavailable_backend_is_named():
    with pytest.raises(ValueError, match="sandbox backend 'docker' is unavailable: .*(daemon|image)"):
        CodeEnvironment({"backend": "docker", "docker_image": "polyrl-no-such-image:0"})


# ---------------------------------------------------------------------------------------------- files
def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_task_files_in_three_styles(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    plain = _jsonl(tmp_path / "plain.jsonl", [
        {"question": "Print the sum of two integers.", "tests": [{"input": "2 3\n", "output": "5\n"},
                                                                  {"input": "4 4\n", "output": "8\n"}],
         "reference": "print(sum(map(int, input().split())))", "difficulty": "easy"}])
    apps = _jsonl(tmp_path / "apps.jsonl", [
        {"problem": "Write add(a, b).", "solutions": json.dumps(["def add(a, b):\n    return a + b"]),
         "input_output": json.dumps({"inputs": [[1, 2], [5, 5]], "outputs": [3, 10], "fn_name": "add"}),
         "difficulty": "interview"},
        {"problem": "Echo the line ZEBRA-UNIQUE-42.", "solutions": json.dumps(["print(input())"]),
         "input_output": json.dumps({"inputs": ["ZEBRA-UNIQUE-42\n"], "outputs": ["ZEBRA-UNIQUE-42\n"]}),
         "difficulty": "competition"}])
    contests = _jsonl(tmp_path / "cc.jsonl", [
        {"description": "Double n.", "public_tests": {"input": ["2\n"], "output": ["4\n"]},
         "private_tests": {"input": ["5\n", "0\n"], "output": ["10\n", "0\n"]},
         "generated_tests": {"input": [], "output": []}, "solutions": ["print(2 * int(input()))"]}])
    env = CodeEnvironment({"num_tasks": 0, "files": [plain, {"path": apps, "name": "apps"}, contests]})
    records = env.load_tasks()
    assert [(r.task.task_id, r.task.difficulty, len(r.reference.tests)) for r in records] == [
        ("plain-000000", "easy", 2), ("apps-000000", "medium", 2), ("apps-000001", "hard", 1),
        ("cc-000000", "medium", 3)]
    assert isinstance(records[1].reference.tests[0], CallTest)
    for r, v in zip(records, _verify_all(env, [(r, env.reference_response(r)) for r in records])):
        assert v.reward == 1.0, (r.task.task_id, v.reason)
    assert env.verify(records[3], "```python\nprint(3 * int(input()))\n```").reward == pytest.approx(1 / 3)
    # Tests never leave the server: /tasks carries the question only
    with TestClient(create_app(env, verify_workers=0)) as client:
        body = client.post("/tasks", content=json.dumps({"ids": ["apps-000001", "cc-000000"]})).text
    assert "Echo the line" in body and "ZEBRA-UNIQUE-42\\n" not in body and "10\\n" not in body


def test_file_errors_name_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    no_tests = _jsonl(tmp_path / "no_tests.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(ValueError, match=r"no tests column .*columns: \['question', 'answer'\].*tests_column"):
        CodeEnvironment({"num_tasks": 0, "files": [no_tests]}).load_tasks()
    no_question = _jsonl(tmp_path / "no_q.jsonl", [{"text": "q", "tests": [{"input": "", "output": ""}]}])
    with pytest.raises(ValueError, match="no question column.*question_column"):
        CodeEnvironment({"num_tasks": 0, "files": [no_question]}).load_tasks()
    with pytest.raises(ValueError, match="no tests column 'cases'"):
        CodeEnvironment({"num_tasks": 0, "files": [{"path": no_tests, "tests_column": "cases"}]}).load_tasks()
    with pytest.raises(ValueError, match="does not exist"):
        CodeEnvironment({"num_tasks": 0, "files": [str(tmp_path / "missing.jsonl")]}).load_tasks()
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": "ok", "tests": json.dumps([{"input": "", "output": ""}])},
                                          {"question": "bad", "tests": "not json"}])
    with pytest.raises(ValueError, match=r"bad.jsonl, row 1 .*not JSON.*skip_bad_rows"):
        CodeEnvironment({"num_tasks": 0, "files": [bad]}).load_tasks()
    env = CodeEnvironment({"num_tasks": 0, "files": [bad], "skip_bad_rows": True})
    records = env.load_tasks()
    assert len(records) == 1 and env.skipped_rows == {bad: 1}
    with pytest.raises(ValueError, match="no reference program"):
        env.reference_response(records[0])
    many = _jsonl(tmp_path / "many.jsonl", [{"question": "q", "tests": [{"input": f"{i}", "output": f"{i}"}
                                                                        for i in range(80)]}])
    assert len(CodeEnvironment({"num_tasks": 0, "files": [many]}).load_tasks()[0].reference.tests) == 50


# --------------------------------------------------------------------------------------------- server
HOSTILE = {
    "loop": "while True:\n    pass",
    "fork_bomb": "import os\nwhile True:\n    os.fork()",
    "memory_bomb": "x = bytearray(8 * 2**30)",
    "output_bomb": "import sys\nwhile True:\n    sys.stdout.write('x' * 4096)",
    "kill_parent": "import os\nos.kill(os.getppid(), 9)\nos.kill(1, 9)",
    "read_shadow": "print(open('/etc/shadow').read())",
    "socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
}


def test_server_stays_healthy_while_verifying_hostile_programs():
    env = CodeEnvironment({"num_tasks": 6, "limits": {"cpu_s": 1, "wall_s": 1, "total_wall_s": 4}})
    records = env.load_tasks()
    good = [(r.task.task_id, env.reference_response(r)) for r in records]
    bad = [(records[i % 6].task.task_id, f"```python\n{code}\n```") for i, code in enumerate(HOSTILE.values())]
    with TestClient(create_app(env, verify_timeout_s=20)) as client:  # the real 2-worker verify pool
        body = {"items": [{"task_id": t, "response": r} for t, r in bad + good]}
        r = client.post("/verify", content=json.dumps(body))
        assert r.status_code == 200, r.text
        verdicts = r.json()["verdicts"]
        assert client.get("/health").json() == {"status": "ok", "env": "code"}
        assert client.app.state.pool.recycled == 0  # no worker had to be killed
        again = client.post("/verify", content=json.dumps({"items": [{"task_id": good[0][0],
                                                                       "response": good[0][1]}]})).json()
    for name, v in zip(HOSTILE, verdicts):
        print(name, v["reason"])
        assert (v["reward"], v["status"]) == (0.0, "ok") and v["reason"], (name, v)
    assert [v["reward"] for v in verdicts[len(HOSTILE):]] == [1.0] * len(good)
    assert again["verdicts"][0]["reward"] == 1.0

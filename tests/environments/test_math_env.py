"""environments.math: generated tasks score their references, files load (or fail with the row named)."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from environments.math import MathEnvironment
from rl.types import Task

N_TASKS = 600  # 200 per difficulty: every generator kind, many times


@pytest.fixture(scope="module")
def env_and_records():
    env = MathEnvironment({"num_tasks": N_TASKS}, seed=0)
    return env, env.load_tasks()


def _boxed(response: str) -> str:
    return re.search(r"\\boxed\{(.*)\}$", response).group(1)


def test_plugin_attributes():
    assert MathEnvironment.name == "math"
    assert MathEnvironment.difficulties == ("easy", "medium", "hard")
    assert MathEnvironment.verify_workers == 2


def test_tasks_cover_every_difficulty_with_stable_ids(env_and_records):
    _, records = env_and_records
    assert Counter(r.task.difficulty for r in records) == {"easy": 200, "medium": 200, "hard": 200}
    ids = [r.task.task_id for r in records]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"(easy|medium|hard)-\d{6}", i) and i.startswith(r.task.difficulty)
               for i, r in zip(ids, records))
    for r in records:
        assert isinstance(r.task, Task) and r.task.env == "math" and r.task.meta == {}  # no reference leaks


def test_every_reference_response_scores_one(env_and_records):
    env, records = env_and_records
    for r in records:
        response = env.reference_response(r)
        v = env.verify(r, response)
        assert (v.reward, v.status) == (1.0, "ok"), (r.task.prompt[0].content, response, v.reason)
        assert _boxed(response) == r.reference


def test_perturbed_references_score_zero(env_and_records):
    env, records = env_and_records
    for r in records:
        response = env.reference_response(r)
        answer = _boxed(response)
        value = eval(answer)  # generated answers are integers or a/b fractions  # noqa: S307
        plus_one = response.replace(f"\\boxed{{{answer}}}", f"\\boxed{{{value + 1}}}")
        assert env.verify(r, plus_one).reward == 0.0, plus_one
        assert env.verify(r, response.replace(f"\\boxed{{{answer}}}", "\\boxed{x}")).reward == 0.0
        assert env.verify(r, response.replace(f"\\boxed{{{answer}}}", "\\boxed{")).reward == 0.0


def test_copying_the_question_does_not_score(env_and_records):
    env, records = env_and_records
    easy = [r for r in records if r.task.difficulty == "easy"][:50]
    for r in easy:
        expression = re.match(r"Compute (.*)\. Put", r.task.prompt[0].content).group(1)
        v = env.verify(r, f"\\boxed{{{expression}}}")
        assert v.reward == 0.0 or expression == r.reference, v.reason


def test_sizes_fit_the_tiny_policy(env_and_records, tiny_policy_dir):
    """ASCII, prompts under 120 characters, worked solutions under 120 characters and 110 tiny-policy tokens
    (configs/tiny-cpu.yaml gives rollouts 128 new tokens)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_policy_dir)
    env, records = env_and_records
    for r in records:
        prompt, response = r.task.prompt[0].content, env.reference_response(r)
        assert len(prompt) < 120 and len(response) < 120, (prompt, response)
        assert len(tok(response, add_special_tokens=False)["input_ids"]) < 110, response
        assert (prompt + response).isascii()
        assert prompt.endswith("Put the final answer in \\boxed{}.")


def test_generator_is_deterministic(env_and_records):
    _, records = env_and_records
    again = MathEnvironment({"num_tasks": N_TASKS}, seed=0).load_tasks()
    assert [(r.task, r.reference) for r in again] == [(r.task, r.reference) for r in records]
    # a task does not depend on how many are generated
    few = {r.task.task_id: r for r in MathEnvironment({"num_tasks": 30}, seed=0).load_tasks()}
    assert all(few[r.task.task_id] == r for r in records if r.task.task_id in few)
    other = MathEnvironment({"num_tasks": N_TASKS}, seed=1).load_tasks()
    assert sum(a.task.prompt != b.task.prompt for a, b in zip(records, other)) > N_TASKS // 2


def test_default_options_make_3000_tasks():
    records = MathEnvironment().load_tasks()
    assert len(records) == 3000 and records[-1].task.task_id == "hard-000999"


def test_reference_response_of_a_foreign_record_falls_back_to_the_answer(env_and_records):
    _, records = env_and_records
    env1 = MathEnvironment({"num_tasks": 3}, seed=1)  # another seed: its generator disagrees with the record
    assert env1.reference_response(records[0]) == f"\\boxed{{{records[0].reference}}}"


# ---------------------------------------------------------------------------------------------- files
GSM8K_ROWS = [
    {"question": "Natalia sold clips to 48 friends in April, and half as many in May. How many in all?",
     "answer": "In May she sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"},
    {"question": "Weng earns $12 an hour. She worked 50 minutes. How much did she earn?",
     "answer": "12/60 = $<<12/60=0.2>>0.2 per minute.\n0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "A book costs $1,200. What is the price?", "answer": "#### 1,200"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_jsonl(tmp_path):
    path = _jsonl(tmp_path / "gsm8k_test.jsonl", GSM8K_ROWS)
    env = MathEnvironment({"num_tasks": 0, "files": [path], "default_difficulty": "hard"})
    records = env.load_tasks()
    assert [(r.task.task_id, r.reference, r.task.difficulty) for r in records] == [
        ("gsm8k_test-000000", "72", "hard"), ("gsm8k_test-000001", "10", "hard"),
        ("gsm8k_test-000002", "1,200", "hard")]
    assert records[0].task.prompt[0].content.startswith("Natalia sold")
    assert records[0].task.prompt[0].content.endswith("Put the final answer in \\boxed{}.")
    for r in records:
        assert env.verify(r, env.reference_response(r)).reward == 1.0
    assert env.verify(records[0], "So she sold 72 clips. \\boxed{72}").reward == 1.0
    assert env.verify(records[2], "\\boxed{\\$1200}").reward == 1.0
    assert env.verify(records[0], "\\boxed{71}").reward == 0.0
    assert env.skipped_rows == {path: 0}


def test_math_style_parquet_with_levels_and_custom_columns(tmp_path):
    import datasets

    rows = {
        "problem_text": ["What is $\\frac{1}{2}+\\frac{1}{4}$?", "Solve $x^2=4$ for $x>0$.", "Simplify $2(x+1)$."],
        "solution": ["We get $\\boxed{\\frac{3}{4}}$.", "So $x=\\boxed{2}$.", "It is $\\boxed{2x+2}$."],
        "level": ["Level 1", "Level 3", "Level 5"],
    }
    path = str(tmp_path / "math.parquet")
    datasets.Dataset.from_dict(rows).to_parquet(path)
    env = MathEnvironment({"num_tasks": 6, "files": [{"path": path, "name": "math500",
                                                      "question_column": "problem_text"}]})
    records = env.load_tasks()
    files = [r for r in records if r.task.task_id.startswith("math500-")]
    assert len(records) == 9
    assert [(r.reference, r.task.difficulty) for r in files] == [
        ("\\frac{3}{4}", "easy"), ("2", "medium"), ("2x+2", "hard")]
    assert env.verify(files[0], "\\boxed{0.75}").reward == 1.0
    assert env.verify(files[2], "\\boxed{2 + 2x}").reward == 1.0
    for r in records:
        assert env.verify(r, env.reference_response(r)).reward == 1.0


def test_difficulty_column_and_integer_answers(tmp_path):
    path = _jsonl(tmp_path / "mixed.jsonl", [{"q": "One?", "a": 1, "difficulty": "easy"},
                                            {"q": "Two?", "a": 2, "difficulty": None},
                                            {"q": "Four?", "a": 4, "difficulty": "4"}])
    env = MathEnvironment({"num_tasks": 0, "files": [{"path": path, "question_column": "q", "answer_column": "a",
                                                      "difficulty": "medium"}]})
    assert [(r.reference, r.task.difficulty) for r in env.load_tasks()] == [
        ("1", "easy"), ("2", "medium"), ("4", "hard")]


def _error(tmp_path, options) -> str:
    with pytest.raises(ValueError) as info:
        MathEnvironment(options).load_tasks()
    return str(info.value)


def test_missing_file_is_named(tmp_path):
    message = _error(tmp_path, {"files": [str(tmp_path / "nope.jsonl")]})
    assert "nope.jsonl" in message and "does not exist" in message and "fix the path" in message


def test_unsupported_extension(tmp_path):
    (tmp_path / "data.csv").write_text("question,answer\n")
    message = _error(tmp_path, {"files": [str(tmp_path / "data.csv")]})
    assert "data.csv" in message and ".jsonl" in message


def test_unreadable_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"question": "ok", "answer": "1"}\n{not json\n')
    message = _error(tmp_path, {"files": [str(path)]})
    assert "broken.jsonl" in message and "could not be read" in message


def test_missing_column_names_the_fix(tmp_path):
    path = _jsonl(tmp_path / "cols.jsonl", [{"text": "1+1?", "answer": "2"}])
    message = _error(tmp_path, {"files": [path]})
    assert "cols.jsonl" in message and "question_column" in message and "'text'" in message
    message = _error(tmp_path, {"files": [{"path": path, "question_column": "text", "answer_column": "result"}]})
    assert "'result'" in message and "answer_column" in message


@pytest.mark.parametrize("bad_row,why", [
    ({"question": "", "answer": "1"}, "question is empty"),
    ({"question": None, "answer": "1"}, "question is empty"),
    ({"question": "Q?", "answer": None}, "answer is None"),
    ({"question": "Q?", "answer": "   "}, "answer is empty"),
    ({"question": "Q?", "answer": "x" * 2000}, "no '#### ' marker"),
    ({"question": "Q?", "answer": "1", "difficulty": "impossible"}, "difficulty 'impossible'"),
])
def test_bad_rows_name_the_file_and_row(tmp_path, bad_row, why):
    good = {"question": "What is 1+1?", "answer": "#### 2", "difficulty": "easy"}
    path = _jsonl(tmp_path / "rows.jsonl", [good, good, {"difficulty": "easy", **bad_row}, good])
    message = _error(tmp_path, {"files": [path]})
    assert "rows.jsonl, row 2 (0-based, line 3)" in message and why in message and "skip_bad_rows" in message
    env = MathEnvironment({"num_tasks": 0, "files": [path], "skip_bad_rows": True})
    assert [r.task.task_id for r in env.load_tasks()] == ["rows-000000", "rows-000001", "rows-000003"]
    assert env.skipped_rows == {path: 1}


def test_wrong_column_types(tmp_path):
    path = _jsonl(tmp_path / "types.jsonl", [{"question": 12, "answer": "1"}])
    assert "question is a int" in _error(tmp_path, {"files": [path]})
    path = _jsonl(tmp_path / "lists.jsonl", [{"question": "Q?", "answer": [1, 2]}])
    assert "answer is a list" in _error(tmp_path, {"files": [path]})


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    path = _jsonl(tmp_path / "empty.jsonl", [{"question": "", "answer": ""}, {"question": "", "answer": ""}])
    message = _error(tmp_path, {"files": [path], "skip_bad_rows": True})
    assert "no usable rows" in message and "2 bad" in message


def test_task_id_prefixes_must_be_distinct(tmp_path):
    a = _jsonl(tmp_path / "easy.jsonl", GSM8K_ROWS)
    assert "difficulty name" in _error(tmp_path, {"files": [a]})
    b = _jsonl(tmp_path / "g.jsonl", GSM8K_ROWS)
    assert "distinct `name`" in _error(tmp_path, {"files": [b, {"path": b}]})


def test_bad_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="Valid options: num_tasks, files"):
        MathEnvironment({"num_taks": 3})
    with pytest.raises(ValueError, match="default_difficulty"):
        MathEnvironment({"default_difficulty": "extreme"})


def test_doctests():
    import doctest

    import environments.files
    import environments.math
    import environments.math.files
    import environments.math.generator

    for module in (environments.math, environments.math.generator, environments.math.files, environments.files):
        assert doctest.testmod(module).failed == 0, module.__name__


_STEP = re.compile(r"^[0-9+\-*/ ]+=-?[0-9]+$")


def test_every_worked_step_is_a_true_equation(env_and_records):
    """The column working (add_steps, sub_steps, mul_steps) teaches one-digit facts: a wrong step would teach a
    wrong fact, so every `expression=number` step of every solution must hold."""
    from fractions import Fraction

    env, records = env_and_records
    checked = 0
    for r in records:
        response = env.reference_response(r)
        for part in re.split(r", so |, |\. |: ", response):  # "37+48: 7+8=15, ..." restates, then works
            part = part.removesuffix(".")
            if not _STEP.match(part):
                continue  # x=..., fractions a/b=c/d, the final \boxed{}: their own formats
            lhs, rhs = part.rsplit("=", 1)
            for chained in lhs.split("="):
                assert Fraction(eval(chained)) == Fraction(int(rhs)), (part, response)  # noqa: S307 (digits only)
            checked += 1
    assert checked > 2 * len(records), checked


def test_generator_doctests():
    import doctest

    import environments.math.generator as gen

    result = doctest.testmod(gen)
    assert result.attempted >= 6 and result.failed == 0

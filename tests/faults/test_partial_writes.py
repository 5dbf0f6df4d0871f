"""A kill in the middle of a JSONL append must not poison the file for the resumed run (issue 10)."""

from __future__ import annotations

import json

from rl.metrics import MetricsLogger, drop_partial_last_line, read_jsonl


def test_partial_last_line_is_cut_before_appending(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "a": 1.0}) + "\n" + '{"step": 2, "a": 0.')  # killed mid-write
    logger = MetricsLogger(tmp_path, enabled_tensorboard=False)
    logger.log(2, {"a": 2.0})
    logger.close()
    assert read_jsonl(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]


def test_complete_or_empty_files_are_left_alone(tmp_path):
    whole = tmp_path / "whole.jsonl"
    whole.write_text('{"step": 1}\n')
    assert drop_partial_last_line(whole) == 0 and whole.read_text() == '{"step": 1}\n'
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert drop_partial_last_line(empty) == 0
    assert drop_partial_last_line(tmp_path / "missing.jsonl") == 0
    only_fragment = tmp_path / "fragment.jsonl"
    only_fragment.write_text('{"st')
    assert drop_partial_last_line(only_fragment) == 4 and only_fragment.read_text() == ""

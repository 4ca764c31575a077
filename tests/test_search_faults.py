"""Faults that used to lose a run or a secret, each through a real search against a loopback LLM.

- an endpoint whose 401 body echoes the key: the key is in no file and no printed line;
- hostile answers (200,000 levels deep, deep under the length bound, rich markup): rejected
  with their reason, the search finishes, and `--resume` works (also after a kill);
- `--metric kid`: the prompts name KID, not RFID.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffnas.cli.search_cmd import show_status
from diffnas.execute.job import ScoreSpec
from diffnas.search.loop import SearchRun
from diffnas.search.requests import Requests
from doubles import KeyEchoingAnthropic, KeyEchoingOpenAI, OpenAILoopback
from test_search_loop import SMALL, SMALL2, TINY_EVAL, answer, config, trials

# Not shaped like a key (no "sk-"): only redaction of the value itself can catch it.
KEY = "LEAKCHECK-7f3a9c2e5b1d4068a9e2"


@pytest.mark.parametrize(
    ("loopback", "llm"),
    [(KeyEchoingOpenAI, "openai:test-model"), (KeyEchoingAnthropic, "anthropic:claude-haiku-4-5")],
)
def test_a_key_echoed_by_the_endpoint_is_in_no_file_and_no_printed_line(
    loopback, llm: str, tmp_path: Path, monkeypatch, capfd
) -> None:
    monkeypatch.setenv("LEAKY_ENDPOINT_KEY", KEY)
    run_dir = tmp_path / "runs" / "00000-search"
    with loopback() as server:
        for _ in range(2):
            server.push_fault(status=401)
        cfg = config(llm=llm, base_url=server.base_url, api_key_env="LEAKY_ENDPOINT_KEY")
        summary = SearchRun(cfg.model_copy(update={"rounds": 2, "promote": 0}), run_dir).run()
    sent = json.dumps(server.headers)
    assert KEY in sent  # the endpoint did get (and echo) the key
    # no round got an answer: the search says so (and `diffnas search` exits 1)
    assert summary["stop_reason"].startswith("every LLM request failed (2 of 2)")
    assert summary["trials"] == 0 and summary["rounds_failed"] == 2
    out, err = capfd.readouterr()
    assert "HTTP 401" in out and "[REDACTED]" in out  # the failure is still explained
    for text in (out, err):
        assert KEY[:16] not in text  # not the key, not even the part a cut would leave
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert {"events.jsonl", "calls.jsonl", "options.json", "study.db"} <= {p.name for p in files}
    for path in files:
        assert KEY[:16].encode() not in path.read_bytes(), path
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    failed = [e for e in events if e["event"] == "round_failed"]
    assert len(failed) == 2
    for event in failed:
        assert re.search(
            r"HTTP 401: .* invalid credential (Bearer )?\[REDACTED\]", event["message"]
        )


DEEP_200K = "[" * 200_000 + "]" * 200_000  # the answer: 400,000 characters
DEEP_IN_ENVELOPE = (
    '{"candidates": [{"rationale": "deep", "arch": ' + '{"a": ' * 12_000 + "1" + "}" * 12_002 + "]}"
)  # under the length bound, so only the nesting bound stops it
MARKUP = answer({**SMALL, "dropout": "[/red]"})  # rich would read its reason as a closing tag


def test_hostile_answers_become_rejected_trials_and_the_search_finishes(
    tmp_path: Path, capsys
) -> None:
    assert len(DEEP_IN_ENVELOPE) < 100_000
    run_dir = tmp_path / "runs" / "00000-search"
    cfg_fields = dict(rounds=4, per_round=1, max_repairs=0, promote=0)
    with OpenAILoopback() as server:
        for text in (DEEP_200K, DEEP_IN_ENVELOPE, MARKUP, answer(SMALL)):
            server.push_text(text)
        cfg = config(llm="openai:test-model", base_url=server.base_url, **cfg_fields)
        summary = SearchRun(cfg, run_dir).run()
        asked = len(server.requests)
        SearchRun(cfg, run_dir).run()  # resume: every round is on file
        assert len(server.requests) == asked == 4
    assert summary["stop_reason"] == "all rounds done"
    memory = trials(run_dir)
    assert [(t.round, t.status) for t in memory] == [
        (0, "rejected"), (1, "rejected"), (2, "rejected"), (3, "complete"),
    ]  # fmt: skip
    assert "400,000 characters long, at most 100,000" in memory[0].reason
    assert "nests deeper than 16 levels" in memory[1].reason
    assert "'[/red]' is not of type 'number'" in memory[2].reason
    show_status(run_dir)  # the table quotes the hostile reason as text
    assert "[/red]" in capsys.readouterr().out


def test_resume_after_a_kill_replays_a_deep_answer_and_goes_on(tmp_path: Path, monkeypatch) -> None:
    """The issue's trap: the answer is recorded, the process dies, every resume parses it again."""
    run_dir = tmp_path / "runs" / "00000-search"

    def killed_after_the_answer(self, proposals, memory):
        raise KeyboardInterrupt  # as a kill before rounds/round-000.json is written

    with OpenAILoopback() as server:
        server.push_text(DEEP_200K)
        server.push_text(answer(SMALL2))
        cfg = config(
            llm="openai:test-model", base_url=server.base_url,
            rounds=2, per_round=1, max_repairs=0, promote=0,
        )  # fmt: skip
        monkeypatch.setattr(Requests, "gate", killed_after_the_answer)
        with pytest.raises(KeyboardInterrupt):
            SearchRun(cfg, run_dir).run()
        monkeypatch.undo()
        assert not (run_dir / "rounds" / "round-000.json").exists()
        resumed = subprocess.run(
            [sys.executable, "-m", "diffnas", "search", "--resume", str(run_dir)],
            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert len(server.requests) == 2  # round 1 from llm/calls.jsonl, round 2 asked
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    memory = trials(run_dir)
    assert [(t.round, t.status) for t in memory] == [(0, "rejected"), (1, "complete")]
    assert "characters long" in memory[0].reason


def test_kid_search_prompts_name_kid(tmp_path: Path) -> None:
    kid = TINY_EVAL.model_copy(update={"score": ScoreSpec(metric="kid", num_samples=16, steps=2)})
    with OpenAILoopback() as server:
        server.push_text(answer(SMALL))
        server.push_text(answer(SMALL))  # a repeat: rejected, no training
        cfg = config(
            llm="openai:test-model", base_url=server.base_url, proxy=kid,
            rounds=2, per_round=1, max_repairs=0, promote=0,
        )  # fmt: skip
        SearchRun(cfg, tmp_path / "runs" / "00000-search").run()
    first, second = server.requests
    system = first["messages"][0]["content"]
    assert (
        first["messages"][0]["role"] == "system"
        and "lowest KID[classifier] (lower is better)" in system
    )
    memory_prompt = second["messages"][-1]["content"]
    assert "cost and KID[classifier] (lower is better)" in memory_prompt  # memory.txt's header
    assert "KID[classifier] " in memory_prompt.split("Search memory")[1]  # trial 0's score
    for request in (first, second):
        assert "rfid" not in json.dumps(request["messages"]).lower()


def test_a_search_with_one_failed_round_is_not_a_failed_search(tmp_path: Path) -> None:
    with OpenAILoopback() as server:
        server.push_fault(status=400)
        server.push_text(answer(SMALL))
        cfg = config(llm="openai:m", base_url=server.base_url, rounds=2, per_round=1, promote=0)
        summary = SearchRun(cfg, tmp_path / "run").run()
    assert summary["rounds_failed"] == 1  # the exit 1 of test_cli_bad_input_readback: not met
    assert summary["stop_reason"] == "all rounds done"

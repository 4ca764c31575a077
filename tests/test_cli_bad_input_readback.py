"""Hostile input beyond the command line's options: files the tool reads back from run folders
(damaged, truncated, of the wrong shape), paths it writes to, URLs it hands to libraries, and
reading commands that must not write.

Each case runs like `tests/test_cli_bad_input.py`'s, through the console script's own
`diffnas.cli.main.run` (a subset again in a real subprocess): exit 2, one paragraph naming the
file, field or option, no traceback, and nothing written — here every file's size and
modification time too, so a `status` that wrote Optuna's schema into an empty study.db fails. The run folders are built
directly (an Optuna study, a round file, results, a summary) rather than searched, so the file
stays fast; each case damages one file of its own copy.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffnas.cli.main import run
from diffnas.execute.job import EvalResult
from diffnas.gate.entry import RoundEntry, RoundFile
from diffnas.model.builder import build_unet
from diffnas.model.cost import measure_cost
from diffnas.propose.llm.base import LLMResponse
from diffnas.runs import OPTIONS_FILE, write_json
from diffnas.search import study as study_mod
from diffnas.search.config import SearchConfig
from diffnas.search.summary import SearchSummary
from diffnas.space.search_space import load_space
from diffnas.train.diffusion import DiffusionConfig
from test_cli_bad_input import build_workspace, check_refusal

SCORE = "RFID[classifier]"
RANDOM = ["--proposer", "random"]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = closed_port()
DOWN = f"postgresql://diffnas@127.0.0.1:{PORT}/diffnas"  # a server that is not there


def make_search_run(run_dir: Path) -> None:
    """A finished one-candidate search with every file a reader opens: options, study, round
    file, result, final result, EMA weights, summary, LLM call record, environment record."""
    space = load_space("tiny")
    arch = space.sample(random.Random(0))
    cost = measure_cost(arch)
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").touch()
    config = SearchConfig(proposer="random", rounds=1, per_round=1, data_subset=64)
    write_json(run_dir / OPTIONS_FILE, config.model_dump(mode="json"))
    entry = RoundEntry(
        slot=0, proposer="random", origin="random", raw=arch.model_dump(), arch=arch,
        gmacs=cost.gmacs, params_m=cost.params_m,
    )  # fmt: skip
    result = EvalResult(status="complete", score=1.5, wall_s=1.0, device="cpu", device_s=1.0)
    study = study_mod.open_study(run_dir)
    trial = study_mod.start_trial(study, space, entry, 0, SCORE)
    study_mod.finish_trial(study, trial, result, str(run_dir / "trials" / "00000"))
    round_file = RoundFile(round=0, proposer="random", entries=[entry], asked=1, seen=[])
    (run_dir / "rounds").mkdir()
    write_json(run_dir / "rounds" / "round-000.json", round_file.model_dump(mode="json"))
    for stage in ("trials", "final"):
        folder = run_dir / stage / "00000"
        (folder / "train").mkdir(parents=True)
        write_json(folder / "result.json", result.model_dump(mode="json"))
    ema = {
        "ema_model": build_unet(arch).state_dict(),
        "diffusion": DiffusionConfig.resolve("ddpm", False).model_dump(mode="json"),
        "metadata": {"arch": arch.model_dump(mode="json")},
    }
    torch.save(ema, run_dir / "trials" / "00000" / "train" / "ema.pt")
    final = {"trial": 0, "proxy_score": 1.5, **result.model_dump(mode="json")}
    summary = SearchSummary(
        stop_reason="all rounds done", trials=1, status_counts={"complete": 1},
        origins={"random": 1}, best_trial=0, best_score=1.5, final=[final],
        compute={"cpu_hours": 0.0006, "gpu_hours": 0.0},
    )  # fmt: skip
    write_json(run_dir / "summary.json", summary.model_dump(mode="json"))
    (run_dir / "llm").mkdir()
    call = {
        "time": 1.0, "endpoint": "e", "key": "k", "ok": True, "attempts": 1, "errors": [],
        "error": None, "response": LLMResponse(text="{}", model="m").model_dump(mode="json"),
    }  # fmt: skip
    (run_dir / "llm" / "calls.jsonl").write_text(json.dumps(call) + "\n")
    env = {"diffnas": "0", "python": "3", "torch": "2", "seed": 0}
    write_json(run_dir / "env.json", [env])


def edit_json(relative: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Damage: the JSON file at `relative` changed by `change` (which edits it in place, or
    returns what to write instead)."""

    def damage(run_dir: Path) -> None:
        path = run_dir / relative
        data = json.loads(path.read_text())
        replaced = change(data)
        path.write_text(json.dumps(data if replaced is None else replaced))

    return damage


def write_bytes(relative: str, content: bytes) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        (run_dir / relative).write_bytes(content)

    return damage


def truncate(relative: str, keep: int) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        path = run_dir / relative
        path.write_bytes(path.read_bytes()[:keep])

    return damage


def set_trial_attr(key: str, value: object) -> Callable[[Path], None]:
    """Damage: trial 0's user attribute `key` set to `value` in the study, behind Optuna."""

    def damage(run_dir: Path) -> None:
        with sqlite3.connect(run_dir / "study.db") as db:
            db.execute(
                "UPDATE trial_user_attributes SET value_json = ? WHERE key = ?",
                (json.dumps(value), key),
            )
        db.close()

    return damage


def with_options(**changes: object) -> Callable[[Path], None]:
    return edit_json(OPTIONS_FILE, lambda o: o.update(changes))


def bad_first_final(final: dict) -> None:
    final["final"][0]["trial"] = "zero"


# folder -> how its copy of the search run is damaged
DAMAGED: dict[str, Callable[[Path], None]] = {
    "summary-final-string": edit_json("summary.json", lambda s: s.update(final="done")),
    "summary-final-trial": edit_json("summary.json", bad_first_final),
    "summary-counts-list": edit_json("summary.json", lambda s: s.update(status_counts=[1, 2])),
    "summary-origins-text": edit_json("summary.json", lambda s: s.update(origins={"llm": "two"})),
    "summary-compute-text": edit_json("summary.json", lambda s: s.update(compute="0.2 h")),
    "summary-is-list": edit_json("summary.json", lambda s: [s]),
    "summary-torn": truncate("summary.json", 40),
    "round-is-list": edit_json("rounds/round-000.json", lambda r: [r]),
    "round-number-text": edit_json("rounds/round-000.json", lambda r: r.update(round="abc")),
    "round-torn": truncate("rounds/round-000.json", 100),
    "round-arch-invalid": edit_json(
        "rounds/round-000.json", lambda r: r["entries"][0]["arch"].update(base_channels=-4)
    ),
    "calls-line-list": write_bytes("llm/calls.jsonl", b"[1, 2]\n"),
    "calls-token-text": write_bytes(
        "llm/calls.jsonl",
        b'{"ok": true, "key": "k", "response": {"text": "", "model": "m", '
        b'"prompt_tokens": "12"}}\n',
    ),
    "calls-garbage-middle": write_bytes("llm/calls.jsonl", b'{"ok": tr\n{"ok": false}\n'),
    "final-result-garbage": write_bytes("final/00000/result.json", os.urandom(64)),
    "final-result-status": edit_json("final/00000/result.json", lambda r: r.update(status=7)),
    "proxy-result-torn": truncate("trials/00000/result.json", 30),
    "env-garbage": write_bytes("env.json", b"\x00\x01 not json"),
    "env-not-list": edit_json("env.json", lambda e: {"entries": e}),
    "ema-garbage": write_bytes("trials/00000/train/ema.pt", b"\x80\x02" + os.urandom(300)),
    "study-garbage": write_bytes("study.db", os.urandom(4096)),
    "study-text": write_bytes("study.db", b"this is not a database\n" * 50),
    "study-empty": write_bytes("study.db", b""),
    "attr-arch-invalid": set_trial_attr("arch", {"base_channels": "wide"}),
    "attr-round-text": set_trial_attr("round", "abc"),
    "attr-status-unknown": set_trial_attr("status", "exploded"),
    "options-storage-number": with_options(storage=5),
    "storage-down": with_options(storage=DOWN),
    "storage-unknown": with_options(storage="nosuchdb://host/db"),
    "storage-no-driver": with_options(storage="mysql://user@127.0.0.1/db"),
}

BASE = "search_run_ok"

# (id, command line, fragments the message must hold); paths are relative to the workspace
CASES = [
    # class 1: files read back without validation (summary, rounds, calls, results, env,
    # checkpoints, the study and its trial attributes)
    ("status-summary-final-string", ["status", "summary-final-string"], ["summary.json", "final="]),
    (
        "status-summary-final-trial",
        ["status", "summary-final-trial"],
        ["summary.json", "final.0.trial"],
    ),
    ("status-summary-counts", ["status", "summary-counts-list"], ["summary.json", "status_counts"]),
    ("status-summary-origins", ["status", "summary-origins-text"], ["summary.json", "origins.llm"]),
    ("report-summary-compute", ["report", "summary-compute-text"], ["summary.json", "compute"]),
    ("status-summary-list", ["status", "summary-is-list"], ["summary.json", "object"]),
    ("status-summary-torn", ["status", "summary-torn"], ["summary.json", "not valid JSON"]),
    ("status-round-list", ["status", "round-is-list"], ["round-000.json", "object"]),
    ("status-round-text", ["status", "round-number-text"], ["round-000.json", "round='abc'"]),
    ("report-round-torn", ["report", "round-torn"], ["round-000.json", "not valid JSON"]),
    ("status-round-arch", ["status", "round-arch-invalid"], ["round-000.json", "base_channels"]),
    ("status-calls-list", ["status", "calls-line-list"], ["calls.jsonl", "line 1"]),
    ("report-calls-tokens", ["report", "calls-token-text"], ["calls.jsonl", "prompt_tokens"]),
    ("status-calls-middle", ["status", "calls-garbage-middle"], ["calls.jsonl", "line 1"]),
    ("status-final-garbage", ["status", "final-result-garbage"], ["final/00000/result.json"]),
    ("report-final-status", ["report", "final-result-status"], ["result.json", "status=7"]),
    (
        "export-proxy-result-torn",
        ["export", "proxy-result-torn", "--trial", "0", "--out", "export-new", "--stage", "proxy"],
        ["trials/00000/result.json", "not valid JSON"],
    ),
    ("resume-env-garbage", ["search", "--resume", "env-garbage"], ["env.json", "not valid JSON"]),
    ("resume-env-not-list", ["search", "--resume", "env-not-list"], ["env.json", "list"]),
    ("resume-round-torn", ["search", "--resume", "round-torn"], ["round-000.json"]),
    ("resume-calls-list", ["search", "--resume", "calls-line-list"], ["calls.jsonl"]),
    (
        "export-ema-garbage",
        ["export", "ema-garbage", "--trial", "0", "--out", "export-new", "--stage", "proxy"],
        ["ema.pt", "damaged"],
    ),
    ("train-resume-garbage-ckpt", ["train", "--resume", "train_garbage_ckpt"], ["checkpoint.pt"]),
    ("train-resume-foreign-ckpt", ["train", "--resume", "train_foreign_ckpt"], ["checkpoint.pt"]),
    ("score-resume-bad-record", ["score", "--resume", "score_bad_record"], ["score.json"]),
    ("status-study-garbage", ["status", "study-garbage"], ["study.db", "SQLite"]),
    ("report-study-text", ["report", "study-text"], ["study.db", "SQLite"]),
    ("resume-study-garbage", ["search", "--resume", "study-garbage"], ["study.db"]),
    ("status-attr-arch", ["status", "attr-arch-invalid"], ["trial 0", "arch.base_channels"]),
    ("report-attr-round", ["report", "attr-round-text"], ["trial 0", "round='abc'"]),
    ("status-attr-status", ["status", "attr-status-unknown"], ["trial 0", "status='exploded'"]),
    ("status-options-storage", ["status", "options-storage-number"], ["options.json", "storage=5"]),
    (
        "report-proxy-check-pairs",
        ["report", BASE, "--proxy-check", "pairs-bad.json", "--out", "report-new"],
        ["pairs-bad.json", "pairs.0.reference"],
    ),
    # class 2: output paths
    ("report-out-under-file", ["report", BASE, "--out", "afile/sub"], ["--out", "afile", "a file"]),
    ("report-out-is-file", ["report", BASE, "--out", "afile"], ["--out", "afile", "a file"]),
    ("report-out-proc", ["report", BASE, "--out", "/proc/diffnas-report"], ["--out", "/proc"]),
    (
        "export-out-under-file",
        ["export", BASE, "--trial", "0", "--out", "afile/model"],
        ["--out", "afile", "a file"],
    ),
    ("export-out-is-file", ["export", BASE, "--trial", "0", "--out", "afile"], ["--out", "afile"]),
    (
        "export-out-proc",
        ["export", BASE, "--trial", "0", "--out", "/proc/diffnas-model"],
        ["--out", "/proc"],
    ),
    ("search-runs-proc", ["search", "--runs", "/proc", *RANDOM], ["--runs", "/proc"]),
    ("train-runs-proc", ["train", "small.json", "--runs", "/proc"], ["--runs", "/proc"]),
    ("search-space-unreadable", ["search", "--space", "UNREADABLE", *RANDOM], ["cannot be read"]),
    (
        "search-weights-unreadable",
        ["search", "--extractor", "inception", "--inception-weights", "UNREADABLE", *RANDOM],
        ["inception weights", "cannot be read"],
    ),
    ("cost-arch-unreadable", ["cost", "UNREADABLE"], ["cannot be read"]),
    # class 3: URLs and engines handed to libraries
    ("search-storage-empty", ["search", "--storage", "", *RANDOM], ["--storage", "empty"]),
    ("search-storage-words", ["search", "--storage", "not a url", *RANDOM], ["not a database URL"]),
    (
        "search-storage-unknown",
        ["search", "--storage", "nosuchdb://h/db", *RANDOM],
        ["--storage", "nosuchdb"],
    ),
    (
        "search-storage-missing-folder",
        ["search", "--storage", "sqlite:///no/such/folder/s.db", *RANDOM],
        ["--storage", "no/such/folder", "does not exist"],
    ),
    (
        "search-storage-memory",
        ["search", "--storage", "sqlite://", *RANDOM],
        ["--storage", "in-memory"],
    ),
    (
        "search-storage-no-driver",
        ["search", "--storage", "mysql://u@127.0.0.1/db", *RANDOM],
        ["--storage", "driver", "not installed"],
    ),
    ("search-storage-down", ["search", "--storage", DOWN, *RANDOM], [f"127.0.0.1:{PORT}"]),
    (
        "search-storage-garbage-file",
        ["search", "--storage", "sqlite:///blob.bin", *RANDOM],
        ["blob.bin"],
    ),
    ("status-storage-down", ["status", "storage-down"], [f"127.0.0.1:{PORT}", "cannot be reached"]),
    ("report-storage-unknown", ["report", "storage-unknown"], ["nosuchdb"]),
    (
        "export-storage-no-driver",
        ["export", "storage-no-driver", "--trial", "0", "--out", "x"],
        ["driver"],
    ),
    (
        "worker-storage-words",
        ["worker", "--storage", "not a url"],
        ["--storage", "not a database URL"],
    ),
    ("worker-storage-down", ["worker", "--storage", DOWN], [f"127.0.0.1:{PORT}"]),
    (
        "worker-storage-missing-folder",
        ["worker", "--storage", "sqlite:///no/such/q.db"],
        ["no/such", "does not exist"],
    ),
    (
        "search-ray-address-words",
        ["search", "--executor", "ray", "--ray-address", "head node", *RANDOM],
        ["--ray-address 'head node'", "not a Ray address"],
    ),
    (
        "search-ray-address-down",
        ["search", "--executor", "ray", "--ray-address", f"127.0.0.1:{PORT}", *RANDOM],
        ["--ray-address", "nothing answers"],
    ),
    (
        "search-ray-address-not-ray",
        ["search", "--ray-address", "ray://head:10001", *RANDOM],
        ["--ray-address", "--executor ray"],
    ),
    (
        "search-base-url-words",
        ["search", "--llm", "openai:m", "--base-url", "not a url"],
        ["--base-url 'not a url'", "http"],
    ),
    (
        "search-base-url-ftp",
        ["search", "--llm", "openai:m", "--base-url", "ftp://host/v1"],
        ["--base-url", "http"],
    ),
    (
        "search-base-url-port",
        ["search", "--llm", "openai:m", "--base-url", "http://host:port/v1"],
        ["--base-url", "port"],
    ),
    ("search-base-url-local", ["search", "--base-url", "http://h/v1"], ["--base-url", "local"]),
    # class 8: reading commands never write
    ("status-study-empty", ["status", "study-empty"], ["study.db", "holds no study"]),
    ("report-study-empty", ["report", "study-empty"], ["study.db", "holds no study"]),
    ("export-study-empty", ["export", "study-empty", "--trial", "0", "--out", "x"], ["study.db"]),
    ("status-study-missing", ["status", "no_study"], ["study.db", "not started"]),
    (
        "worker-on-a-search-study",
        ["worker", "--storage", "SEARCH_DB"],
        ["not a queue", "'diffnas'"],
    ),
]
SUBPROCESS_CASES = ["status-study-empty", "worker-on-a-search-study"]


def unreadable(ws: Path) -> Path:
    """A file that exists and cannot be read: ws/unreadable.yaml (mode 000), or, as root who
    reads anything, the first page of this process's memory map, which no reader gets (EIO)."""
    path = ws / "unreadable.yaml"
    try:
        path.read_bytes()
    except OSError:
        return path
    return Path("/proc/self/mem")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """The bad-input workspace of test_cli_bad_input (small.json, afile, blob.bin, train_run,
    ...) and a search run folder with a damaged copy per entry of DAMAGED."""
    ws = tmp_path_factory.mktemp("readback")
    build_workspace(ws)
    (ws / "unreadable.yaml").write_text("name: x\n")
    (ws / "unreadable.yaml").chmod(0)
    make_search_run(ws / BASE)
    for name, damage in DAMAGED.items():
        shutil.copytree(ws / BASE, ws / name)
        damage(ws / name)
    (ws / "no_study").mkdir()
    shutil.copy(ws / BASE / OPTIONS_FILE, ws / "no_study" / OPTIONS_FILE)
    pairs = {"pairs": [{"proxy": 1.0, "reference": "high"}]}
    (ws / "pairs-bad.json").write_text(json.dumps(pairs))
    # train run folders whose checkpoint is garbage, or a checkpoint of something else
    train_options = json.loads((ws / "train_run" / OPTIONS_FILE).read_text())
    for name, content in (
        ("train_garbage_ckpt", b"\x80\x02" + os.urandom(500)),
        ("train_foreign_ckpt", None),
    ):
        (ws / name).mkdir()
        write_json(ws / name / OPTIONS_FILE, train_options)
        if content is None:
            torch.save({"step": 3, "weights": torch.zeros(2)}, ws / name / "checkpoint.pt")
        else:
            (ws / name / "checkpoint.pt").write_bytes(content)
    (ws / "score_bad_record").mkdir()
    score_options = {
        "checkpoint": "x/ema.pt", "data": {"kind": "digits"}, "score": {}, "seed": 0,
        "device": "cpu", "cache_dir": "cache",
    }  # fmt: skip
    write_json(ws / "score_bad_record" / OPTIONS_FILE, score_options)
    write_json(ws / "score_bad_record" / "score.json", {"score": 3.2, "run_dir": "."})
    return ws


def fingerprint(ws: Path) -> dict[Path, tuple[int, int, int]]:
    """Every path under `ws` with its size, modification time (ns) and mode: nothing created,
    removed or written (a write moves the time even when it keeps the size)."""
    return {
        p.relative_to(ws): (st.st_size, st.st_mtime_ns, st.st_mode)
        for p in ws.rglob("*")
        if (st := p.lstat())
    }


def command(ws: Path, args: list[str]) -> list[str]:
    substitutes = {
        "UNREADABLE": str(unreadable(ws)),
        "SEARCH_DB": f"sqlite:///{ws / BASE / 'study.db'}",
    }
    return [substitutes.get(a, a) for a in args]


@pytest.mark.parametrize(("args", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_run_files_paths_and_urls_are_refused(
    workspace: Path, monkeypatch, capsys, args: list[str], fragments: list[str]
) -> None:
    monkeypatch.chdir(workspace)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")  # a key: only the URL is wrong
    monkeypatch.setattr(sys, "argv", ["diffnas", *command(workspace, args)])
    before = fingerprint(workspace)
    with pytest.raises(SystemExit) as exit_:  # any other exception is the traceback a user sees
        run()
    check_refusal(exit_.value.code, capsys.readouterr().err, fragments)
    assert fingerprint(workspace) == before  # nothing created, removed or written


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_the_real_entry_point_refuses_read_backs_the_same_way(workspace: Path, case: str) -> None:
    args, fragments = next(c[1:] for c in CASES if c[0] == case)
    before = fingerprint(workspace)
    proc = subprocess.run(
        [sys.executable, "-c", "from diffnas.cli.main import run; run()",
         *command(workspace, args)],
        capture_output=True, text=True, timeout=120, cwd=workspace,
    )  # fmt: skip
    check_refusal(proc.returncode, proc.stderr, fragments)
    assert fingerprint(workspace) == before


def test_every_case_is_named_once_and_each_class_has_three() -> None:
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names) and set(SUBPROCESS_CASES) <= set(names)
    assert set(DAMAGED) <= {a for c in CASES for a in c[1]}  # every damaged copy is used


def test_a_failed_export_leaves_no_folder_behind(workspace: Path, tmp_path, monkeypatch) -> None:
    """export fills a temporary folder next to --out and renames it when complete: an error
    half-way (here after the pipeline's weights are written) leaves neither --out nor the
    temporary folder, nor the parent it created; a complete export is a normal folder."""
    from diffnas.report import export

    out = tmp_path / "new" / "model"

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_model_card", fail)
    with pytest.raises(OSError, match="No space left"):
        export.export_trial(workspace / BASE, 0, out, "proxy")
    assert not (tmp_path / "new").exists()
    monkeypatch.undo()
    done = export.export_trial(workspace / BASE, 0, out, "proxy")
    assert done.out == out and (out / "unet" / "config.json").is_file()
    assert (out / "README.md").is_file() and oct(out.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in out.parent.iterdir()] == ["model"]  # no partial folder left


def test_a_search_the_llm_never_answers_exits_1(tmp_path, monkeypatch, capsys) -> None:
    """Every request failed (nothing listens at --base-url): the search says so and exits 1
    instead of ending 'all rounds done' with nothing trained; its folder is kept to resume."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-used")
    runs = tmp_path / "runs"
    monkeypatch.setattr(sys, "argv", [
        "diffnas", "search", "--llm", "openai:m", "--base-url", f"http://127.0.0.1:{PORT}/v1",
        "--llm-attempts", "1", "--rounds", "2", "--per-round", "1", "--promote", "0",
        "--data-subset", "64", "--runs", str(runs),
    ])  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        run()
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and "no answer from the LLM" in err and "Traceback" not in err
    (run_dir,) = runs.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_failed"] == 2 and summary["trials"] == 0
    assert summary["stop_reason"].startswith("every LLM request failed (2 of 2)")


def test_damaged_caches_are_named_not_tracebacks(tmp_path) -> None:
    """The classifier and reference-statistics caches (under --runs/cache) read back through
    the same rules: a damaged entry is a UserError naming the file and the fix."""
    from diffnas.errors import UserError
    from diffnas.evaluate.classifier import classifier_extractor
    from diffnas.evaluate.reference import reference_stats

    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 1, 16, 16), dtype=torch.uint8, generator=rng)
    labels = torch.arange(16) % 2
    kwargs = {"cache_dir": tmp_path, "dataset_fingerprint": "fp", "epochs": 1}
    extractor = classifier_extractor(train_images=images, train_labels=labels, **kwargs)
    ref = {"dataset_fingerprint": "fp", "split": "train", "resolution": 16, "cache_dir": tmp_path}
    reference_stats(extractor, images, **ref)
    (arrays,) = tmp_path.glob("ref-*.npz")
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(UserError, match=f"{arrays.name}.*damaged.*delete"):
        reference_stats(extractor, images, **ref)
    # the weights file carries its metadata in the header; the .json beside it is a copy
    (weights,) = tmp_path.glob("classifier-*.safetensors")
    weights.write_bytes(b"not safetensors")
    with pytest.raises(UserError, match=f"{weights.name}.*damaged.*delete"):
        classifier_extractor(**kwargs)
    from safetensors.torch import save_file

    bad_meta = json.dumps({"arch": "x", "channels": "one", "num_classes": 2, "resolution": 16})
    save_file({"w": torch.zeros(1)}, str(weights), metadata={"diffnas_classifier": bad_meta})
    with pytest.raises(UserError, match=f"{weights.name}.*damaged.*channels='one'"):
        classifier_extractor(**kwargs)
    good_meta = json.dumps({"arch": "x", "channels": 1, "num_classes": 2, "resolution": 16})
    save_file({"w": torch.zeros(1)}, str(weights), metadata={"diffnas_classifier": good_meta})
    with pytest.raises(UserError, match=f"{weights.name}.*damaged.*do not fit"):
        classifier_extractor(**kwargs)


def test_a_torn_jsonl_line_is_left_out_and_cut_before_the_next_append(tmp_path) -> None:
    """A kill mid-append leaves a last line without its newline: readers leave it out, the
    next append cuts it off, so the file reads back whole; any other bad line is refused."""
    from diffnas.errors import UserError
    from diffnas.propose.llm.record import CallRecord
    from diffnas.runs import append_jsonl, read_records

    path = tmp_path / "calls.jsonl"
    append_jsonl(path, {"ok": False, "key": "a"})
    with open(path, "ab") as f:
        f.write(b'{"ok": false, "key": "b", "err')  # torn by a kill
    assert [r.key for r in read_records(path, CallRecord, "calls")] == ["a"]
    append_jsonl(path, {"ok": False, "key": "c"})
    assert path.read_text().count("\n") == 2
    assert [r.key for r in read_records(path, CallRecord, "calls")] == ["a", "c"]
    path.write_text('{"ok": false}\n{"ok": tru\n{"ok": false}\n')
    with pytest.raises(UserError, match="calls .* line 2 is damaged"):
        read_records(path, CallRecord, "calls")

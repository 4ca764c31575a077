"""`diffnas doctor`: the real CLI on this install, a model that cannot load, and each check alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffnas import doctor
from diffnas.cli.main import run
from diffnas.evaluate.inception import INCEPTION_ENV
from diffnas.propose.llm.local_backend import MODEL_ENV

# llama.cpp's `llama_print_system_info()` of a native build on an AMX machine, and of the
# portable build `make setup` installs.
NATIVE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
PORTABLE_INFO = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 |"
)
SAPPHIRE_RAPIDS = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
    "flags\t\t: fpu sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8\n"
)
HASWELL = (
    "processor\t: 0\nmodel name\t: Intel(R) Core(TM) i7-4770\nflags\t\t: fpu sse2 avx avx2 fma\n"
)


def test_doctor_exits_0_on_this_install(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != MODEL_ENV}
    result = subprocess.run(
        [sys.executable, "-c", "from diffnas.cli.main import run; run()", "doctor", "--json"]
        + ["--runs", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and report["broken"] == []
    assert list(checks) == [
        "Python", "torch", "CPU bf16", "CUDA", "llama.cpp", "local LLM", "FID Inception",
        "run folder",
    ]  # fmt: skip
    assert checks["torch"]["detail"].startswith(torch.__version__)
    # the portable build `make setup` installs, answering in its own process
    assert checks["llama.cpp"]["status"] == "ok" and "AVX2" in checks["llama.cpp"]["detail"]
    llm = checks["local LLM"]
    assert llm["status"] == "ok" and "child process" in llm["detail"]
    assert "channels" in llm["detail"]  # the schema-constrained answer
    assert not (tmp_path / "runs").exists()  # checked, not created


def test_doctor_exits_1_naming_the_local_model_when_it_cannot_load(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Through the console script's function in this process (the exit code is its
    `sys.exit`); the model still loads in a child process of its own."""
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF but not really" * 50)
    monkeypatch.setenv(MODEL_ENV, str(bogus))
    monkeypatch.setattr(sys, "argv", ["diffnas", "doctor", "--runs", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_:
        run()
    out, err = capsys.readouterr()
    assert exit_.value.code == 1, out + err
    assert "Traceback" not in out + err
    lines = out.splitlines()
    failed = [line for line in lines if line.startswith("fail")]
    assert len(failed) == 1 and "local LLM" in failed[0] and "bogus.gguf" in failed[0]
    assert lines[-1] == "broken: local LLM"


def test_llama_build_with_amx_or_avx512_is_a_warning() -> None:
    native = doctor._llama_build_check("llama-cpp-python 0.3.36", NATIVE_INFO)
    assert native.status == "warn" and "make clean setup" in native.fix
    assert "uses AVX512, AVX512_VBMI, AVX512_VNNI, AVX512_BF16, AMX_INT8" in native.detail
    portable = doctor._llama_build_check("llama-cpp-python 0.3.36", PORTABLE_INFO)
    assert portable.status == "ok" and "built for SSE3 SSSE3 AVX AVX2 F16C FMA" in portable.detail


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (SAPPHIRE_RAPIDS, "native bf16 (avx512_bf16, amx_bf16); AMX: amx_tile, amx_bf16, amx_int8"),
        (HASWELL, "no native bf16; AMX: no; CPU training stays in fp32"),
    ],
)
def test_cpu_bf16_and_amx_come_from_the_cpu_flags(
    cpuinfo: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cpuinfo").write_text(cpuinfo)
    monkeypatch.setattr(doctor, "CPUINFO", tmp_path / "cpuinfo")
    _, bf16 = doctor.check_torch()
    assert bf16.name == "CPU bf16" and expected in bf16.detail


def test_inception_weights_missing_or_wrong_is_reported_not_required(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    missing = doctor.check_inception(None)
    assert missing.status == "missing" and not missing.required
    assert "--inception-weights PATH" in missing.fix and INCEPTION_ENV in missing.fix
    monkeypatch.setenv(INCEPTION_ENV, str(tmp_path / "nope.pth"))
    wrong = doctor.check_inception(None)
    assert wrong.status == "warn" and "nope.pth" in wrong.fix
    assert not (tmp_path / "hub").exists()  # no download was tried


def test_run_folder_check(tmp_path: Path) -> None:
    ok = doctor.check_runs_dir(tmp_path / "a" / "runs")
    assert ok.status == "ok" and f"will be created in {tmp_path}" in ok.detail
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    blocked = doctor.check_runs_dir(tmp_path / "file" / "runs")
    assert blocked.status == "fail" and blocked.required and "is not a folder" in blocked.detail
    report = doctor.Report([blocked, doctor.Check("FID Inception", "missing", "not on disk")])
    assert report.broken == ["run folder"] and not report.ok

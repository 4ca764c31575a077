"""`diffnas doctor`: what this machine can do, one check per part, each with its fix.

Every check returns `Check`s (ok / warn / missing / fail, a one-line detail, the fix); a
`required` part that is not ok makes the report fail. The local LLM is loaded and asked a
schema-constrained question in its worker process, as a search would, so a llama.cpp build
that crashes on this CPU is reported here instead of killing a search.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from diffnas.errors import UserError

Status = Literal["ok", "warn", "missing", "fail"]
MIN_PYTHON = (3, 10)
CPUINFO = Path("/proc/cpuinfo")
# AMX's tile unit (native bf16 is decided by train/precision.py, the one detection).
AMX_FLAGS = ("amx_tile", "amx_bf16", "amx_int8")
# Instructions some machines report but refuse; a portable llama.cpp build uses none of them.
LLAMA_NON_PORTABLE = ("AMX", "AVX512")
REBUILD_FIX = "install the portable llama.cpp build: `make clean setup`"
LLM_TIMEOUT_S = 120.0
PROBE_SCHEMA = {
    "type": "object",
    "properties": {"channels": {"type": "array", "items": {"type": "integer"}, "maxItems": 3}},
    "required": ["channels"],
}


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = False

    @property
    def broken(self) -> bool:
        return self.required and self.status != "ok"


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def broken(self) -> list[str]:
        """Names of the required parts that do not work."""
        return [c.name for c in self.checks if c.broken]

    @property
    def ok(self) -> bool:
        return not self.broken

    def as_dict(self) -> dict:
        return {"ok": self.ok, "broken": self.broken, "checks": [asdict(c) for c in self.checks]}


def run_checks(*, runs_dir: Path, inception_weights: str | None = None) -> Report:
    """Every check, in the order a user needs them."""
    return Report(
        [
            check_python(),
            *check_torch(),
            check_cuda(),
            *check_local_llm(),
            check_inception(inception_weights),
            check_runs_dir(runs_dir),
        ]
    )


def check_python() -> Check:
    version = platform.python_version()
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("Python", "ok", f"{version} ({sys.executable})", required=True)
    wanted = ".".join(map(str, MIN_PYTHON))
    return Check(
        "Python", "fail", f"{version} is too old", f"use Python {wanted} or newer", required=True
    )


def cpu_flags() -> tuple[str, set[str]]:
    """(/proc/cpuinfo text, its feature flags); empty where there is none."""
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:
        return "", set()
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())  # the first CPU speaks for all
    return text, set((fields.get("flags") or fields.get("features") or "").split())


def check_torch() -> list[Check]:
    """torch and its CPU kernels; whether CPU training gets bf16 autocast."""
    import torch

    from diffnas.train.precision import cpu_bf16_support, parse_cpuinfo

    capability = torch.backends.cpu.get_cpu_capability()
    version = Check(
        "torch", "ok", f"{torch.__version__}, CPU kernels for {capability}", required=True
    )
    text, flags = cpu_flags()
    cpu = parse_cpuinfo(text) if text else None
    cpu = cpu or cpu_bf16_support()
    amx = [f for f in AMX_FLAGS if f in flags]
    amx_text = f"AMX: {', '.join(amx)}" if amx else "AMX: no"
    if cpu.native_bf16:
        detail = (
            f"{cpu.model}: native bf16 ({cpu.evidence}); {amx_text}; bf16 autocast is used for "
            f"CPU training (--no-bf16-cpu turns it off)"
        )
    else:
        detail = (
            f"{cpu.model}: no native bf16; {amx_text}; CPU training stays in fp32 "
            "(bf16 would be emulated, slower)"
        )
    return [version, Check("CPU bf16", "ok", detail)]


def check_cuda() -> Check:
    import torch

    if not torch.cuda.is_available():
        built = (
            f"torch built for CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only torch"
        )
        return Check("CUDA", "ok", f"no CUDA device ({built}); training runs on the CPU")
    devices = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        devices.append(f"cuda:{index} {props.name} ({props.total_memory / 2**30:.0f} GiB)")
    return Check("CUDA", "ok", "; ".join(devices))


def check_local_llm() -> list[Check]:
    """llama.cpp's build; the GGUF found, loaded and answering in its own worker process."""
    from diffnas.propose.llm import LLMRequest, LLMUnavailable, RetryPolicy
    from diffnas.propose.llm.local_backend import (
        DOCTOR_HINT,
        INSTALL_HINT,
        MODEL_ENV,
        LocalBackend,
        resolve_model_path,
    )
    from diffnas.propose.llm.local_supervisor import WorkerFault, llama_system_info

    if importlib.util.find_spec("llama_cpp") is None:
        return [
            Check("llama.cpp", "missing", "llama-cpp-python is not installed", INSTALL_HINT, True),
            Check("local LLM", "missing", "needs llama-cpp-python", INSTALL_HINT, True),
        ]
    runtime = f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')}"
    try:
        build = _llama_build_check(runtime, llama_system_info())
    except WorkerFault as fault:
        build = Check("llama.cpp", "fail", f"{runtime}: {fault}", REBUILD_FIX, required=True)
    configured = os.environ.get(MODEL_ENV)
    fix = (
        f"point {MODEL_ENV} at a chat GGUF file, or unset it to use the bundled SmolLM2"
        if configured
        else f"{REBUILD_FIX}; or use --llm openai:MODEL / anthropic:MODEL"
    )
    try:
        path = resolve_model_path()
        started = time.perf_counter()
        backend = LocalBackend(
            model_path=path, n_ctx=1024, timeout_s=LLM_TIMEOUT_S, retry=RetryPolicy(max_attempts=1)
        )
    except UserError as err:
        return [build, Check("local LLM", "fail", str(err).removesuffix(DOCTOR_HINT), fix, True)]
    load_s = time.perf_counter() - started
    request = LLMRequest(
        messages=[{"role": "user", "content": "Give up to three channel widths for a small UNet."}],
        schema=PROBE_SCHEMA,
        temperature=0.0,
        max_tokens=32,
        seed=0,
    )
    try:
        response = backend.complete(request)
        answer = json.loads(response.text)
        if not isinstance(answer, dict) or "channels" not in answer:
            raise ValueError(f"the answer {response.text!r} does not follow the schema")
    except (LLMUnavailable, ValueError) as err:
        return [build, Check("local LLM", "fail", str(err), fix, required=True)]
    finally:
        backend.close()
    detail = (
        f"{path.name} ({path.parent}): loaded in a child process in {load_s:.1f} s; answered a "
        f"schema-constrained request in {response.latency_s:.1f} s: {response.text.strip()}"
    )
    return [build, Check("local LLM", "ok", detail, required=True)]


def _llama_build_check(runtime: str, system_info: str) -> Check:
    """The CPU features llama.cpp was built with; AMX/AVX-512 in the build is a warning."""
    features = [
        part.split("=")[0].strip().removeprefix("CPU :").strip()
        for part in system_info.split("|")
        if part.strip().endswith("= 1")
    ]
    risky = [f for f in features if f.startswith(LLAMA_NON_PORTABLE)]
    detail = f"{runtime}, built for {' '.join(features) or system_info or 'unknown CPU features'}"
    if risky:
        return Check(
            "llama.cpp",
            "warn",
            f"{detail}: uses {', '.join(risky)}, which some machines report but refuse (a crash "
            f"at the first prompt)",
            REBUILD_FIX,
        )
    return Check("llama.cpp", "ok", f"{detail}; no AMX/AVX-512 (portable build)")


def check_inception(weights: str | None) -> Check:
    """The FID Inception weights (only needed for FID with --extractor inception); no download."""
    from diffnas.evaluate.inception import (
        INCEPTION_ENV,
        INCEPTION_FILE,
        INCEPTION_URLS,
        resolve_inception_weights,
    )

    name = "FID Inception"
    configured = weights or os.environ.get(INCEPTION_ENV)
    try:
        path, _ = resolve_inception_weights(weights, allow_download=False)
    except UserError as err:
        if configured:  # given but wrong: the resolver's message says what and how
            return Check(name, "warn", f"{configured} cannot be used", str(err))
        return Check(
            name,
            "missing",
            "not on disk; needed only for --extractor inception (the search ranks with "
            "--extractor classifier by default)",
            f"get {INCEPTION_FILE} from {INCEPTION_URLS[1]}, then pass --inception-weights PATH "
            f"or set {INCEPTION_ENV}=PATH",
        )
    return Check(name, "ok", f"{path} (SHA-256 checked)")


def check_runs_dir(runs_dir: Path) -> Check:
    """The run folder root: writable, or creatable (doctor itself creates nothing)."""
    target = runs_dir.expanduser()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    fix = f"pass --runs DIR with a writable folder, or fix the permissions of {existing}"
    if not existing.is_dir():
        return Check("run folder", "fail", f"{existing} is not a folder", fix, required=True)
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".diffnas-doctor-"):
            pass
    except OSError as err:
        return Check("run folder", "fail", f"{existing} is not writable ({err})", fix, True)
    state = "writable" if existing == target else f"will be created in {existing}"
    return Check("run folder", "ok", f"{target}/ {state}", required=True)

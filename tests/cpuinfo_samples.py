"""Excerpts of real Linux /proc/cpuinfo texts (first CPU; flag lists shortened around what matters)."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffnas.train import precision


def use_cpuinfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str) -> None:
    """Make this test's process see `text` as /proc/cpuinfo (undone after the test)."""
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    monkeypatch.setattr(precision, "CPUINFO", path)
    monkeypatch.setattr(precision, "_detected", None)


# Intel Sapphire Rapids: AVX512-BF16 and AMX-BF16.
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
# A hypothetical CPU (or VM) that exposes AMX-BF16 but not AVX512-BF16: AMX alone is native bf16.
AMX_ONLY = SAPPHIRE_RAPIDS.replace(" avx512_bf16", "")
# AMD Zen 4: AVX512-BF16 without AMX.
ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni
"""
# Intel Cascade Lake: AVX-512 (oneDNN emulates bf16 with it) but no native bf16.
CASCADE_LAKE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
# AWS Graviton3 (Neoverse V1): BF16 (and SVE-BF16).
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm sve svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd40
"""
# AWS Graviton2 (Neoverse N1): no BF16.
GRAVITON2 = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd0c
"""

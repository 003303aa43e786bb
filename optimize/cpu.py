"""Pick int8 operand types for the CPU we run on, following onnxruntime's quantization guide.

The guide (onnxruntime.ai/docs/performance/model-optimizations/quantization.html) says: on x86-64 with
AVX2 / AVX-512 but no VNNI, U8S8 uses VPMADDUBSW, whose 16-bit intermediate can saturate, so use
`reduce_range` (7-bit weights), which was designed for exactly that case; with VNNI (VPDPBUSD) there is no
saturation and reduce_range is not needed; on ARM64 S8S8 maps onto the signed dot-product instructions;
without any of these, U8U8 has no saturation problem.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CpuInfo:
    arch: str
    model_name: str
    features: tuple[str, ...]  # the ones that matter for int8: avx2, avx512f, avx512_vnni, avx_vnni, asimddp, ...

    @property
    def vnni(self) -> bool:
        return "avx512_vnni" in self.features or "avx_vnni" in self.features


@dataclass(frozen=True)
class QuantFormat:
    activation_type: str  # "uint8" | "int8"
    weight_type: str
    reduce_range: bool
    reason: str


_INTERESTING = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "avx512fp16", "asimd", "asimddp",
                "asimdhp", "i8mm")


def detect_cpu(cpuinfo: str | None = None) -> CpuInfo:
    """Read /proc/cpuinfo (or the given text) for the instruction sets that decide int8 formats."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key in ("model name", "cpu model") and not model:
            model = value.strip()
    arch = platform.machine().lower()
    if "asimd" in flags and arch not in ("aarch64", "arm64"):
        arch = "aarch64"
    return CpuInfo(arch, model, tuple(f for f in _INTERESTING if f in flags))


def choose_format(cpu: CpuInfo) -> QuantFormat:
    if cpu.arch in ("aarch64", "arm64"):
        return QuantFormat("int8", "int8", False, "ARM64: S8S8 uses the signed dot-product instructions")
    if cpu.vnni:
        return QuantFormat("uint8", "int8", False, "x86-64 with VNNI: U8S8 via VPDPBUSD, no saturation to avoid")
    if "avx2" in cpu.features or "avx512f" in cpu.features:
        return QuantFormat(
            "uint8", "int8", True,
            "x86-64 AVX2/AVX-512 without VNNI: U8S8 with reduce_range (7-bit weights) to avoid VPMADDUBSW saturation",
        )
    return QuantFormat("uint8", "uint8", False, "no AVX2/VNNI/ARM dot product found: U8U8, which cannot saturate")

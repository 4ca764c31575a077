"""Cost accounting: a search's compute in CPU- and GPU-hours, from its trials' device-seconds."""

from __future__ import annotations

from collections.abc import Iterable


def compute_hours(usage: Iterable[tuple[str | None, float | None]]) -> dict[str, float]:
    """Sum `(device, device_s)` pairs into `{"cpu_hours": ..., "gpu_hours": ...}`.

    A device label starting with "cuda" counts as GPU time, anything else as CPU time;
    pairs without seconds (rejected candidates, runs recorded before accounting) count 0.
    """
    seconds = {"cpu": 0.0, "gpu": 0.0}
    for device, device_s in usage:
        if device_s:
            seconds["gpu" if (device or "").startswith("cuda") else "cpu"] += float(device_s)
    return {f"{kind}_hours": round(s / 3600, 6) for kind, s in seconds.items()}


def compute_line(hours: dict[str, float]) -> str:
    """One line for the status table and the end of a search: "compute: 0.0123 CPU-hours"."""
    parts = [
        f"{hours[key]:.4g} {name}-hours"
        for key, name in (("gpu_hours", "GPU"), ("cpu_hours", "CPU"))
        if hours.get(key)
    ]
    return "compute: " + (", ".join(parts) if parts else "none recorded")

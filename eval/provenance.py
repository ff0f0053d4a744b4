"""Where an evaluation's numbers come from: software, hardware, data and models.

A report fit for a paper says which dataset and split, how many judged queries, which
settings and which exact model files produced each figure, on what machine and when.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

_PACKAGES = (
    "lsr-engine", "numpy", "scipy", "numba", "pyarrow", "torch", "transformers",
    "tokenizers", "ir-measures", "ir-datasets", "faiss-cpu",
)  # fmt: skip


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the results (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict:
    """CPU model, cores, memory and operating system of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    with contextlib.suppress(ValueError, OSError, AttributeError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "os": f"{platform.system()} {platform.release()}",
    }


@functools.lru_cache(maxsize=32)
def folder_hash(folder: str | Path) -> str:
    """sha256 over the names and contents of every file under ``folder`` (name order): two
    model folders with the same hash hold the same model. Computed once per folder and
    process (an evaluation names the same model for every dataset)."""
    digest = hashlib.sha256()
    root = Path(folder)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def encoder_provenance(spec: str, encoder) -> dict:
    """The spec, type and settings of an encoder; BM25's parameters and analysis; for a model
    folder its path and content hash (a Hub id is named as such)."""
    config = dict(getattr(encoder, "config", {}) or {})
    info = {"spec": str(spec), "type": config.pop("type", getattr(encoder, "name", "?"))}
    info["settings"] = config
    location = str(spec).split(":", 1)[-1] if ":" in str(spec) else str(spec)
    if Path(location).is_dir():
        info["model_path"] = str(Path(location).resolve())
        info["model_sha256"] = folder_hash(str(Path(location).resolve()))
    elif info["type"] not in ("bm25", "pretokenized"):
        info["model_path"] = f"hub:{location}"
    return info


def run_provenance(command: list[str] | None = None) -> dict:
    """What every report records about the run as a whole."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(command if command is not None else sys.argv),
        "packages": package_versions(),
        "hardware": hardware(),
    }

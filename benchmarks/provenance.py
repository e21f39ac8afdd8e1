"""Where a benchmark's numbers come from: date, machine (as detected, never written in by hand), command
and commit, and writing its results as Markdown and JSON under benchmarks/results/.

Every benchmark's output starts with `header()`, so a number in the README can be traced to the run,
the machine and the code that produced it.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def gpus() -> list[str]:
    if shutil.which("nvidia-smi"):
        found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            return found.stdout.strip().splitlines()
    return []


def machine() -> str:
    """One line: CPU model, cores, whether it has bf16 instructions, GPUs (or none)."""
    bf16 = sorted(set(BF16_FLAGS) & cpu_flags())
    gpu = "; ".join(gpus()) or "no GPU"
    return f"{cpu_model()}, {os.cpu_count()} cores, {'bf16: ' + '/'.join(bf16) if bf16 else 'no bf16 instructions'}, {gpu}"


def git_commit() -> str:
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()

        # Results written by an earlier benchmark of the same sitting are outputs, not changed code.
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


SECRET_FLAGS = ("--api-key", "--token", "--password")


def command(module: str | None = None, argv: Sequence[str] | None = None) -> str:
    """The command line as a user would type it (`python -m benchmarks.x --flag ...`): `module` and
    `argv` when a benchmark's main() was called with arguments (from a test), else this process's own.
    Secrets given as flags are never written into a committed result."""
    if module is not None:
        words = [f"python -m {module}", *(sys.argv[1:] if argv is None else argv)]
    else:
        words = list(sys.argv)
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            words[0] = f"python -m {spec.name.removesuffix('.__main__')}"
    shown: list[str] = []
    for word in words:
        flag, eq, _ = word.partition("=")
        if eq and flag in SECRET_FLAGS:
            word = f"{flag}=***"
        elif shown and shown[-1] in SECRET_FLAGS:
            word = "***"
        shown.append(word)
    return " ".join(shown)


def header(**extra: Any) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": command(),
        "commit": git_commit(),
        **extra,
    }


def header_line(head: dict[str, Any]) -> str:
    return f"{head['date']} · {head['machine']} · commit {head['commit']} · `{head['command']}`"


def write_results(name: str, report: dict[str, Any], markdown: str, out: Path = RESULTS) -> tuple[Path, Path]:
    """Write <out>/<name>.md and <out>/<name>.json; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(markdown)
    js.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return md, js

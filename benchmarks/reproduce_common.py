"""Shared plumbing of the ``reproduce_*.py`` scripts: arguments, the machine line, the JSON result file."""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse(description: str, extra: Sequence[Tuple[str, type, Any]] = ()) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    for flag, kind, default in extra:
        parser.add_argument(flag, type=kind, default=default)
    parser.add_argument("--quick", action="store_true", help="the reduced size the book page runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def machine() -> str:
    """The machine as the book states it: cores and GPU, nothing else."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores, {device}"


def software(threads: int) -> str:
    return f"torch {torch.__version__}, {threads} thread(s), Python {platform.python_version()}"


def save(name: str, payload: Dict[str, Any], args: argparse.Namespace) -> Path:
    size = "reduced" if args.quick else payload.pop("size", "full")
    payload = {"name": name, "size": size,
               "measured": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "software": software(args.threads), **payload}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"reproduce_{name}{'_quick' if args.quick else ''}.json"
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return path


def load(name: str) -> Any:
    """The full-size result of ``reproduce_<name>.py`` if it has been run (``make reproduce``), else ``None``."""
    path = RESULTS / f"reproduce_{name}.json"
    return json.loads(path.read_text()) if path.exists() else None

"""The machine as a results file states it, and the load check that stays on the console.

Every benchmark writes the same one-line description of the machine into its results file: cores,
whether a GPU is there, torch's version and thread count. The load average is a fact about one run,
not about the project: :func:`report_load` prints it (before and after) so that whoever runs a
benchmark can judge a noisy run, and it is never written to a results file.
"""
from __future__ import annotations

import os

import torch


def machine_line(threads: int | None = None) -> str:
    """``"2 CPU cores, no GPU; torch 2.13.0+cpu, 1 thread"``: the machine in the words the book uses."""
    threads = torch.get_num_threads() if threads is None else threads
    gpu = "no GPU" if not torch.cuda.is_available() else f"{torch.cuda.device_count()} GPU(s)"
    return f"{os.cpu_count()} CPU cores, {gpu}; torch {torch.__version__}, {threads} thread{'s' if threads != 1 else ''}"


def report_load(when: str) -> float:
    """Print the 1-minute load average (console only) and return it; NaN where the OS has none."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"(load average {when}: {load:.1f}; not written to the results)", flush=True)
    return load

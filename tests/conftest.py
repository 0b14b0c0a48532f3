"""Shared pytest set-up.

Tests use tiny tensors, for which torch's intra-op thread pool only adds
synchronisation cost; on a busy 2-core machine the spinning worker threads made
a 130-step MLP training take ~8 s of CPU instead of ~0.1 s. One thread keeps
the suite fast and its timings stable.
"""
import torch

torch.set_num_threads(1)

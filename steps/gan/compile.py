"""torch.compile for the trainers (train.compile): the mode, Inductor's on-disk cache, the report."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def compile_mode(setting) -> str | None:
    """train.compile as torch.compile's mode: None (off), default, reduce-overhead, max-autotune."""
    if setting is False or setting in (None, "off"):
        return None
    return "default" if setting is True else str(setting)


def compile_models(models, mode: str, cache_dir, device: torch.device) -> str:
    """torch.compile each model in place for static shapes, with Inductor's on-disk caches
    (FX graphs, AOTAutograd, autotuning) in `cache_dir`, so a rerun compiles from the cache.
    Returns a line for the log that says what was done."""
    cache = Path(cache_dir).resolve()
    warm = cache.is_dir() and any(cache.iterdir())
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # Inductor reads it at each cache access
    for m in models:
        m.compile(mode=mode, dynamic=False)  # sizes are fixed per phase
    graphs = ("with CUDA graphs" if device.type == "cuda" else "CUDA graphs skipped on CPU") if mode == "reduce-overhead" else ""
    return (f"torch.compile mode {mode}{f' ({graphs})' if graphs else ''}; on-disk cache {cache} "
            f"({'warm: compiled graphs from an earlier run are reused' if warm else 'cold: the first steps compile'})")


def compile_report(seconds: float) -> str:
    """After the first compiled step: how long it took and what came from the cache."""
    from torch._dynamo.utils import counters

    ind, aot = counters["inductor"], counters["aot_autograd"]
    return (f"first compiled step took {seconds:.1f} s; Inductor FX graph cache {ind['fxgraph_cache_hit']} hits, "
            f"{ind['fxgraph_cache_miss']} misses; AOTAutograd cache {aot['autograd_cache_hit']} hits, "
            f"{aot['autograd_cache_miss']} misses")


def mark_step(mode: str | None) -> None:
    """CUDA graph trees need to know where a step begins, so the outputs of the last one may be
    overwritten."""
    if mode == "reduce-overhead":
        torch.compiler.cudagraph_mark_step_begin()

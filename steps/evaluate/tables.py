"""The evaluation tables as Markdown (no tabulate dependency): one cell format for every table."""
from __future__ import annotations

import numpy as np
import pandas as pd


def fmt(v, col: str) -> str:
    """A table cell: counts as integers, pixels and dB with 2 decimals, other floats with 3."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    if col in ("frames", "found_frames", "minute") or col.startswith(("missed_", "n_")):
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.2f}" if col.startswith(("psnr", "face_psnr", "pose_", "temporal_change", "temporal_real")) else f"{v:.3f}"
    return str(v)


def markdown_rows(df: pd.DataFrame, cols: list[str]) -> list[str]:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + ["| " + " | ".join(fmt(r[c], c) for c in cols) + " |" for _, r in df.iterrows()]

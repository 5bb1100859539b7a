"""smooth_pose: temporal smoothing of keypoints and filling of short gaps.

Points below `min_confidence` count as missing. Interior gaps of at most `max_gap` frames are
filled by linear interpolation and marked `filled=True` (nothing invented is hidden); their
confidence is the smaller of the two confidences around the gap. Then each coordinate series is
smoothed over time, only where it is observed or filled:
- median: a centred running median of `window` frames (robust to single-frame jumps),
- gaussian: a normalised Gaussian kernel (sigma in frames) that ignores missing neighbours,
- one_euro: the One-Euro filter (Casiez et al. 2012), causal and speed-adaptive, reset at gaps.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from steps import logs
from steps.prepare.posetable import PoseArrays, PoseFile, PoseMeta, PoseWriter, concat_frames, slice_frames
from steps.settings import section


def fill_gaps(series: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of interior NaN runs of length <= max_gap along axis 0.

    series: (T, K) float; returns (filled series, bool mask of filled entries).
    """
    out = series.copy()
    mask = np.zeros(series.shape, bool)
    if max_gap <= 0:
        return out, mask
    t = np.arange(len(series))
    for k in range(series.shape[1]):
        col = series[:, k]
        seen = np.isfinite(col)
        if seen.sum() < 2:
            continue
        idx = np.flatnonzero(seen)
        # gaps between consecutive observed frames
        lengths = np.diff(idx) - 1
        for i in np.flatnonzero((lengths > 0) & (lengths <= max_gap)):
            a, b = idx[i], idx[i + 1]
            span = t[a + 1:b]
            out[a + 1:b, k] = col[a] + (col[b] - col[a]) * (span - a) / (b - a)
            mask[a + 1:b, k] = True
    return out, mask


BLOCK = 1024  # frames per block of a running filter: its window copies stay this size on a long video


def _running(padded: np.ndarray, n: int, width: int, reduce) -> np.ndarray:
    """reduce(windows) over each of the n centred windows of `width` rows of `padded` (n + width - 1
    rows), block by block: (block, K, width) at a time, never the whole video's windows."""
    out = None
    for lo in range(0, n, BLOCK):
        hi = min(n, lo + BLOCK)
        part = reduce(np.lib.stride_tricks.sliding_window_view(padded[lo:hi + width - 1], width, axis=0))
        out = np.empty((n, *part.shape[1:]), part.dtype) if out is None else out
        out[lo:hi] = part
    return out


def median_smooth(series: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over `window` frames that ignores NaN; NaN stays NaN."""
    if window <= 1 or len(series) == 0:
        return series.copy()
    r = window // 2
    padded = np.pad(series, ((r, r), (0, 0)), constant_values=np.nan)
    with np.errstate(all="ignore"), _quiet():
        med = _running(padded, len(series), window, lambda w: np.nanmedian(w, axis=-1))
    return np.where(np.isfinite(series), med, np.nan)


def gaussian_smooth(series: np.ndarray, sigma: float) -> np.ndarray:
    """Normalised Gaussian smoothing in time that ignores NaN; NaN stays NaN."""
    if sigma <= 0 or len(series) == 0:
        return series.copy()
    r = max(1, int(round(3 * sigma)))
    kernel = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    seen = np.isfinite(series)
    vals = np.where(seen, series, 0.0)
    num = _running(np.pad(vals, ((r, r), (0, 0))), len(series), 2 * r + 1, lambda w: w @ kernel)
    den = _running(np.pad(seen.astype(float), ((r, r), (0, 0))), len(series), 2 * r + 1, lambda w: w @ kernel)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen, num / den, np.nan)


def one_euro(series: np.ndarray, fps: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0,
             state: dict | None = None) -> np.ndarray:
    """One-Euro filter along axis 0 of (T, K), restarting after every missing frame. `state`
    (a dict, filled in here) carries the filter from one block of a video to the next."""
    def alpha(cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * fps)

    out = np.full_like(series, np.nan)
    state = {} if state is None else state
    prev = state.get("prev", np.full(series.shape[1], np.nan))
    dprev = state.get("dprev", np.zeros(series.shape[1]))
    a_d = alpha(d_cutoff)
    for t in range(len(series)):
        x = series[t]
        fresh = ~np.isfinite(prev)
        dx = np.where(fresh, 0.0, (x - prev) * fps)
        dhat = a_d * dx + (1 - a_d) * dprev
        a = alpha(min_cutoff + beta * np.abs(dhat))
        xhat = np.where(fresh, x, a * x + (1 - a) * prev)
        out[t] = xhat
        prev = np.where(np.isfinite(x), xhat, np.nan)
        dprev = np.where(np.isfinite(x), dhat, 0.0)
    state.update(prev=prev, dprev=dprev)
    return out


class _quiet:
    """Silence numpy's 'All-NaN slice' RuntimeWarning inside a block."""

    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def smooth_pose(pose: PoseArrays, method: str = "median", window: int = 5, sigma: float = 1.0,
                max_gap: int = 5, min_confidence: float = 0.3, one_euro_min_cutoff: float = 1.0,
                one_euro_beta: float = 0.05) -> PoseArrays:
    """The smoothed poses of a video held in memory (smooth_blocks over its frames, joined)."""
    meta = smoothed_meta(pose.meta, method, window, sigma, max_gap, min_confidence)
    blocks = smooth_blocks(lambda a, b: slice_frames(pose, a, b), pose.n_frames, meta, method, window, sigma,
                           max_gap, min_confidence, one_euro_min_cutoff, one_euro_beta)
    return concat_frames(list(blocks), meta) if pose.n_frames else smooth_whole(pose, meta)


def smoothed_meta(meta: PoseMeta, method: str, window: int, sigma: float, max_gap: int,
                  min_confidence: float) -> PoseMeta:
    out = PoseMeta(**{**meta.__dict__, "extra": dict(meta.extra)})
    out.extra["smoothing"] = {"method": method, "window": window, "sigma": sigma,
                              "max_gap": max_gap, "min_confidence": min_confidence}
    return out


def smooth_whole(pose: PoseArrays, meta: PoseMeta) -> PoseArrays:  # no frames: nothing to smooth
    return PoseArrays({k: v.copy() for k, v in pose.parts.items()}, pose.time_s.copy(), meta,
                      {k: np.zeros(v.shape[:2], bool) for k, v in pose.parts.items()})


def smooth_blocks(read, n_frames: int, meta: PoseMeta, method: str = "median", window: int = 5,
                  sigma: float = 1.0, max_gap: int = 5, min_confidence: float = 0.3,
                  one_euro_min_cutoff: float = 1.0, one_euro_beta: float = 0.05):
    """The smoothed poses, BLOCK frames at a time, from `read(a, b)` (the arrays of frames [a, b)).
    Filling and the running filters only look max_gap + their radius frames away, so each block
    is read with that margin and comes out as the whole video's would; One-Euro carries its state
    from block to block. A long video costs a block's arrays, not the video's."""
    if method not in ("median", "gaussian", "one_euro", "none"):
        raise ValueError(f"unknown smoothing method {method!r}")
    margin = max_gap + 2 + max(window // 2, int(round(3 * sigma)))
    states: dict = {}
    for lo in range(0, n_frames, BLOCK):
        hi = min(n_frames, lo + BLOCK)
        a, b = max(0, lo - margin), min(n_frames, hi + margin)
        pose = read(a, b)
        out = PoseArrays({}, pose.time_s[lo - a:hi - a].copy(), meta, {})
        for part, arr in pose.parts.items():
            out.parts[part], out.filled[part] = _smooth_part(
                arr, slice(lo - a, hi - a), method, window, sigma, max_gap, min_confidence, meta.fps,
                one_euro_min_cutoff, one_euro_beta, states.setdefault(part, {}))
        yield out


def _smooth_part(arr: np.ndarray, keep: slice, method: str, window: int, sigma: float, max_gap: int,
                 min_confidence: float, fps: float, one_euro_min_cutoff: float, one_euro_beta: float,
                 state: dict) -> tuple[np.ndarray, np.ndarray]:
    """One part's (frames, joints, 3) keypoints smoothed and gap-filled, the frames `keep` of them:
    (the keypoints, filled). `state`: One-Euro's from the block before."""
    n, j, _ = arr.shape
    conf = arr[..., 2]
    seen = conf >= min_confidence
    xy = np.where(seen[..., None], arr[..., :2], np.nan).reshape(n, j * 2)
    xy, filled = fill_gaps(xy, max_gap)
    filled = filled.reshape(n, j, 2).any(axis=-1)
    c = np.where(seen, conf, np.nan)
    # a filled point is only as sure as the weaker of its two neighbours
    c_low = np.fmin(_ffill(c), _ffill(c[::-1])[::-1])
    c = np.where(seen, conf, np.where(filled, c_low, 0.0))
    if method == "median":
        xy = median_smooth(xy, window)[keep]
    elif method == "gaussian":
        xy = gaussian_smooth(xy, sigma)[keep]
    elif method == "one_euro":
        xy = one_euro(xy[keep], fps, one_euro_min_cutoff, one_euro_beta, state=state)
    else:
        xy = xy[keep]
    xy, c, filled = xy.reshape(-1, j, 2), c[keep], filled[keep]
    missing = ~np.isfinite(xy).all(axis=-1)
    return np.concatenate([xy, np.where(missing, 0.0, c)[..., None]], axis=-1).astype(np.float32), filled & ~missing


def _ffill(a: np.ndarray) -> np.ndarray:
    """Forward-fill NaN along axis 0."""
    idx = np.where(np.isfinite(a), np.arange(len(a), dtype=np.int32)[:, None], 0)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = np.take_along_axis(a, idx, axis=0)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Smooth a pose table in time and fill short gaps.")
    ap.add_argument("--pose", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--settings", default="{}", help="the config's smooth section as JSON (schema defaults fill the rest)")
    a = ap.parse_args(argv)
    logs.setup()
    c = section("smooth", json.loads(a.settings))
    pose = PoseFile(a.pose)
    args = (c["method"], c["window"], c["sigma"], c["max_gap"], c["min_confidence"])
    meta, n_filled = smoothed_meta(pose.meta, *args), 0
    with PoseWriter(a.out, meta) as w:
        for block in smooth_blocks(pose.read, pose.n_frames, meta, *args, c["one_euro_min_cutoff"],
                                   c["one_euro_beta"]):
            w.write(block)
            n_filled += sum(int(f.sum()) for f in block.filled.values())
    print(f"{a.out}: {pose.n_frames} frames smoothed ({c['method']}), {n_filled} points filled", file=sys.stderr)


if __name__ == "__main__":
    main()

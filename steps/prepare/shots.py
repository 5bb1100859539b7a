"""Shots of a source: where a montage cuts from one framing, or one person, to another.

A source joined from several clips (cuts, zooms, a new person) needs one far/close mapping per
shot: one mapping fitted to all of them maps none well. The cuts are found in the smoothed pose
table and confirmed by the picture (below). Per frame: the body's scale (the torso, neck to mid-hip: it needs neither the
feet nor the head, which a zoom loses first, and it changes little as a dancer moves), its centre
(mid-hip) and its foot (toe: the larger ankle y). Frames without the mid-hip count as without a
body; where the torso is not seen on either side, moves are measured in the source's median torso. At each frame the medians of the `window`
frames seen before it are compared with those of the `window` frames seen from it on; it starts
a new shot where
- the scale changes by more than `scale_jump` (0.3: 30% larger, or 1/1.3 as large), or
- the centre or the foot moves by more than `move_jump` torso lengths (of the larger torso).
A dancer does neither within a few frames (a torso length in a tenth of a second is ~5 m/s);
a cut to another framing does. Medians of windows rather than consecutive frames: smoothing
(a Gaussian, a filled gap) blurs a cut over a few frames, and a glitch of a frame or two should
not cut. Frames without a body are skipped, so a person lost for a run of frames and found
elsewhere starts a shot at the first frame found again. Candidates closer than `window` seen
frames are one cut, placed at the sharpest step between two consecutive seen frames among them;
a shot shorter than `window` frames is not split off. A cut between
two shots of the same framing is not found, and need not be: one mapping fits both.

The picture confirms each cut (confirm_cuts, where the source's frames are at hand): a dancer
who bends, crouches or turns can move the torso's length and the hip as much as a cut does, but
the picture then hardly changes, while between two clips its colours do. A cut is kept where the
hue-saturation histograms of two consecutive frames within `window` frames of it differ by at
least `min_change` (half their L1 distance: 0 the same colours, 1 none in common).

Shots are half-open frame ranges (start, end) that cover the video.
"""
from __future__ import annotations

import warnings

import numpy as np

from steps.prepare.posetable import B


def body_track(body: np.ndarray, min_conf: float = 0.3) -> dict[str, np.ndarray]:
    """BODY_25 keypoints (T, 25, 3) -> per frame: torso length, hip x and y, toe y (NaN unseen)."""
    def pt(j):
        ok = np.nan_to_num(body[:, B[j], 2]) >= min_conf
        return np.where(ok[:, None], body[:, B[j], :2].astype(np.float64), np.nan)

    neck, hip = pt("Neck"), pt("MidHip")
    return {"torso": np.hypot(*(neck - hip).T), "hip_x": hip[:, 0], "hip_y": hip[:, 1],
            "toe": np.maximum(pt("LAnkle")[:, 1], pt("RAnkle")[:, 1])}  # NaN unless both ankles


def _window_medians(v: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For each split i in window..len-window: the medians of v[i-window:i] and v[i:i+window]."""
    w = np.lib.stride_tricks.sliding_window_view(v, window)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window without a toe: NaN, no cut by the foot
        med = np.nanmedian(w, axis=1)
    return med[:len(med) - window], med[window:]


def jump_scores(track: dict, window: int = 3, scale_jump: float = 0.3,
                move_jump: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(frames, score): the frames that could start a shot (the hip seen, `window` frames with
    it on each side) and how far past the thresholds the change there is (> 1: a cut)."""
    idx = np.flatnonzero(np.isfinite(track["hip_x"]) & np.isfinite(track["hip_y"]))
    if len(idx) < 2 * window:
        return idx[:0], np.zeros(0)
    torso = np.where(track["torso"] > 0, track["torso"], np.nan)
    before, after = zip(*(_window_medians(v[idx], window) for v in (torso, track["hip_x"], track["hip_y"], track["toe"])))
    # the unit of a move: the larger torso; where neither window shows one (the neck out of a
    # zoomed frame), the source's median torso
    unit = np.fmax(before[0], after[0])
    unit = np.where(np.isfinite(unit), unit, np.nanmedian(torso) if np.isfinite(torso).any() else np.nan)
    scale = np.nan_to_num(np.abs(np.log(after[0] / before[0])) / np.log1p(scale_jump))
    centre = np.nan_to_num(np.hypot(after[1] - before[1], after[2] - before[2]) / unit)
    foot = np.nan_to_num(np.abs(after[3] - before[3]) / unit)
    return idx[window:len(idx) - window + 1], np.maximum(scale, np.maximum(centre, foot) / move_jump)


def detect_shots(body: np.ndarray, min_conf: float = 0.3, window: int = 3, scale_jump: float = 0.3,
                 move_jump: float = 1.0) -> list[tuple[int, int]]:
    """The shots of a video from its BODY_25 keypoints (T, 25, 3): [(start, end), ...]."""
    track = body_track(body, min_conf)
    frames, score = jump_scores(track, window, scale_jump, move_jump)
    # Window medians place a clean cut within a frame or two; the sharpest step between two
    # consecutive seen frames among the candidates places it exactly.
    sharp = dict(zip(*jump_scores(track, 1, scale_jump, move_jump)))
    starts, group = [], []
    for k in np.flatnonzero(score > 1):  # candidates less than `window` apart: one cut
        if group and k - group[-1] >= window:
            starts.append(int(max(frames[group], key=lambda f: sharp.get(f, 0.0))))
            group = []
        group.append(k)
    if group:
        starts.append(int(max(frames[group], key=lambda f: sharp.get(f, 0.0))))
    edges = [0, *starts, len(body)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def picture_change(frames, t: int) -> float:
    """How much the picture changes from frame t - 1 to frame t: half the L1 distance between
    their hue-saturation histograms (16 x 8 bins), 0 to 1."""
    import cv2

    def hist(i):
        hsv = cv2.cvtColor(np.ascontiguousarray(frames[i]), cv2.COLOR_RGB2HSV)
        h = cv2.calcHist([hsv], [0, 1], None, [16, 8], [0, 180, 0, 256]).ravel()
        return h / max(h.sum(), 1.0)

    return float(0.5 * np.abs(hist(t) - hist(t - 1)).sum()) if t > 0 else 0.0


def confirm_cuts(shots: list[tuple[int, int]], frames, window: int = 3,
                 min_change: float = 0.1) -> tuple[list[tuple[int, int]], list[dict]]:
    """The shots whose cut the picture confirms (see the module's docstring), the others joined to
    the shot before; and each cut dropped, with the largest change the picture showed near it."""
    n, kept, dropped = len(frames), [0], []
    for start, _ in shots[1:]:
        change = max(picture_change(frames, t) for t in range(max(1, start - window), min(n, start + window + 1)))
        if change >= min_change:
            kept.append(start)
        else:
            dropped.append({"frame": start, "picture_change": round(change, 4)})
    edges = [*kept, shots[-1][1]] if shots else [0]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])], dropped


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The runs of True in a bool array as half-open ranges [(start, end), ...]."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(d[::2], d[1::2])]


def describe_ranges(ranges: list[tuple[int, int]], fps: float | None = None, most: int = 12) -> str:
    """'10-12 (0.7-0.8 s), 40, ...': half-open ranges as inclusive frame numbers, the first `most`."""
    def one(a, b):
        text = f"{a}" if b - a == 1 else f"{a}-{b - 1}"
        return f"{text} ({a / fps:.1f}-{(b - 1) / fps:.1f} s)" if fps else text

    out = ", ".join(one(a, b) for a, b in ranges[:most])
    return out + (f" and {len(ranges) - most} more ranges" if len(ranges) > most else "")

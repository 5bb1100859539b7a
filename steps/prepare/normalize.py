"""normalize_pose: map the source's poses into the target's frame (paper, section 3.3).

For each source frame with toe y (the larger ankle y):
    p     = (toe - far_s) / (close_s - far_s)           how close to the camera the source is
    scale = scale_far + p (scale_close - scale_far)     scale_far = height_far_t / height_far_s, ...
    toe'  = far_t + p (close_t - far_t)                 where the target's foot would be there
Every point is scaled about the source's foot and the foot is moved to toe':
    y' = toe' + scale (y - toe)
Horizontally (documented choice, the paper is silent): points are scaled about the source's
anchor (its median MidHip x); `anchor` puts that anchor at the target's anchor, `keep` keeps it
where it was (in proportion to the frame width). p is not clipped: outside the far..close range
the line extrapolates, which keeps the mapping exact for a source that is a scaled copy of the
target. Frames without both ankles take scale and toe' from the nearest frames that had them.
Scale and vertical offset can be median-smoothed over time to remove jitter.

Shots (normalize.shots: auto): a source joined from clips (a montage) is cut into shots
(steps/prepare/shots.py) and each shot is mapped with its own far/close statistics (stats.py's
per_frame and compute_stats on its frames, with the stats section's percentiles) onto the
target's. A shot with fewer than `shot_min_fit_frames` frames that show both ankles and the head,
or whose feet hardly move (close - far under `shot_min_span` of its median height, where the
far/close line would blow its foot's jitter up onto the target's whole range), takes one scale,
the target's median height over the shot's, about its median foot, which lands on the target's
median foot: a similarity, the shot's own motion kept. A shot that never shows both feet and the
head (a zoom) is sized and placed the same way by the body it shows: its height estimated from its
torso (neck to mid-hip), or else its hip-to-foot drop, and its foot from its hip where unseen,
with the source's proportions (torso and drop as shares of the height, over the frames that show
them all); with neither, it takes the whole source's statistics. One shot:
the whole video mapped with the source's statistics as given, the paper's global mapping.

Inside the frame (normalize.keep_inside): a frame whose confident points leave the target's frame
is shrunk about its feet (only as far as it must, no further than `inside_min_scale`) and shifted
back in, as little as it takes, so the correction grows smoothly from zero as the pose nears the
edge. Frames that do not fit even so are warned about by number. The shots, their mappings and
the frames moved are written to the output's metadata and to a JSON beside it (--shots).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from steps import logs
from steps.prepare.posetable import InMemoryPose, PoseArrays, PoseFile, PoseMeta, PoseWriter, concat_frames
from steps.prepare.framestore import open_frames
from steps.prepare.shots import body_track, confirm_cuts, describe_ranges, detect_shots, runs
from steps.settings import section
from steps.prepare.smooth import median_smooth
from steps.prepare.stats import SubjectStats, compute_stats, load_stats, per_frame, write_json

log = logging.getLogger("normalize")
STAT_KEYS = ("far", "close", "height_far", "height_close", "median_toe", "median_height", "anchor_x")


@dataclass(frozen=True)
class ShotFit:
    """When a shot of a montage gets a far/close fit of its own (normalize.shot_min_*), and how
    its statistics are found (the stats section's percentiles and band)."""
    min_frames: int = 10
    min_span: float = 0.05
    far_percentile: float = 5
    close_percentile: float = 95
    band: float = 0.02


def interp_missing(v: np.ndarray) -> np.ndarray:
    """Fill NaN entries from the nearest valid neighbours (linear inside, held at the ends)."""
    ok = np.isfinite(v)
    if ok.all() or not ok.any():
        return v
    idx = np.arange(len(v))
    return np.interp(idx, idx[ok], v[ok])


def normalization_params(toe: np.ndarray, src: SubjectStats, tgt: SubjectStats,
                         smooth_window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (scale, target toe y) for source toe positions `toe` (NaN = unknown)."""
    span = src.close - src.far
    p = (toe - src.far) / span if abs(span) > 1e-6 else np.where(np.isfinite(toe), 0.5, np.nan)
    scale_far = tgt.height_far / src.height_far
    scale_close = tgt.height_close / src.height_close
    scale = scale_far + p * (scale_close - scale_far)
    offset = tgt.far + p * (tgt.close - tgt.far) - toe  # toe' - toe
    if not np.isfinite(p).any():  # no frame with both ankles: fall back on the medians
        scale = np.full_like(toe, tgt.median_height / src.median_height)
        return scale, np.full_like(toe, np.nan)
    scale, offset = interp_missing(scale), interp_missing(offset)
    if smooth_window > 1:
        scale = median_smooth(scale[:, None], smooth_window)[:, 0]
        offset = median_smooth(offset[:, None], smooth_window)[:, 0]
    return scale, offset


def paper_params(toe: np.ndarray, src: SubjectStats, tgt: SubjectStats,
                 smooth_window: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame (scale, vertical offset, the foot y scaled about): the far/close mapping."""
    scale, offset = normalization_params(toe, src, tgt, smooth_window)
    # the foot each frame is scaled about; where unseen, the track of the known feet
    foot = interp_missing(toe) if np.isfinite(toe).any() else np.full_like(toe, src.median_toe)
    if not np.isfinite(offset).any():
        offset = tgt.median_toe - foot
    return scale, offset, foot


def similarity_params(toe: np.ndarray, ref_toe: float, ref_height: float,
                      tgt: SubjectStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, offset, foot) of the similarity y' = median_toe_t + s (y - ref_toe), s the target's
    median height over ref_height: how a shot too short or too still for a far/close fit, or one
    without feet, maps."""
    s = tgt.median_height / ref_height
    foot = interp_missing(toe) if np.isfinite(toe).any() else np.full_like(toe, ref_toe)
    return np.full_like(toe, s), tgt.median_toe + s * (foot - ref_toe) - foot, foot


def proportions(table: pd.DataFrame) -> tuple[float, float] | None:
    """The source's torso and hip-to-foot drop as shares of its height (medians over the frames
    that show them all): what a shot without feet or head is sized and placed by. None if none."""
    h = table["height"].to_numpy(np.float64)
    torso, drop = table["torso"].to_numpy(np.float64) / h, (table["toe"] - table["hip_y"]).to_numpy(np.float64) / h
    ok = np.isfinite(torso) & np.isfinite(drop) & (h > 0) & (torso > 0) & (drop > 0)
    return (float(np.median(torso[ok])), float(np.median(drop[ok]))) if ok.any() else None


def body_reference(table: pd.DataFrame, body: tuple[float, float]) -> tuple[float, float] | None:
    """(foot y, height) of a shot that never shows both feet and the head, from its torso, or
    its hip-to-foot drop, and the source's proportions `body`; None without either."""
    torso, hip_y, toe = (table[k].to_numpy(np.float64) for k in ("torso", "hip_y", "toe"))
    est = np.where(np.isfinite(torso), torso / body[0], (toe - hip_y) / body[1])
    est = est[np.isfinite(est) & (est > 0)]
    if not len(est) or not np.isfinite(hip_y).any():
        return None
    h = float(np.median(est))
    foot = float(np.nanmedian(toe)) if np.isfinite(toe).any() else float(np.nanmedian(hip_y)) + body[1] * h
    return foot, h


def shot_mapping(table: pd.DataFrame, src: SubjectStats, tgt: SubjectStats, fit: ShotFit,
                 smooth_window: int = 1, body: tuple[float, float] | None = None):
    """One shot (its rows of per_frame's table, with torso and hip_y): (scale, offset, foot,
    anchor x, what was fitted). `body`: the source's proportions, for a shot without feet."""
    toe, height = table["toe"].to_numpy(np.float64), table["height"].to_numpy(np.float64)
    ok = np.isfinite(toe) & np.isfinite(height) & (height > 0)
    hip = table["hip_x"].to_numpy(np.float64)
    anchor = float(np.nanmedian(hip)) if np.isfinite(hip).any() else src.anchor_x
    info = {"start": int(table["frame"].iloc[0]), "end": int(table["frame"].iloc[-1]) + 1,
            "frames_with_feet": int(ok.sum()), "anchor_x": anchor}
    if ok.sum() >= max(fit.min_frames, 2):
        st = compute_stats(table, src.subject, src.width, src.height, fit.far_percentile,
                           fit.close_percentile, fit.band)
        if st.close - st.far >= fit.min_span * st.median_height:
            info.update(mapping="far_close", **{k: getattr(st, k) for k in STAT_KEYS})
            return *paper_params(toe, st, tgt, smooth_window), st.anchor_x, info
    ref = body_reference(table, body) if body else None
    if ok.any():
        toe_m, h = float(np.median(toe[ok])), float(np.median(height[ok]))
        # the few frames with feet and head of a shot that turns over (a cartwheel) measure a height
        # its torso belies; the torso, whatever way up, sizes it then
        if ref is None or 0.5 <= h / ref[1] <= 2:
            info.update(mapping="median", median_toe=toe_m, median_height=h)
            return *similarity_params(toe, toe_m, h, tgt), anchor, info
        info["height_from_feet"] = h
    if ref:  # a zoom that lost the feet or the head (or a cartwheel): sized and placed by the body it shows
        info.update(mapping="body", median_toe=ref[0], median_height=ref[1])
        return *similarity_params(toe, *ref, tgt), anchor, info
    info.update(mapping="source")  # nothing to size it by: the whole source's statistics
    return *paper_params(toe, src, tgt, smooth_window), anchor, info


@dataclass
class Mapping:
    """Per source frame: scale about the foot (x: about the anchor), the foot's y before and after,
    the anchor's x before and after."""
    scale: np.ndarray
    foot: np.ndarray
    new_foot: np.ndarray
    ax_s: np.ndarray
    ax_t: np.ndarray

    def apply(self, block: PoseArrays, lo: int = 0) -> PoseArrays:
        """The frames of `block` (frames lo, lo + 1, ... of the source) mapped, as new arrays."""
        sl = slice(lo, lo + block.n_frames)
        out, s = block.copy(), self.scale[sl, None]
        for arr in out.parts.values():
            arr[..., 0] = self.ax_t[sl, None] + s * (arr[..., 0] - self.ax_s[sl, None])
            arr[..., 1] = self.new_foot[sl, None] + s * (arr[..., 1] - self.foot[sl, None])
        return out


def fit_mapping(source: PoseArrays, src: SubjectStats, tgt: SubjectStats, smooth_window: int = 1,
                horizontal: str = "anchor", min_conf: float = 0.3,
                shots: list[tuple[int, int]] | None = None, fit: ShotFit = ShotFit()) -> tuple[Mapping, list]:
    """The mapping of every frame from the source's bodies (`source` needs only its body part),
    and what was fitted per shot. `shots`: frame ranges covering the video, each mapped on its own
    statistics; None or a single one: the whole video with `src` (global)."""
    if horizontal not in ("anchor", "keep"):
        raise ValueError(f"horizontal must be 'anchor' or 'keep', not {horizontal!r}")
    frame = per_frame(source, min_conf)
    n = source.n_frames
    shots, body = (shots if shots and len(shots) > 1 else [(0, n)]), None
    if len(shots) > 1:
        track = body_track(source.parts["body"], min_conf)
        frame["torso"], frame["hip_y"] = track["torso"], track["hip_y"]
        body = proportions(frame)
    scale, offset, foot, ax_s = (np.empty(n) for _ in range(4))
    infos = []
    for a, b in shots:
        if len(shots) == 1:
            sc, of, ft = paper_params(frame["toe"].to_numpy(np.float64), src, tgt, smooth_window)
            ax, info = src.anchor_x, {"start": a, "end": b, "mapping": "global"}
        else:
            sc, of, ft, ax, info = shot_mapping(frame.iloc[a:b], src, tgt, fit, smooth_window, body)
        scale[a:b], offset[a:b], foot[a:b], ax_s[a:b] = sc, of, ft, ax
        infos.append({**info, "scale_range": [float(np.min(sc)), float(np.max(sc))] if b > a else []})
    ax_t = np.full(n, tgt.anchor_x) if horizontal == "anchor" else ax_s / src.width * tgt.width
    return Mapping(scale, foot, foot + offset, ax_s, ax_t), infos


def normalized_meta(meta: PoseMeta, src: SubjectStats, tgt: SubjectStats, m: Mapping, infos: list,
                    horizontal: str, smooth_window: int) -> PoseMeta:
    out = PoseMeta(**{**meta.__dict__, "extra": dict(meta.extra)})
    out.subject, out.width, out.height = f"{src.subject}__{tgt.subject}", tgt.width, tgt.height
    out.extra.update(source=src.subject, target=tgt.subject, horizontal=horizontal, smooth_window=smooth_window,
                     shots=infos, scale_range=[float(np.min(m.scale)), float(np.max(m.scale))] if len(m.scale) else [])
    return out


def normalize(source: PoseArrays, src: SubjectStats, tgt: SubjectStats, smooth_window: int = 1,
              horizontal: str = "anchor", min_conf: float = 0.3,
              shots: list[tuple[int, int]] | None = None, fit: ShotFit = ShotFit()) -> PoseArrays:
    """The source's poses in the target's frame (fit_mapping, applied to every part)."""
    m, infos = fit_mapping(source, src, tgt, smooth_window, horizontal, min_conf, shots, fit)
    out = m.apply(source)
    out.meta = normalized_meta(source.meta, src, tgt, m, infos, horizontal, smooth_window)
    return out


MARGIN = 0.01  # px inside the frame's edge: float32 rounding must not leave a point a hair outside


def _into(lo: np.ndarray, hi: np.ndarray, size: float) -> np.ndarray:
    """The shift that brings [lo, hi] inside [MARGIN, size - MARGIN] (centred when it is wider)."""
    a, b = MARGIN, size - MARGIN
    shift = np.where(lo < a, a - lo, np.where(hi > b, b - hi, 0.0))
    return np.where(hi - lo > b - a, (a + b - lo - hi) / 2, shift)


def keep_inside(pose: PoseArrays, min_conf: float = 0.3,
                min_scale: float = 0.5) -> tuple[PoseArrays, np.ndarray, np.ndarray]:
    """Each frame whose confident points leave the frame shrunk about its feet (the bottom of its
    box, to no less than min_scale) and shifted in, as little as it takes. Returns the pose,
    the frames moved and the frames still outside (larger than the frame even at min_scale)."""
    pts = np.concatenate([a for a in pose.parts.values()], axis=1).astype(np.float64)
    seen = (np.nan_to_num(pts[..., 2]) >= min_conf) & np.isfinite(pts[..., :2]).all(-1)
    has = seen.any(1)
    big = np.where(seen[..., None], pts[..., :2], np.inf)
    lo = np.where(has[:, None], big.min(1), 0.0)
    hi = np.where(has[:, None], np.where(seen[..., None], pts[..., :2], -np.inf).max(1), 0.0)
    size = np.array([pose.meta.width - 1, pose.meta.height - 1], np.float64)
    with np.errstate(divide="ignore"):
        need = np.minimum(1.0, ((size - 2 * MARGIN) / (hi - lo)).min(1))
    k = np.maximum(need, min_scale)
    pivot = np.stack([(lo[:, 0] + hi[:, 0]) / 2, hi[:, 1]], 1)          # the feet: they stay on the floor
    lo2, hi2 = pivot + k[:, None] * (lo - pivot), pivot + k[:, None] * (hi - pivot)
    shift = np.stack([_into(lo2[:, d], hi2[:, d], size[d]) for d in (0, 1)], 1)
    moved = has & ((k < 1) | (shift != 0).any(1))
    out = pose.copy()
    for arr in out.parts.values():
        new = pivot[:, None] + k[:, None, None] * (arr[..., :2] - pivot[:, None]) + shift[:, None]
        arr[moved, :, :2] = new[moved]
    return out, moved, has & (need < min_scale)


def normalize_source(pose, src: SubjectStats, tgt: SubjectStats, c: dict, stats_c: dict,
                     sink=None, frames=None) -> tuple[PoseArrays | None, dict]:
    """What normalize_pose does with the config's normalize and stats sections: the shots found
    (with the source's `frames`, each cut confirmed by the picture), each normalized, kept inside
    the frame; and a report of it (the --shots JSON). `pose`: arrays, or a PoseFile read block by
    block (the mapping is fitted on its bodies alone) into `sink` (a PoseWriter, whose meta is set
    here); with no sink, the normalized arrays are returned."""
    reader = pose if isinstance(pose, PoseFile) else InMemoryPose(pose)
    min_conf, body = stats_c["min_confidence"], reader.read(parts=["body"])
    fit = ShotFit(c["shot_min_fit_frames"], c["shot_min_span"], stats_c["far_percentile"],
                  stats_c["close_percentile"], stats_c["band"])
    shots = None
    if c["shots"] == "auto":
        shots = detect_shots(body.parts["body"], min_conf, c["shot_window"], c["shot_scale_jump"],
                             c["shot_move_jump"])
    dropped = []
    if shots and len(shots) > 1 and frames is not None and c["shot_picture_change"] > 0:
        shots, dropped = confirm_cuts(shots, frames, c["shot_window"], c["shot_picture_change"])
    m, infos = fit_mapping(body, src, tgt, c["smooth_window"], c["horizontal"], min_conf, shots, fit)
    meta = normalized_meta(reader.meta, src, tgt, m, infos, c["horizontal"], c["smooth_window"])
    report = {"source": src.subject, "target": tgt.subject, "frames": reader.n_frames, "shots": infos,
              "cuts_not_in_the_picture": dropped}
    if dropped:
        log.info("%s: %d changes of the pose with no change of the picture are not cuts (a dancer bending or "
                 "turning): frames %s", src.subject, len(dropped), ", ".join(str(d["frame"]) for d in dropped[:20]))
    if len(infos) > 1:
        log.info("%s: %d shots, each normalized on its own statistics: %s", src.subject, len(infos),
                 ", ".join(f"{s['start']}-{s['end'] - 1} {s['mapping']}" for s in infos))
    blocks, masks = [], []
    if sink is not None:
        sink.meta = meta
    for lo, block in reader.blocks():
        out = m.apply(block, lo)
        out.meta = meta
        if c["keep_inside"]:
            out, moved, outside = keep_inside(out, min_conf, c["inside_min_scale"])
            masks.append((moved, outside))
        sink.write(out) if sink is not None else blocks.append(out)
    if c["keep_inside"]:
        inside_report(report, meta, masks, reader.n_frames, src, tgt, c["inside_min_scale"])
    return (concat_frames(blocks, meta) if blocks else None), report


def inside_report(report: dict, meta: PoseMeta, masks: list, n: int, src: SubjectStats, tgt: SubjectStats,
                  min_scale: float) -> None:
    """keep_inside's frames moved and still outside, in the report and the metadata; a warning
    naming the frames that could not be kept inside."""
    moved, outside = (np.concatenate([mk[i] for mk in masks]) if masks else np.zeros(0, bool) for i in (0, 1))
    report["inside"] = {"frames_moved": int(moved.sum()), "moved": runs(moved),
                        "frames_outside": int(outside.sum()), "outside": runs(outside)}
    meta.extra["inside"] = {k: report["inside"][k] for k in ("frames_moved", "frames_outside")}
    if outside.any():
        log.warning("%s onto %s: the normalized pose cannot be kept inside the %dx%d frame in %d of %d "
                    "frames, larger than the frame even shrunk to normalize.inside_min_scale %g: frames %s",
                    src.subject, tgt.subject, tgt.width, tgt.height, outside.sum(), n, min_scale,
                    describe_ranges(runs(outside), meta.fps))


def main(argv=None):
    ap = argparse.ArgumentParser(description="Normalize a source's poses into a target's frame.")
    ap.add_argument("--pose", required=True, help="source pose table (smoothed)")
    ap.add_argument("--source-stats", required=True)
    ap.add_argument("--target-stats", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", default=None, help="the source's frames store: the picture confirms each cut")
    ap.add_argument("--shots", default=None, help="JSON: the shots found, their mappings, the frames kept inside")
    ap.add_argument("--settings", default="{}", help="the config's normalize section as JSON (schema defaults fill the rest)")
    ap.add_argument("--stats-settings", default="{}",
                    help="the config's stats section as JSON: the toe is found as subject_stats found it (min_confidence)")
    a = ap.parse_args(argv)
    logs.setup()
    c = section("normalize", json.loads(a.settings))
    stats_c = section("stats", json.loads(a.stats_settings))
    pose, frames = PoseFile(a.pose), open_frames(a.frames) if a.frames else None
    if frames is not None and len(frames) != pose.n_frames:
        sys.exit(f"normalize_pose: {a.frames} has {len(frames)} frames but {a.pose} has {pose.n_frames}")
    with PoseWriter(a.out, pose.meta) as w:
        _, report = normalize_source(pose, load_stats(a.source_stats), load_stats(a.target_stats), c, stats_c, w,
                                     frames)
    if a.shots:
        write_json(report, a.shots)
    print(f"{a.out}: {len(report['shots'])} shot(s), scale range {w.meta.extra['scale_range']}", file=sys.stderr)


if __name__ == "__main__":
    main()

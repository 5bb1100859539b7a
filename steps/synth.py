"""Procedurally rendered dancers: the project's own source and target subjects.

A seeded dance drives a 3-D skeleton (metres, floor at y=0); a pinhole camera projects it to
pixels; OpenCV paints a clothed, human-like figure over a room (wall, floor, horizon). The
projected skeleton is written beside the video as ground truth in the pose-table schema
(BODY_25 and both 21-point hands; the face is left missing), so pose extraction and
normalization can be checked against known answers.

Pure core: `dance_params(t)` -> `skeleton_3d` -> `project` -> `render_frame`. I/O (video,
Parquet, CLI) lives at the bottom. Everything is a deterministic function of (preset, seed, t).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from steps.prepare.posetable import B, PoseArrays, PoseMeta, empty_arrays, write_pose

# ----------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """Body proportions (metres), clothing/skin colours (RGB) and where the camera sees them."""

    height: float          # standing height, floor to crown
    shoulder_w: float      # shoulder joint to shoulder joint
    hip_w: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    skin: tuple
    hair: tuple
    shirt: tuple
    trousers: tuple
    shoes: tuple
    wall: tuple
    floor: tuple
    # Camera: focal length and principal point as fractions of the frame height/width, camera
    # height above the floor, and where the dancer stands (x offset, distance, walk amplitude).
    focal: float
    cx: float
    cy: float
    cam_h: float
    x0: float
    z0: float
    walk: float            # forward/back amplitude (m): varies toe y and height in the frame
    wall_z: float          # distance of the back wall: sets the horizon line
    build: float = 1.0     # limb girth multiplier

    @property
    def leg(self) -> float:
        return self.thigh + self.shin


PRESETS = {
    # Tall, long-limbed, close to the camera, centred, large in the frame.
    "source": Preset(
        height=1.80, shoulder_w=0.40, hip_w=0.22, upper_arm=0.31, forearm=0.27,
        thigh=0.45, shin=0.43,
        skin=(224, 180, 150), hair=(60, 40, 25), shirt=(200, 40, 45), trousers=(40, 50, 90),
        shoes=(30, 30, 30), wall=(205, 200, 185), floor=(150, 110, 75),
        focal=1.42, cx=0.50, cy=0.42, cam_h=1.05, x0=0.0, z0=3.5, walk=0.3, wall_z=6.0,
    ),
    # Shorter, broader shoulders, shorter legs relative to the torso, darker skin; farther
    # away, off to the right, higher in the frame and smaller.
    "target": Preset(
        height=1.64, shoulder_w=0.42, hip_w=0.26, upper_arm=0.27, forearm=0.24,
        thigh=0.38, shin=0.37,
        skin=(150, 100, 70), hair=(20, 15, 15), shirt=(40, 140, 90), trousers=(170, 150, 110),
        shoes=(110, 60, 30), wall=(175, 195, 215), floor=(120, 120, 125),
        focal=1.50, cx=0.60, cy=0.28, cam_h=1.20, x0=0.15, z0=5.0, walk=0.55, wall_z=8.5,
        build=1.12,
    ),
}

# ----------------------------------------------------------------------------- the dance


@dataclass(frozen=True)
class Dance:
    """Seeded rhythm: a beat, per-channel phases and amplitudes; evaluated at any time t."""

    seed: int
    beat: float                                    # seconds per beat
    rng_phases: np.ndarray = field(repr=False)     # per-channel phases
    rng_amps: np.ndarray = field(repr=False)       # per-channel amplitudes

    @classmethod
    def from_seed(cls, seed: int) -> "Dance":
        rng = np.random.default_rng(seed)
        return cls(seed, beat=float(rng.uniform(0.55, 0.75)),
                   rng_phases=rng.uniform(0, 2 * np.pi, 16), rng_amps=rng.uniform(0.6, 1.0, 16))


def _ease(x: float) -> float:
    """Smoothstep on [0, 1]: moves start and end at rest."""
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _wave(t: float, period: float, phase: float) -> float:
    return math.sin(2 * math.pi * t / period + phase)


def dance_params(d: Dance, p: Preset, t: float) -> dict:
    """The dance at time t as a few interpretable channels (angles in radians, lengths in m).

    The root sways and walks slowly forward and back; knees bounce on the beat; arms alternate
    between waves and raises on a 4-beat phrase; the body turns mildly. Feet step on the beat.
    """
    ph, am, b = d.rng_phases, d.rng_amps, d.beat
    phrase = 4 * b
    # Which arm move is active follows the phrase index; a seeded permutation varies it.
    k = int(math.floor(t / phrase))
    moves = np.random.default_rng([d.seed, k % 2**32]).integers(0, 4, size=1)[0]
    u = (t % phrase) / phrase
    env = math.sin(math.pi * u) ** 2  # each phrase rises and settles back
    arm_r = [0.25, 1.6, 0.9, 2.1][moves] * am[0]
    arm_l = [1.6, 0.25, 2.1, 0.9][moves] * am[1]
    return dict(
        x=p.x0 + 0.22 * am[2] * _wave(t, 7.3 * b, ph[2]),
        z=p.z0 + p.walk * _wave(t, 8.0 * b, ph[3]),
        bend=p.leg * (0.03 + 0.06 * am[4] * (0.5 - 0.5 * math.cos(2 * math.pi * t / b + ph[4]))),
        yaw=0.33 * am[5] * _wave(t, 9.1 * b, ph[5]),
        lean=0.06 * _wave(t, 2 * b, ph[6]),
        head=0.12 * _wave(t, 5.3 * b, ph[7]),
        # shoulder abduction (0 = hanging, pi/2 = horizontal) and in-plane elbow bend
        r_abd=0.18 + env * arm_r + 0.25 * _wave(t, b, ph[8]) * env,
        l_abd=0.18 + env * arm_l + 0.25 * _wave(t, b, ph[9] + 1) * env,
        r_elb=0.15 + env * (0.5 + 0.45 * _wave(t, b / 1.0, ph[10])),
        l_elb=0.15 + env * (0.5 + 0.45 * _wave(t, b / 1.0, ph[11])),
        r_fwd=0.25 + 0.2 * _wave(t, 3.1 * b, ph[12]),
        l_fwd=0.25 + 0.2 * _wave(t, 3.7 * b, ph[13]),
        spread=0.12 + 0.06 * _wave(t, 1.9 * b, ph[14]),
    )


def _feet(d: Dance, p: Preset, t: float) -> tuple[np.ndarray, np.ndarray]:
    """World positions of the right and left ankles: planted, or in a swing on the beat.

    Feet alternate: foot i steps during beats of its parity. A planted foot sits where the root
    was at the end of its last swing (plus a stance offset), so the feet follow the sway and the
    walk with real steps rather than sliding.
    """
    b = d.beat
    stance = p.hip_w * 0.55 + 0.04
    ankle_h = 0.08
    out = []
    for side, sign in ((0, -1.0), (1, 1.0)):
        n = math.floor(t / b)
        # last beat index of this foot's parity that started at or before t
        k = n if n % 2 == side else n - 1
        u = (t - k * b) / b  # progress of this foot's swing, >1 once planted

        def plant(j):
            q = dance_params(d, p, (j + 1) * b)
            # offset the stance by the yaw so the feet turn with the body
            c, s = math.cos(q["yaw"]), math.sin(q["yaw"])
            return np.array([q["x"] + sign * stance * c, ankle_h, q["z"] - sign * stance * s])

        start, end = plant(k - 2), plant(k)
        pos = start + (end - start) * _ease(u)
        pos[1] += 0.045 * math.sin(math.pi * min(u, 1.0))  # lift during the swing
        out.append(pos)
    return out[0], out[1]


# ----------------------------------------------------------------------------- skeleton


def _rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    # Local frame: +x = dancer's left, +y = up, +z = dancer's front. The world frame has the
    # camera looking along +z, so a dancer facing the camera has front = -z and left = +x.
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]) @ np.diag([1.0, 1.0, -1.0])


def _two_bone_ik(hip: np.ndarray, ankle: np.ndarray, l1: float, l2: float, fwd: np.ndarray) -> np.ndarray:
    """Knee position: the two-bone solution whose bend points along `fwd` (knees go forward)."""
    v = ankle - hip
    dist = min(np.linalg.norm(v), (l1 + l2) * 0.9999)
    v = v / (np.linalg.norm(v) + 1e-9)
    a = (l1 * l1 - l2 * l2 + dist * dist) / (2 * dist)
    h = math.sqrt(max(l1 * l1 - a * a, 0.0))
    bend = fwd - v * np.dot(fwd, v)
    bend /= np.linalg.norm(bend) + 1e-9
    return hip + v * a + bend * h


# Head geometry (fractions of the head height, which is ~13% of stature).
HEAD = dict(rx=0.36, ry=0.48, eye_x=0.16, eye_y=0.05, nose_y=-0.10, ear_x=0.37, ear_z=-0.02,
            front=0.40, mouth_y=-0.26)


def _place_feet(body: np.ndarray, r_ankle, l_ankle, fwd, left, up, height: float) -> None:
    """The toes and heels of BODY_25 in `body`: feet point forward and a little outward; toes and
    heel lie on the floor."""
    foot_l = 0.25 * height / 1.75
    for sign, ank, names in ((-1, r_ankle, ("RBigToe", "RSmallToe", "RHeel")),
                             (1, l_ankle, ("LBigToe", "LSmallToe", "LHeel"))):
        toe_dir = fwd * 0.8 + left * sign * 0.6
        floor = ank * np.array([1, 0, 1])
        body[B[names[0]]] = floor + toe_dir * foot_l * 0.72 - left * sign * 0.025
        body[B[names[1]]] = floor + toe_dir * foot_l * 0.62 + left * sign * 0.03
        body[B[names[2]]] = floor - toe_dir * foot_l * 0.25 + up * 0.01


def skeleton_3d(d: Dance, p: Preset, t: float) -> dict:
    """World joint positions (metres) for time t: BODY_25 (25, 3), hands, head frame."""
    q = dance_params(d, p, t)
    R = _rot_y(q["yaw"])
    fwd = R @ np.array([0, 0, 1.0])
    left = R @ np.array([1.0, 0, 0])
    up = np.array([0, 1.0, 0])
    r_ankle, l_ankle = _feet(d, p, t)

    # Hip height: the wanted bounce, but never higher than both legs can reach.
    hip_drop = 0.03
    base = np.array([q["x"], 0.0, q["z"]])
    hip_y = p.leg + 0.08 - hip_drop - q["bend"]
    for a, sign in ((r_ankle, -1), (l_ankle, 1)):
        hip_xz = base + left * sign * p.hip_w / 2
        flat = math.hypot(a[0] - hip_xz[0], a[2] - hip_xz[2])
        hip_y = min(hip_y, a[1] + math.sqrt(max((p.leg * 0.995) ** 2 - flat * flat, 0.0)))
    mid_hip = base + up * hip_y
    r_hip, l_hip = mid_hip - left * p.hip_w / 2, mid_hip + left * p.hip_w / 2

    torso = p.height * 0.30
    spine = R @ np.array([0.0, math.cos(q["lean"]), math.sin(q["lean"]) * 0.3])
    spine[0] += math.sin(q["lean"]) * 0.8  # the lean is mostly sideways
    spine /= np.linalg.norm(spine)
    neck = mid_hip + spine * torso
    side = np.cross(spine, fwd)  # the dancer's left, perpendicular to the spine
    side = -side / np.linalg.norm(side) if np.dot(side, left) < 0 else side / np.linalg.norm(side)
    r_sh, l_sh = neck - side * p.shoulder_w / 2, neck + side * p.shoulder_w / 2

    def arm(sh, sign, abd, elb, fwd_a):
        # The arm moves in the frontal plane (abduction, then an in-plane elbow bend) tilted
        # forward a little so that forearms are not hidden behind one another.
        d1 = -spine * math.cos(abd) + side * sign * math.sin(abd)
        a2 = min(abd + elb, 3.0)
        d2 = -spine * math.cos(a2) + side * sign * math.sin(a2)
        d1 = d1 * math.cos(fwd_a * 0.5) + fwd * math.sin(fwd_a * 0.5)
        d2 = d2 * math.cos(fwd_a) + fwd * math.sin(fwd_a)
        el = sh + d1 * p.upper_arm
        wr = el + d2 * p.forearm
        # Palm toward the camera: the thumb points outward when the arm hangs, up when it is
        # horizontal, inward when raised (the anatomical position turned in the frontal plane).
        thumb = spine * math.sin(a2) + side * sign * math.cos(a2)
        return el, wr, d2, thumb

    r_el, r_wr, r_dir, r_th = arm(r_sh, -1, q["r_abd"], q["r_elb"], q["r_fwd"])
    l_el, l_wr, l_dir, l_th = arm(l_sh, 1, q["l_abd"], q["l_elb"], q["l_fwd"])

    # Knees bend over the turned-out toes, as in a dancer's plié; the sideways part keeps the
    # bend visible to a camera in front rather than hidden in foreshortening.
    r_knee = _two_bone_ik(r_hip, r_ankle, p.thigh, p.shin, fwd - 1.0 * left)
    l_knee = _two_bone_ik(l_hip, l_ankle, p.thigh, p.shin, fwd + 1.0 * left)

    # Head: a yaw of its own on top of the body's.
    head_h = p.height * 0.13
    Rh = _rot_y(q["yaw"] + q["head"])
    h_fwd, h_left = Rh @ np.array([0, 0, 1.0]), Rh @ np.array([1.0, 0, 0])
    head_c = neck + spine * (p.height * 0.04) + up * head_h * 0.55

    def hp(x, y, z):
        return head_c + h_left * x * head_h + up * y * head_h + h_fwd * z * head_h

    H = HEAD
    body = np.zeros((25, 3))
    body[B["Nose"]] = hp(0, H["nose_y"], H["front"] + 0.08)
    body[B["Neck"]] = neck
    body[B["RShoulder"]], body[B["LShoulder"]] = r_sh, l_sh
    body[B["RElbow"]], body[B["LElbow"]] = r_el, l_el
    body[B["RWrist"]], body[B["LWrist"]] = r_wr, l_wr
    body[B["MidHip"]], body[B["RHip"]], body[B["LHip"]] = mid_hip, r_hip, l_hip
    body[B["RKnee"]], body[B["LKnee"]] = r_knee, l_knee
    body[B["RAnkle"]], body[B["LAnkle"]] = r_ankle, l_ankle
    body[B["REye"]] = hp(-H["eye_x"], H["eye_y"], H["front"])
    body[B["LEye"]] = hp(H["eye_x"], H["eye_y"], H["front"])
    body[B["REar"]] = hp(-H["ear_x"], 0.0, H["ear_z"])
    body[B["LEar"]] = hp(H["ear_x"], 0.0, H["ear_z"])
    _place_feet(body, r_ankle, l_ankle, fwd, left, up, p.height)

    hands = {
        "right_hand": hand_3d(r_wr, r_dir, r_th, fwd, q["spread"], p.height),
        "left_hand": hand_3d(l_wr, l_dir, l_th, fwd, q["spread"], p.height),
    }
    return dict(body=body, hands=hands, head=head_c, mouth=hp(0, H["mouth_y"], H["front"]), head_h=head_h, up=up, fwd=fwd,
                h_fwd=h_fwd, h_left=h_left, spine=spine, side=side)


# Hand layout: per digit the base point (along the hand axis, toward the thumb) in units of
# hand length, the fan angle, and the segment lengths. Hands are drawn ~15% larger than life so
# that the fingers stay a few pixels thick at demo resolution.
_DIGITS = [  # (base_along, base_across, fan (rad), segment lengths)
    (0.12, 0.16, 0.75, (0.20, 0.18, 0.16)),   # thumb: base = Thumb1
    (0.52, 0.14, 0.14, (0.24, 0.14, 0.12)),   # index
    (0.54, 0.03, 0.0, (0.26, 0.16, 0.13)),    # middle
    (0.51, -0.08, -0.14, (0.24, 0.15, 0.12)),  # ring
    (0.47, -0.18, -0.30, (0.19, 0.12, 0.11)),  # pinky
]
HAND_SCALE = 1.3


def hand_3d(wrist, axis, thumb, fwd, spread, stature) -> np.ndarray:
    """21 hand points (OpenPose/MediaPipe order) in the palm plane, fingers slightly spread."""
    L = 0.108 * stature * HAND_SCALE
    axis = axis / np.linalg.norm(axis)
    thumb = thumb - axis * np.dot(thumb, axis)
    thumb /= np.linalg.norm(thumb) + 1e-9
    pts = [wrist]
    for i, (al, ac, fan, segs) in enumerate(_DIGITS):
        fan = fan * (1 + 2.0 * spread) if i else fan + spread
        base = wrist + axis * al * L + thumb * ac * L
        d = axis * math.cos(fan) + thumb * math.sin(fan)
        # A slight curl toward the palm side (away from the camera) keeps the hand natural.
        cur = base
        pts.append(cur)
        for j, s in enumerate(segs):
            curl = 0.15 * (j + 1)
            dj = d * math.cos(curl) - fwd * math.sin(curl) * 0.4
            cur = cur + dj / np.linalg.norm(dj) * s * L
            pts.append(cur)
    return np.array(pts)


# ----------------------------------------------------------------------------- camera


def camera(p: Preset, width: int, height: int) -> dict:
    """A pinhole camera at (0, cam_h, 0) looking along +z; focal and centre scale with the frame."""
    return dict(f=p.focal * height, cx=p.cx * width, cy=p.cy * height, h=p.cam_h)


def project(cam: dict, pts: np.ndarray) -> np.ndarray:
    """World (..., 3) -> pixels (..., 2) plus depth (..., 1) as (..., 3)."""
    pts = np.asarray(pts, float)
    z = np.maximum(pts[..., 2], 1e-3)
    u = cam["cx"] + cam["f"] * pts[..., 0] / z
    v = cam["cy"] - cam["f"] * (pts[..., 1] - cam["h"]) / z
    return np.stack([u, v, z], axis=-1)


# ----------------------------------------------------------------------------- drawing

_SS = 2          # supersampling factor: draw at 2x, downsample (anti-aliasing for free)
_SHIFT = 4       # OpenCV sub-pixel bits


def _shade(c, k):
    return tuple(int(min(max(v * k, 0), 255)) for v in c)


def _pt(xy):
    return (int(round(xy[0] * _SS * (1 << _SHIFT))), int(round(xy[1] * _SS * (1 << _SHIFT))))


def _capsule(img, a, b, ra, rb, color, outline=0.7):
    """A tapered limb from a to b (pixels) with radii ra, rb, a darker rim for a silhouette."""
    for grow, col in ((1.0, _shade(color, outline)), (0.0, color)):
        _taper(img, a, b, ra + grow * 0.6, rb + grow * 0.6, col)


def _taper(img, a, b, ra, rb, color):
    a, b = np.asarray(a[:2], float), np.asarray(b[:2], float)
    d = b - a
    n = np.linalg.norm(d)
    sc = _SS * (1 << _SHIFT)
    cv2.circle(img, _pt(a), int(ra * sc), color, -1, cv2.LINE_AA, _SHIFT)
    cv2.circle(img, _pt(b), int(rb * sc), color, -1, cv2.LINE_AA, _SHIFT)
    if n < 1e-6:
        return
    perp = np.array([-d[1], d[0]]) / n
    poly = np.array([_pt(a + perp * ra), _pt(b + perp * rb), _pt(b - perp * rb), _pt(a - perp * ra)])
    cv2.fillConvexPoly(img, poly, color, cv2.LINE_AA, _SHIFT)


def _poly(img, pts, color, outline=0.7):
    pts = np.array([_pt(p) for p in pts], np.int32)
    cv2.fillPoly(img, [pts], color, cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, [pts], True, _shade(color, outline), max(1, _SS), cv2.LINE_AA, _SHIFT)


def _ellipse(img, c, rx, ry, angle, color, thickness=-1, start=0, end=360):
    sc = _SS * (1 << _SHIFT)
    cv2.ellipse(img, _pt(c), (max(int(rx * sc), 1), max(int(ry * sc), 1)), angle, start, end,
                color, thickness if thickness < 0 else max(1, int(thickness * _SS)), cv2.LINE_AA, _SHIFT)


def background(p: Preset, cam: dict, width: int, height: int) -> np.ndarray:
    """Wall, skirting board, floor with perspective boards; the horizon is where they meet."""
    W, H = width * _SS, height * _SS
    img = np.zeros((H, W, 3), np.uint8)
    horizon = project(cam, np.array([0.0, 0.0, p.wall_z]))[1] * _SS
    hy = int(round(min(max(horizon, 0), H)))
    ramp = np.linspace(1.05, 0.9, max(hy, 1))[:, None, None]
    img[:hy] = np.clip(np.array(p.wall)[None, None] * ramp, 0, 255).astype(np.uint8)
    fr = np.linspace(0.85, 1.05, max(H - hy, 1))[:, None, None]
    img[hy:] = np.clip(np.array(p.floor)[None, None] * fr, 0, 255).astype(np.uint8)
    # floor boards converge to the vanishing point
    for x in np.arange(-6, 6.01, 0.5):
        a = project(cam, np.array([x, 0, p.wall_z]))
        b = project(cam, np.array([x, 0, 0.8]))
        cv2.line(img, _pt(a), _pt(b), _shade(p.floor, 0.8), _SS, cv2.LINE_AA, _SHIFT)
    sk = int(round(0.012 * H))
    cv2.rectangle(img, (0, hy - sk), (W, hy), _shade(p.wall, 0.55), -1)
    cv2.line(img, (0, hy), (W, hy), _shade(p.wall, 0.35), _SS, cv2.LINE_AA)
    return img


def _ppm(cam, z):
    """Pixels per metre at depth z."""
    return cam["f"] / max(z, 1e-3)


def draw_figure(img: np.ndarray, p: Preset, cam: dict, sk: dict) -> None:
    """Paint the dancer into a supersampled canvas, far parts first (painter's algorithm)."""
    P = project(cam, sk["body"])
    J = lambda n: P[B[n]]  # noqa: E731
    g = p.build
    items = []  # (depth, draw callable)

    def limb(a, b, ra, rb, col, bias=0.0, outline=0.7):
        za, zb = a[2], b[2]
        ka, kb = _ppm(cam, za), _ppm(cam, zb)
        items.append(((za + zb) / 2 + bias,
                      lambda: _capsule(img, a, b, ra * ka * g, rb * kb * g, col, outline)))

    # Shadow on the floor under the dancer (drawn first, always behind).
    feet = sk["body"][[B["RAnkle"], B["LAnkle"]]].mean(0) * np.array([1, 0, 1])
    sh_c = project(cam, feet)
    k = _ppm(cam, sh_c[2])
    items.append((1e9, lambda: _ellipse(img, sh_c, 0.45 * k, 0.06 * k, 0, _shade(p.floor, 0.6))))

    # Legs: trousers from hip to ankle, shoes from heel to toe.
    for s in "RL":
        hip, knee, ank = J(f"{s}Hip"), J(f"{s}Knee"), J(f"{s}Ankle")
        limb(hip, knee, 0.075, 0.055, p.trousers, 0.08)
        limb(knee, ank, 0.058, 0.045, p.trousers, 0.07)
        toe = (J(f"{s}BigToe") + J(f"{s}SmallToe")) / 2
        heel = J(f"{s}Heel")
        # a low shoe: its top reaches the ankle joint, where the trouser hem sits
        limb(heel + (toe - heel) * 0.1, toe, 0.045, 0.04, p.shoes, 0.06, 0.5)
        limb(ank + (heel - ank) * 0.45, heel + (toe - heel) * 0.4, 0.04, 0.04, p.shoes, 0.055, 0.5)

    # Pelvis (trousers) and torso (shirt) as polygons around the joints.
    side3, spine3 = sk["side"], sk["spine"]
    def w(pt3):  # noqa: E306
        return project(cam, pt3)
    b3 = sk["body"]
    waist = [w(b3[B["RHip"]] - side3 * 0.06 * g + spine3 * 0.10), w(b3[B["LHip"]] + side3 * 0.06 * g + spine3 * 0.10),
             w(b3[B["LHip"]] + side3 * 0.055 * g - spine3 * 0.06), w(b3[B["MidHip"]] - spine3 * 0.10),
             w(b3[B["RHip"]] - side3 * 0.055 * g - spine3 * 0.06)]
    zt = float(np.mean([b3[B[n]][2] for n in ("Neck", "MidHip")]))
    items.append((zt + 0.05, lambda: _poly(img, waist, p.trousers, 1.0)))  # no seam over the thighs
    shirt = [w(b3[B["RShoulder"]] - side3 * 0.05 * g + spine3 * 0.04),
             w(b3[B["Neck"]] - side3 * 0.06 + spine3 * 0.06),
             w(b3[B["Neck"]] + side3 * 0.06 + spine3 * 0.06),
             w(b3[B["LShoulder"]] + side3 * 0.05 * g + spine3 * 0.04),
             w(b3[B["LShoulder"]] + side3 * 0.03 * g - spine3 * 0.22),
             w(b3[B["LHip"]] + side3 * 0.07 * g + spine3 * 0.06),
             w(b3[B["RHip"]] - side3 * 0.07 * g + spine3 * 0.06),
             w(b3[B["RShoulder"]] - side3 * 0.03 * g - spine3 * 0.22)]
    collar = [w(b3[B["Neck"]] - side3 * 0.055 + spine3 * 0.06), w(b3[B["Neck"]] + side3 * 0.055 + spine3 * 0.06),
              w(b3[B["Neck"]] - spine3 * 0.07 + sk["fwd"] * 0.05)]

    def torso():
        _poly(img, shirt, p.shirt)
        _poly(img, collar, p.skin, 0.85)
    items.append((zt, torso))

    # Neck (skin) just in front of the torso's back, behind the head.
    head = project(cam, sk["head"])
    limb(J("Neck") + (head - J("Neck")) * 0.05, head, 0.05, 0.05, p.skin, -0.01, 0.8)

    # Arms: skin, a short sleeve over the upper arm, skin forearm, then the hand; one item per
    # arm so its pieces never interleave with each other.
    for s, hand in (("R", "right_hand"), ("L", "left_hand")):
        sh, el, wr = J(f"{s}Shoulder"), J(f"{s}Elbow"), J(f"{s}Wrist")
        hp = project(cam, sk["hands"][hand])
        ks, ke, kw = (_ppm(cam, x[2]) * g for x in (sh, el, wr))

        def arm(sh=sh, el=el, wr=wr, hp=hp, ks=ks, ke=ke, kw=kw):
            mid = sh + (el - sh) * 0.5
            _capsule(img, mid, el, 0.046 * ks, 0.042 * ke, p.skin, 0.75)
            # the sleeve's cap at the shoulder is no wider than the shirt's shoulder line
            _capsule(img, sh, mid, 0.05 * ks, 0.054 * ke, p.shirt)
            _capsule(img, el, wr, 0.042 * ke, 0.032 * kw, p.skin, 0.75)
            draw_hand(img, hp, p, cam)
        depth = float(np.mean([sh[2], el[2], wr[2]]))
        items.append((depth - 0.05, arm))

    items.append((head[2] - 0.02, lambda: draw_head(img, p, cam, sk, P)))
    for _, fn in sorted(items, key=lambda it: -it[0]):
        fn()


def draw_hand(img, hp, p, cam):
    """Palm as a polygon, each digit as three tapered segments thick enough to read as fingers."""
    k = _ppm(cam, hp[0, 2])
    r = 0.0115 * HAND_SCALE * k * p.build
    palm_idx = [0, 1, 5, 9, 13, 17]
    palm = hp[palm_idx]
    hull = cv2.convexHull(np.array([_pt(q) for q in palm], np.int32))
    cv2.fillConvexPoly(img, hull, _shade(p.skin, 0.7), cv2.LINE_AA, _SHIFT)
    # shrink the palm slightly inside its outline
    c = palm[:, :2].mean(0)
    inner = cv2.convexHull(np.array([_pt(c + (q[:2] - c) * 0.9) for q in palm], np.int32))
    cv2.fillConvexPoly(img, inner, p.skin, cv2.LINE_AA, _SHIFT)
    for base in (1, 5, 9, 13, 17):
        for j in range(3):
            a, b = hp[base + j], hp[base + j + 1]
            rr = r * (1.25 if base == 1 else 1.0) * (1 - 0.12 * j)
            _capsule(img, a, b, rr, rr * 0.9, p.skin, 0.72)


def draw_head(img, p, cam, sk, P):
    """Hair, ears, face with eyes, brows, nose and mouth at the skeleton's face points."""
    c = project(cam, sk["head"])
    k = _ppm(cam, c[2]) * sk["head_h"]
    rx, ry = HEAD["rx"] * k, HEAD["ry"] * k
    # Where the face looks: the sideways shift of the nose tells how far the head is turned.
    turn = float(np.dot(sk["h_fwd"], np.array([-1.0, 0, 0])))  # >0: face turned toward image left
    hair, skin = p.hair, p.skin
    _ellipse(img, c + np.array([0, -0.06 * k, 0]), rx * 1.1, ry * 1.02, 0, _shade(hair, 0.8))
    _ellipse(img, c + np.array([0, -0.06 * k, 0]), rx * 1.05, ry * 0.98, 0, hair)
    for n in ("REar", "LEar"):
        e = P[B[n]]
        _ellipse(img, e, 0.09 * k, 0.15 * k, 0, _shade(skin, 0.75))
        _ellipse(img, e, 0.07 * k, 0.13 * k, 0, skin)
    fc = c + np.array([-turn * 0.12 * k, 0.05 * k, 0])
    _ellipse(img, fc, rx * 0.98, ry * 0.9, 0, _shade(skin, 0.78))
    _ellipse(img, fc, rx * 0.93, ry * 0.86, 0, skin)
    # fringe: the hair covers the top of the face
    _ellipse(img, c + np.array([-turn * 0.1 * k, -0.22 * k, 0]), rx * 1.02, ry * 0.55, 0, hair, -1, 180, 360)
    for n in ("REye", "LEye"):
        e = P[B[n]]
        _ellipse(img, e + np.array([0, -0.11 * k, 0]), 0.11 * k, 0.025 * k, 0, _shade(hair, 0.9), 0.02 * k + 0.4)
        _ellipse(img, e, 0.085 * k, 0.055 * k, 0, (245, 245, 245))
        _ellipse(img, e + np.array([-turn * 0.03 * k, 0, 0]), 0.045 * k, 0.05 * k, 0, (40, 30, 25))
    nose = P[B["Nose"]]
    eyes = (P[B["REye"]] + P[B["LEye"]]) / 2
    _capsule(img, eyes + (nose - eyes) * 0.35, nose, 0.025 * k, 0.045 * k, _shade(skin, 0.92), 0.7)
    mouth = project(cam, sk["mouth"])
    _ellipse(img, mouth, 0.12 * k, 0.05 * k, 0, (150, 40, 50), -1, 0, 180)


def render_frame(p: Preset, cam: dict, sk: dict, width: int, height: int, bg: np.ndarray | None = None) -> np.ndarray:
    """One RGB uint8 frame of size (height, width, 3)."""
    img = (background(p, cam, width, height) if bg is None else bg).copy()
    draw_figure(img, p, cam, sk)
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)


# ----------------------------------------------------------------------------- ground truth


def truth_arrays(sks: list[dict], cam: dict, meta: PoseMeta) -> PoseArrays:
    """Projected skeletons as a dense pose table: body and hands confidence 1, face missing."""
    out = empty_arrays(len(sks), meta)
    for i, sk in enumerate(sks):
        out.parts["body"][i, :, :2] = project(cam, sk["body"])[:, :2]
        out.parts["body"][i, :, 2] = 1.0
        for h in ("left_hand", "right_hand"):
            out.parts[h][i, :, :2] = project(cam, sk["hands"][h])[:, :2]
            out.parts[h][i, :, 2] = 1.0
    return out


@dataclass
class Clip:
    """A rendered subject: frames come lazily from `frames()`; `truth` is the pose table."""

    preset: Preset
    dance: Dance
    cam: dict
    width: int
    height: int
    fps: float
    n: int
    skeletons: list

    def frame(self, i: int, bg=None) -> np.ndarray:
        return render_frame(self.preset, self.cam, self.skeletons[i], self.width, self.height, bg)

    def frames(self):
        bg = background(self.preset, self.cam, self.width, self.height)
        for i in range(self.n):
            yield self.frame(i, bg)

    def truth(self, subject: str, preset_name: str) -> PoseArrays:
        meta = PoseMeta(subject, self.width, self.height, float(self.fps), "synth",
                        extra={"preset": preset_name, "seed": self.dance.seed})
        return truth_arrays(self.skeletons, self.cam, meta)


def make_clip(preset: str, seconds: float, fps: float, width: int, height: int, seed: int) -> Clip:
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; choose one of {sorted(PRESETS)}")
    if width % 2 or height % 2:
        raise ValueError(f"frame size {width}x{height} must be even (H.264 yuv420p)")
    p, d = PRESETS[preset], Dance.from_seed(seed)
    n = max(1, int(round(seconds * fps)))
    sks = [skeleton_3d(d, p, i / fps) for i in range(n)]
    return Clip(p, d, camera(p, width, height), width, height, fps, n, sks)


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> None:
    from tqdm import tqdm

    from steps.prepare.video import write_video

    ap = argparse.ArgumentParser(prog="python -m steps.synth", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=15.0)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--subject", default=None, help="subject name stored in the truth table (default: video stem)")
    ap.add_argument("--video", required=True, help="output .mp4")
    ap.add_argument("--truth", required=True, help="output ground-truth pose table (.parquet)")
    a = ap.parse_args(argv)
    clip = make_clip(a.preset, a.seconds, a.fps, a.width, a.height, a.seed)
    subject = a.subject or Path(a.video).stem
    frames = tqdm(clip.frames(), total=clip.n, desc=f"synth {subject}", unit="frame")
    write_video(a.video, frames, a.fps)  # atomic
    try:
        write_pose(clip.truth(subject, a.preset), a.truth)  # atomic
    except BaseException:
        Path(a.video).unlink(missing_ok=True)  # never leave a video without its truth
        raise
    print(f"wrote {a.video} and {a.truth}: {clip.n} frames {a.width}x{a.height} @ {a.fps:g} fps")


if __name__ == "__main__":
    main()

"""The dancers' bodies and their dance: presets (build, clothes, camera), a seeded dance, and the
3-D skeleton it drives (metres, floor at y=0), hands included. Pure functions of (preset, seed, t)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from steps.prepare.posetable import B

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


def _hips(q: dict, p: Preset, left, up, r_ankle, l_ankle):
    """(mid, right, left hip): the wanted bounce, but never higher than both legs can reach."""
    hip_drop = 0.03
    base = np.array([q["x"], 0.0, q["z"]])
    hip_y = p.leg + 0.08 - hip_drop - q["bend"]
    for a, sign in ((r_ankle, -1), (l_ankle, 1)):
        hip_xz = base + left * sign * p.hip_w / 2
        flat = math.hypot(a[0] - hip_xz[0], a[2] - hip_xz[2])
        hip_y = min(hip_y, a[1] + math.sqrt(max((p.leg * 0.995) ** 2 - flat * flat, 0.0)))
    mid_hip = base + up * hip_y
    return mid_hip, mid_hip - left * p.hip_w / 2, mid_hip + left * p.hip_w / 2


def _arm(p: Preset, sh, sign, abd, elb, fwd_a, spine, side, fwd):
    """(elbow, wrist, forearm direction, thumb direction) of one arm."""
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


def _head(q: dict, p: Preset, neck, spine, up):
    """The head's frame: (centre, height, forward, left, hp(x, y, z) -> a point on the head)."""
    head_h = p.height * 0.13
    Rh = _rot_y(q["yaw"] + q["head"])  # a yaw of its own on top of the body's
    h_fwd, h_left = Rh @ np.array([0, 0, 1.0]), Rh @ np.array([1.0, 0, 0])
    head_c = neck + spine * (p.height * 0.04) + up * head_h * 0.55

    def hp(x, y, z):
        return head_c + h_left * x * head_h + up * y * head_h + h_fwd * z * head_h
    return head_c, head_h, h_fwd, h_left, hp


def skeleton_3d(d: Dance, p: Preset, t: float) -> dict:
    """World joint positions (metres) for time t: BODY_25 (25, 3), hands, head frame."""
    q = dance_params(d, p, t)
    R = _rot_y(q["yaw"])
    fwd = R @ np.array([0, 0, 1.0])
    left = R @ np.array([1.0, 0, 0])
    up = np.array([0, 1.0, 0])
    r_ankle, l_ankle = _feet(d, p, t)
    mid_hip, r_hip, l_hip = _hips(q, p, left, up, r_ankle, l_ankle)

    torso = p.height * 0.30
    spine = R @ np.array([0.0, math.cos(q["lean"]), math.sin(q["lean"]) * 0.3])
    spine[0] += math.sin(q["lean"]) * 0.8  # the lean is mostly sideways
    spine /= np.linalg.norm(spine)
    neck = mid_hip + spine * torso
    side = np.cross(spine, fwd)  # the dancer's left, perpendicular to the spine
    side = -side / np.linalg.norm(side) if np.dot(side, left) < 0 else side / np.linalg.norm(side)
    r_sh, l_sh = neck - side * p.shoulder_w / 2, neck + side * p.shoulder_w / 2
    r_el, r_wr, r_dir, r_th = _arm(p, r_sh, -1, q["r_abd"], q["r_elb"], q["r_fwd"], spine, side, fwd)
    l_el, l_wr, l_dir, l_th = _arm(p, l_sh, 1, q["l_abd"], q["l_elb"], q["l_fwd"], spine, side, fwd)

    # Knees bend over the turned-out toes, as in a dancer's plié; the sideways part keeps the
    # bend visible to a camera in front rather than hidden in foreshortening.
    r_knee = _two_bone_ik(r_hip, r_ankle, p.thigh, p.shin, fwd - 1.0 * left)
    l_knee = _two_bone_ik(l_hip, l_ankle, p.thigh, p.shin, fwd + 1.0 * left)
    head_c, head_h, h_fwd, h_left, hp = _head(q, p, neck, spine, up)

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

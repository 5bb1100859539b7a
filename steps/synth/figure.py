"""The camera and the painting: a pinhole projection of the skeleton, and OpenCV drawing a clothed,
human-like figure over a room (wall, floor, horizon), supersampled."""
from __future__ import annotations


import cv2
import numpy as np

from steps.prepare.posetable import B
from steps.synth.dance import HAND_SCALE, HEAD, Preset

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


def _limb(img, cam: dict, g: float, a, b, ra, rb, col, bias=0.0, outline=0.7):
    """(depth, draw): a capsule from a to b, its radii in metres at each end's depth."""
    za, zb = a[2], b[2]
    ka, kb = _ppm(cam, za), _ppm(cam, zb)
    return (za + zb) / 2 + bias, lambda: _capsule(img, a, b, ra * ka * g, rb * kb * g, col, outline)


def _legs(img, p: Preset, cam: dict, sk: dict, P: np.ndarray) -> list:
    """The shadow on the floor (drawn first, always behind), then trousers from hip to ankle and
    shoes from heel to toe."""
    def J(n):
        return P[B[n]]
    feet = sk["body"][[B["RAnkle"], B["LAnkle"]]].mean(0) * np.array([1, 0, 1])
    sh_c = project(cam, feet)
    k = _ppm(cam, sh_c[2])
    items = [(1e9, lambda: _ellipse(img, sh_c, 0.45 * k, 0.06 * k, 0, _shade(p.floor, 0.6)))]
    for s in "RL":
        hip, knee, ank = J(f"{s}Hip"), J(f"{s}Knee"), J(f"{s}Ankle")
        items.append(_limb(img, cam, p.build, hip, knee, 0.075, 0.055, p.trousers, 0.08))
        items.append(_limb(img, cam, p.build, knee, ank, 0.058, 0.045, p.trousers, 0.07))
        toe = (J(f"{s}BigToe") + J(f"{s}SmallToe")) / 2
        heel = J(f"{s}Heel")
        # a low shoe: its top reaches the ankle joint, where the trouser hem sits
        items.append(_limb(img, cam, p.build, heel + (toe - heel) * 0.1, toe, 0.045, 0.04, p.shoes, 0.06, 0.5))
        items.append(_limb(img, cam, p.build, ank + (heel - ank) * 0.45, heel + (toe - heel) * 0.4, 0.04, 0.04,
                           p.shoes, 0.055, 0.5))
    return items


def _torso(img, p: Preset, cam: dict, sk: dict, P: np.ndarray) -> list:
    """Pelvis (trousers) and torso (shirt) as polygons around the joints, then the neck (skin)
    just in front of the torso's back, behind the head."""
    side3, spine3, b3, g = sk["side"], sk["spine"], sk["body"], p.build

    def w(pt3):
        return project(cam, pt3)
    waist = [w(b3[B["RHip"]] - side3 * 0.06 * g + spine3 * 0.10), w(b3[B["LHip"]] + side3 * 0.06 * g + spine3 * 0.10),
             w(b3[B["LHip"]] + side3 * 0.055 * g - spine3 * 0.06), w(b3[B["MidHip"]] - spine3 * 0.10),
             w(b3[B["RHip"]] - side3 * 0.055 * g - spine3 * 0.06)]
    zt = float(np.mean([b3[B[n]][2] for n in ("Neck", "MidHip")]))
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
    head, neck = project(cam, sk["head"]), P[B["Neck"]]
    return [(zt + 0.05, lambda: _poly(img, waist, p.trousers, 1.0)),  # no seam over the thighs
            (zt, torso), _limb(img, cam, g, neck + (head - neck) * 0.05, head, 0.05, 0.05, p.skin, -0.01, 0.8)]


def _arms(img, p: Preset, cam: dict, sk: dict, P: np.ndarray) -> list:
    """Skin, a short sleeve over the upper arm, skin forearm, then the hand; one item per arm so
    its pieces never interleave with each other."""
    items = []
    for s, hand in (("R", "right_hand"), ("L", "left_hand")):
        sh, el, wr = P[B[f"{s}Shoulder"]], P[B[f"{s}Elbow"]], P[B[f"{s}Wrist"]]
        hp = project(cam, sk["hands"][hand])
        ks, ke, kw = (_ppm(cam, x[2]) * p.build for x in (sh, el, wr))

        def arm(sh=sh, el=el, wr=wr, hp=hp, ks=ks, ke=ke, kw=kw):
            mid = sh + (el - sh) * 0.5
            _capsule(img, mid, el, 0.046 * ks, 0.042 * ke, p.skin, 0.75)
            # the sleeve's cap at the shoulder is no wider than the shirt's shoulder line
            _capsule(img, sh, mid, 0.05 * ks, 0.054 * ke, p.shirt)
            _capsule(img, el, wr, 0.042 * ke, 0.032 * kw, p.skin, 0.75)
            draw_hand(img, hp, p, cam)
        items.append((float(np.mean([sh[2], el[2], wr[2]])) - 0.05, arm))
    return items


def draw_figure(img: np.ndarray, p: Preset, cam: dict, sk: dict) -> None:
    """Paint the dancer into a supersampled canvas, far parts first (painter's algorithm)."""
    P = project(cam, sk["body"])
    items = [*_legs(img, p, cam, sk, P), *_torso(img, p, cam, sk, P), *_arms(img, p, cam, sk, P),
             (project(cam, sk["head"])[2] - 0.02, lambda: draw_head(img, p, cam, sk, P))]
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

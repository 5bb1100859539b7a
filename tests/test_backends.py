"""The detectron2 back ends: their pure conversions on constructed arrays with known answers,
the back-end selection and its errors, the DensePose IUV store, and (only where detectron2 is
installed) integration runs with randomly initialised models."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from steps.prepare.backends import BACKENDS, BackendUnavailable, get_backend
from steps.prepare.backends.convert import (C, KEYPOINT_SCORE_SCALE, fit_scale_shift, warp_iuv, N_PARTS, PART_COLUMNS,
                                    MainPersonTracker, box_iou, chart_origin, chart_to_frame_iuv,
                                    coco17_to_body25, iuv_index_row, keypoint_confidence,
                                    label_map_with_iuv, match_to_keypoints, paste_chart,
                                    part_pixel_counts, select_main)
from steps.prepare.backends.detectron2 import DOCS, keypoints_to_parts
from steps.prepare.backends.densepose import INDEX_DTYPES, index_frame, load_iuv, merge_chunks
from steps.prepare.backends.options import backend_options
from steps.prepare.posetable import B, BODY_25, N_FACE, PoseArrays, PoseMeta, write_pose

ROOT = Path(__file__).resolve().parents[1]
HAVE_D2 = importlib.util.find_spec("detectron2") is not None
HAVE_DP = importlib.util.find_spec("densepose") is not None
FEET = ["LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"]


# ---- COCO-17 -> BODY_25 ----------------------------------------------------------------------

def coco_pose(scores=None):
    """COCO keypoint k at (10 k + 1, 100 + 2 k) with score 0.05 (k + 1) unless given."""
    k = np.arange(17, dtype=np.float32)
    s = 0.05 * (k + 1) if scores is None else np.asarray(scores, np.float32)
    return np.stack([10 * k + 1, 100 + 2 * k, s], axis=-1)


def test_coco17_to_body25_every_joint():
    kps = coco_pose()
    out = coco17_to_body25(kps, scale=None)  # scores taken as confidences: exact values
    assert out.shape == (25, 3) and out.dtype == np.float32
    direct = {"Nose": "nose", "RShoulder": "right_shoulder", "RElbow": "right_elbow",
              "RWrist": "right_wrist", "LShoulder": "left_shoulder", "LElbow": "left_elbow",
              "LWrist": "left_wrist", "RHip": "right_hip", "RKnee": "right_knee",
              "RAnkle": "right_ankle", "LHip": "left_hip", "LKnee": "left_knee",
              "LAnkle": "left_ankle", "REye": "right_eye", "LEye": "left_eye", "REar": "right_ear",
              "LEar": "left_ear"}
    for body, coco in direct.items():
        np.testing.assert_allclose(out[B[body]], kps[C[coco]], err_msg=body)
    for body, (a, b) in {"Neck": ("left_shoulder", "right_shoulder"), "MidHip": ("left_hip", "right_hip")}.items():
        np.testing.assert_allclose(out[B[body], :2], (kps[C[a], :2] + kps[C[b], :2]) / 2, err_msg=body)
        assert out[B[body], 2] == pytest.approx(min(kps[C[a], 2], kps[C[b], 2]))
    for foot in FEET:
        assert np.isnan(out[B[foot], :2]).all() and out[B[foot], 2] == 0, foot
    assert len(direct) + 2 + len(FEET) == len(BODY_25)
    # Known numbers for the midpoints: shoulders are COCO 5 and 6, hips 11 and 12.
    np.testing.assert_allclose(out[B["Neck"]], [56, 111, 0.30], rtol=1e-6)
    np.testing.assert_allclose(out[B["MidHip"]], [116, 123, 0.60], rtol=1e-6)


def test_coco17_to_body25_scores_batches_and_missing_points():
    kps = coco_pose()
    kps[C["right_shoulder"], 2] = 0.0          # unseen: the shoulder and the Neck go missing
    kps[C["left_knee"], :2] = np.nan            # a NaN position is missing whatever its score
    batch = np.stack([kps, coco_pose()])[None]  # (1, 2, 17, 3)
    out = coco17_to_body25(batch)
    assert out.shape == (1, 2, 25, 3)
    first = out[0, 0]
    for joint in ("RShoulder", "Neck", "LKnee"):
        assert np.isnan(first[B[joint], :2]).all() and first[B[joint], 2] == 0, joint
    np.testing.assert_allclose(first[B["Nose"], 2], keypoint_confidence(kps[C["nose"], 2]))
    second = out[0, 1]
    assert np.isfinite(second[B["Neck"]]).all()
    conf = second[:, 2]
    assert ((conf >= 0) & (conf < 1)).all()
    with pytest.raises(ValueError, match="17, 3"):
        coco17_to_body25(np.zeros((25, 3)))


def test_keypoint_confidence_maps_detectron2_scores_into_unit_interval():
    s = np.array([-3.0, 0.0, np.nan, 0.05, KEYPOINT_SCORE_SCALE, 1.0, 5.0, 1e6], np.float32)
    c = keypoint_confidence(s)
    assert c.dtype == np.float32
    np.testing.assert_allclose(c[:3], 0)
    assert c[3] == pytest.approx(1 / 3)  # detectron2's visualiser threshold -> just above 0.3
    assert c[4] == pytest.approx(0.5)
    assert (np.diff(c[3:]) > 0).all() and (c <= 1).all()


# ---- the main person -------------------------------------------------------------------------

def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]])
    np.testing.assert_allclose(box_iou(a, b)[0], [1, 50 / 150, 0, 0])


def test_select_main_follows_one_person_across_frames():
    main = lambda dx: [100 + dx, 50, 160 + dx, 200]  # noqa: E731 - 60 x 150, the dancer
    other = [0, 0, 50, 120]                           # 50 x 120, a smaller bystander
    big = [300, 0, 420, 240]                          # 120 x 240, someone larger, far away
    boxes = [
        np.array([other, main(0)]),      # 0: the largest box, despite its lower score
        np.array([main(5), other]),      # 1: order changes; IoU follows the dancer
        np.array([big, other, main(10)]),  # 2: a larger person walks in; still the dancer
        np.zeros((0, 4)),                # 3: nobody
        np.array([other, main(12)]),     # 4: back, overlapping the last main box (frame 2)
        np.array([other, big]),          # 5: the dancer is gone: the most prominent again
        np.array([big, other]),          # 6: and followed from there
    ]
    scores = [np.array([0.99, 0.6]), np.array([0.5, 0.99]), np.array([0.99, 0.9, 0.4]),
              np.zeros(0), np.array([0.9, 0.3]), np.array([0.9, 0.8]), np.array([0.8, 0.9])]
    np.testing.assert_array_equal(select_main(boxes, scores), [1, 0, 2, -1, 1, 1, 0])


def test_select_main_ties_and_empty_video():
    same = np.array([[0, 0, 10, 10], [20, 0, 30, 10]])
    assert select_main([same], [np.array([0.5, 0.9])]).tolist() == [1]
    assert select_main([], []).tolist() == []
    t = MainPersonTracker(min_iou=0.3)
    t.follow([20, 0, 30, 10])
    assert t.choose(same, np.array([0.9, 0.1])) == 1


def test_match_to_keypoints_takes_the_box_holding_the_joints():
    boxes = np.array([[0, 0, 50, 100], [40, 0, 100, 100]])
    body = np.full((25, 3), np.nan, np.float32)
    body[:, 2] = 0
    body[:4] = [[60, 10, 0.9], [70, 20, 0.9], [80, 50, 0.8], [45, 60, 0.9]]
    assert match_to_keypoints(boxes, np.array([0.99, 0.5]), body) == 1
    assert match_to_keypoints(boxes, np.array([0.99, 0.5]), body, min_joints=5) == -1
    assert match_to_keypoints(np.zeros((0, 4)), np.zeros(0), body) == -1


# ---- DensePose chart -> frame IUV ------------------------------------------------------------

def chart(h, w, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, N_PARTS + 1, (h, w))
    uv = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
    return labels, uv


def paste_reference(H, W, labels, uv, x0, y0):
    """Pixel by pixel, independently of paste_chart."""
    iuv = np.zeros((H, W, 3), np.uint8)
    h, w = labels.shape
    for r in range(h):
        for c in range(w):
            y, x = y0 + r, x0 + c
            if 0 <= y < H and 0 <= x < W and labels[r, c] > 0:
                iuv[y, x] = [labels[r, c], round(float(uv[0, r, c]) * 255), round(float(uv[1, r, c]) * 255)]
    return iuv


def test_chart_to_frame_iuv_known_answer():
    labels = np.array([[0, 1, 2], [24, 0, 3]])
    uv = np.array([[[0, 0.5, 1], [0.2, 0.9, 0]], [[1, 0, 0.5], [0.4, 0.1, 1]]], np.float32)
    iuv = chart_to_frame_iuv(labels, uv, (2.9, 1.2, 5.9, 3.2), height=4, width=6)
    assert iuv.shape == (4, 6, 3) and iuv.dtype == np.uint8
    expected = np.zeros((4, 6, 3), np.uint8)  # DensePose's origin: int(2.9), int(1.2) = (2, 1)
    expected[1, 3] = [1, 128, 0]
    expected[1, 4] = [2, 255, 128]
    expected[2, 2] = [24, 51, 102]
    expected[2, 4] = [3, 0, 255]
    np.testing.assert_array_equal(iuv, expected)
    assert chart_origin((-3.7, 10.99, 5, 20)) == (-3, 10)


@pytest.mark.parametrize("x0,y0", [
    (-4, 5), (14, 5),     # leaves on the left, on the right
    (5, -6), (5, 12),     # on the top, on the bottom
    (-3, -3), (15, 13),   # two sides at a corner
    (-10, -10),           # larger than the frame: leaves on all four sides
    (-30, 5), (5, 40),    # wholly outside
])
def test_paste_chart_clips_boxes_leaving_the_frame(x0, y0):
    H, W = 16, 20
    labels, uv = chart(15, 12) if (x0, y0) != (-10, -10) else chart(40, 45)
    iuv = paste_chart(np.zeros((H, W, 3), np.uint8), labels, uv, x0, y0)
    np.testing.assert_array_equal(iuv, paste_reference(H, W, labels, uv, x0, y0))


@settings(max_examples=40, deadline=None)
@given(st.integers(-30, 30), st.integers(-30, 30), st.integers(1, 25), st.integers(1, 25), st.integers(0, 9))
def test_paste_chart_matches_the_reference_anywhere(x0, y0, h, w, seed):
    labels, uv = chart(h, w, seed)
    iuv = paste_chart(np.zeros((12, 14, 3), np.uint8), labels, uv, x0, y0)
    np.testing.assert_array_equal(iuv, paste_reference(12, 14, labels, uv, x0, y0))


def test_paste_chart_writes_only_the_person_and_checks_shapes():
    iuv = np.zeros((5, 5, 3), np.uint8)
    iuv[:] = [7, 7, 7]  # someone pasted before
    labels = np.array([[0, 5], [5, 0]])
    paste_chart(iuv, labels, np.zeros((2, 2, 2)), 1, 1)
    assert iuv[1, 1].tolist() == [7, 7, 7] and iuv[1, 2].tolist() == [5, 0, 0]
    with pytest.raises(ValueError, match="uv"):
        paste_chart(iuv, labels, np.zeros((2, 3, 2)), 0, 0)


def test_iuv_index_row_values():
    iuv = np.zeros((4, 5, 3), np.uint8)
    iuv[0, :3, 0] = 1
    iuv[1, :2, 0] = 24
    iuv[3, 4, 0] = 13
    row = iuv_index_row(7, iuv, (1.5, 2.0, 4.0, 3.5), 0.875, n_people=2)
    assert row["frame"] == 7 and row["detected"] is True and row["n_people"] == 2
    assert (row["x0"], row["y0"], row["x1"], row["y1"], row["score"]) == (1.5, 2.0, 4.0, 3.5, 0.875)
    assert row["pixels"] == 6
    counts = {c: row[c] for c in PART_COLUMNS}
    assert counts["part_01"] == 3 and counts["part_24"] == 2 and counts["part_13"] == 1
    assert sum(counts.values()) == 6 and len(counts) == 24
    empty = iuv_index_row(8, np.zeros((4, 5, 3), np.uint8))
    assert empty["detected"] is False and np.isnan(empty["x0"]) and empty["pixels"] == 0
    df = index_frame([row, empty])
    assert {c: str(t) for c, t in df.dtypes.items()} == INDEX_DTYPES
    assert list(index_frame([]).columns) == list(INDEX_DTYPES)
    np.testing.assert_array_equal(part_pixel_counts(iuv), [counts[c] for c in PART_COLUMNS])


def test_label_map_with_iuv_modes():
    label = np.zeros((4, 4, 3), np.uint8)
    label[0, 0] = [255, 0, 0]                     # a drawn limb
    iuv = np.zeros((2, 2, 3), np.uint8)           # half the size: resized by nearest neighbour
    iuv[0, 0] = [24, 200, 100]
    iuv[1, 1] = [3, 10, 20]
    cat = label_map_with_iuv(label, iuv, "concat")
    assert cat.shape == (4, 4, 6) and cat.dtype == np.uint8
    np.testing.assert_array_equal(cat[..., :3], label)
    assert cat[0, 0, 3:].tolist() == [240, 200, 100] and cat[1, 1, 3:].tolist() == [240, 200, 100]
    assert cat[3, 3, 3:].tolist() == [30, 10, 20] and cat[0, 3, 3:].tolist() == [0, 0, 0]
    assert set(np.unique(cat[..., 3])) == {0, 30, 240}  # no blended part indices
    over = label_map_with_iuv(label, iuv, "overlay")
    assert over.shape == (4, 4, 3)
    assert over[0, 0].tolist() == [255, 0, 0]       # the skeleton is drawn over the IUV
    assert over[1, 1].any() and over[3, 3].any() and not over[0, 3].any()
    assert label_map_with_iuv(label, iuv, "none") is label
    with pytest.raises(ValueError, match="concat"):
        label_map_with_iuv(label, iuv, "stack")


# ---- the IUV store ---------------------------------------------------------------------------

def iuv_chunk(tmp_path, name, start, n, h=6, w=8, seen=()):
    """A pose chunk as extract_pose writes it with the densepose back end (keypoints + extras);
    the body is seen in the chunk's frames `seen`."""
    from steps.prepare.pose import write_chunk

    iuv = np.zeros((n, h, w, 3), np.uint8)
    rows = []
    for f in range(n):
        iuv[f, f % h, :3] = [start + f + 1, 10, 20]
        rows.append(iuv_index_row(f, iuv[f], (0, f % h, 3, f % h + 1), 0.9, 1))
    parts = keypoints_to_parts([np.zeros((0, 4))] * n, [np.zeros(0)] * n, [np.zeros((0, 17, 3))] * n)
    for f in seen:
        parts["body"][f, :, :] = [10, 10, 0.9]
    path = tmp_path / name
    write_chunk(path, {**parts, "iuv": iuv, "iuv_index": index_frame(rows).to_records(index=False)}, start)
    return str(path), iuv


def test_iuv_store_merges_chunks_in_order(tmp_path):
    c1, a1 = iuv_chunk(tmp_path, "0001.npz", 3, 2)
    c0, a0 = iuv_chunk(tmp_path, "0000.npz", 0, 3)
    out = merge_chunks([c1, c0], tmp_path / "store", {"subject": "alice"})
    iuv, index = load_iuv(out)
    assert isinstance(iuv, np.memmap) and iuv.shape == (5, 6, 8, 3)
    np.testing.assert_array_equal(iuv, np.concatenate([a0, a1]))
    assert index["frame"].tolist() == [0, 1, 2, 3, 4]
    assert index["part_04"].tolist() == [0, 0, 0, 3, 0] and (index["pixels"] == 3).all()
    assert {c: str(t) for c, t in index.dtypes.items()} == INDEX_DTYPES
    import json

    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(out / "index.parquet").metadata[b"edn"])
    assert meta["subject"] == "alice" and meta["frames"] == 5 and meta["parts"]["part_23"] == "head_right"
    assert not [p for p in (tmp_path / "store").iterdir() if p.name.startswith(".")]


def test_iuv_store_keeps_only_the_pose_tables_person(tmp_path):
    c0, a0 = iuv_chunk(tmp_path, "0000.npz", 0, 4, seen=(0, 1, 2))
    body = np.zeros((4, 25, 3), np.float32)
    body[0, :, 2] = 0.9  # merge_pose kept frame 0's person and dropped frames 1 and 2 (someone else)
    iuv, index = load_iuv(merge_chunks([c0], tmp_path / "store", pose_body=body))
    np.testing.assert_array_equal(iuv[[0, 3]], a0[[0, 3]])  # frame 3: no keypoints, IUV kept
    assert not iuv[1:3].any()
    assert index["dropped"].tolist() == [False, True, True, False]
    assert index["detected"].tolist() == [True, False, False, True]
    assert index["pixels"].tolist() == [3, 0, 0, 3] and index.loc[1, PART_COLUMNS].sum() == 0


def test_iuv_store_rejects_gaps_and_chunks_without_iuv(tmp_path):
    from steps.prepare.pose import write_chunk

    c0, _ = iuv_chunk(tmp_path, "0000.npz", 0, 3)
    c2, _ = iuv_chunk(tmp_path, "0002.npz", 4, 2)
    with pytest.raises(ValueError, match="gap at frame 3"):
        merge_chunks([c0, c2], tmp_path / "store")
    assert not (tmp_path / "store" / "iuv.npy").exists()
    plain = tmp_path / "plain.npz"
    write_chunk(plain, keypoints_to_parts([], [], []), 0)
    with pytest.raises(ValueError, match="no DensePose IUV"):
        merge_chunks([str(plain)], tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="iuv.npy"):
        load_iuv(tmp_path / "nothing")


# ---- keypoints -> the pose table -------------------------------------------------------------

def test_keypoint_detections_make_a_valid_pose_table(tmp_path):
    from test_posetable import assert_pose_table_schema

    a, b = coco_pose(np.full(17, 2.0)), coco_pose(np.full(17, 0.01))
    b[:, :2] += 300  # a second person far away, in a smaller box
    boxes = [np.array([[0, 90, 170, 140], [300, 390, 320, 400]]), np.zeros((0, 4)),
             np.array([[300, 390, 320, 400], [1, 91, 171, 141]])]
    parts = keypoints_to_parts(boxes, [np.array([0.9, 0.95]), np.zeros(0), np.array([0.95, 0.9])],
                               [np.stack([a, b]), np.zeros((0, 17, 3)), np.stack([b, a])])
    assert {k: v.shape for k, v in parts.items()} == {
        "body": (3, 25, 3), "face": (3, N_FACE, 3), "left_hand": (3, 21, 3), "right_hand": (3, 21, 3)}
    assert all(v.dtype == np.float32 for v in parts.values())
    np.testing.assert_array_equal(parts["body"][2], parts["body"][0])  # the same person, both frames
    np.testing.assert_allclose(parts["body"][0, B["Nose"]], [1, 100, 2 / 2.1], rtol=1e-6)
    assert np.isnan(parts["body"][1, :, :2]).all() and (parts["body"][1, :, 2] == 0).all()
    for p in ("face", "left_hand", "right_hand"):
        assert np.isnan(parts[p][..., :2]).all() and (parts[p][..., 2] == 0).all()
    pose = PoseArrays(parts, np.arange(3, dtype=np.float32) / 15, PoseMeta("d2", 640, 480, 15.0, "detectron2_keypoints"))
    write_pose(pose, tmp_path / "d2.parquet")
    assert_pose_table_schema(tmp_path / "d2.parquet", 3)


# ---- back-end selection and its errors -------------------------------------------------------

def test_registry_and_unknown_backend():
    assert {"mediapipe", "detectron2_keypoints", "densepose"} <= set(BACKENDS)
    with pytest.raises(BackendUnavailable, match="unknown pose backend 'nope'.*detectron2_keypoints"):
        get_backend("nope")


def test_the_docs_the_errors_point_to_exist():
    text = (ROOT / DOCS).read_text()
    for needle in ("keypoint_rcnn_R_50_FPN_3x", "densepose_rcnn_R_50_FPN_s1x", "projects/DensePose",
                   "config_file", "weights"):
        assert needle in text


@pytest.mark.skipif(HAVE_D2, reason="detectron2 is installed here: the not-installed error cannot occur")
@pytest.mark.parametrize("name", ["detectron2_keypoints", "densepose"])
def test_detectron2_backends_name_the_missing_package_and_the_docs(tmp_path, name):
    cfg, weights = tmp_path / "c.yaml", tmp_path / "w.pkl"
    cfg.write_text("MODEL: {}\n")
    weights.write_bytes(b"")
    with pytest.raises(BackendUnavailable) as e:
        get_backend(name, {"config_file": str(cfg), "weights": str(weights)})
    msg = str(e.value)
    assert "the package detectron2 is not installed" in msg and "docs/detectron2.md" in msg
    assert "does not exist" not in msg  # the files are there: only the package is named
    if name == "densepose":
        assert "the package densepose is not installed" in msg and "projects/DensePose" in msg


@pytest.mark.parametrize("name,key", [("detectron2_keypoints", "pose.detectron2"), ("densepose", "pose.densepose")])
def test_missing_config_and_weights_files_are_named(tmp_path, name, key):
    with pytest.raises(BackendUnavailable) as e:
        get_backend(name, {"config_file": str(tmp_path / "nope.yaml"), "weights": str(tmp_path / "nope.pkl")})
    msg = str(e.value)
    assert f"config file {tmp_path / 'nope.yaml'} ({key}.config_file) does not exist" in msg
    assert f"weights file {tmp_path / 'nope.pkl'} ({key}.weights) does not exist" in msg
    assert DOCS in msg
    with pytest.raises(BackendUnavailable, match=rf"{key}.config_file is not set.*{key}.weights is not set"):
        get_backend(name, {})


def test_densepose_keypoints_must_come_from_a_keypoint_backend():
    with pytest.raises(BackendUnavailable, match="keypoint back end"):
        get_backend("densepose", {"keypoints": "densepose"})


def test_backend_options_from_the_config():
    pose = {"backend": "densepose", "min_detection_confidence": 0.6, "min_tracking_confidence": 0.4,
            "detectron2": {"config_file": "k.yaml", "weights": "k.pkl", "device": "cpu"},
            "densepose": {"config_file": "d.yaml", "weights": "d.pkl", "keypoints": "detectron2_keypoints"}}
    assert backend_options(pose, "mediapipe") == {"min_detection_confidence": 0.6, "min_tracking_confidence": 0.4}
    d2 = backend_options(pose, "detectron2_keypoints")
    assert d2["config_file"] == "k.yaml" and d2["device"] == "cpu" and d2["score_threshold"] == 0.5
    dp = backend_options(pose)
    assert dp["config_file"] == "d.yaml" and dp["keypoint_options"] == d2
    assert backend_options({"backend": "densepose"})["keypoint_options"]["min_detection_confidence"] == 0.5


# ---- integration with real detectron2 (skipped where it is not installed) --------------------

def random_model_files(tmp_path, base_config: str, setup=None):
    """A config and weights file of a randomly initialised model (nothing downloaded)."""
    import torch
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    cfg = get_cfg()
    if setup:
        setup(cfg)
    cfg.merge_from_file(base_config)
    cfg.MODEL.DEVICE, cfg.MODEL.WEIGHTS = "cpu", ""
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 128, 160  # small and fast
    torch.manual_seed(0)
    model = build_model(cfg)
    weights = tmp_path / "random.pth"
    torch.save({"model": model.state_dict()}, weights)
    config = tmp_path / "config.yaml"
    config.write_text(cfg.dump())
    return str(config), str(weights)


def frames(n=3, h=96, w=128):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.skipif(not HAVE_D2, reason="detectron2 is not installed (not on PyPI; see docs/detectron2.md)")
def test_keypoint_rcnn_random_model_writes_the_pose_table(tmp_path):
    from detectron2 import model_zoo
    from test_posetable import assert_pose_table_schema

    config, weights = random_model_files(tmp_path, model_zoo.get_config_file("COCO-Keypoints/keypoint_rcnn_R_50_FPN_1x.yaml"))
    backend = get_backend("detectron2_keypoints", {"config_file": config, "weights": weights,
                                                   "device": "cpu", "score_threshold": 0.0})
    parts = backend.extract(frames())
    assert parts["body"].shape == (3, 25, 3) and parts["face"].shape == (3, N_FACE, 3)
    for foot in FEET:
        assert (parts["body"][:, B[foot], 2] == 0).all()
    pose = PoseArrays(parts, np.arange(3, dtype=np.float32), PoseMeta("rand", 128, 96, 1.0, "detectron2_keypoints"))
    write_pose(pose, tmp_path / "rand.parquet")
    assert_pose_table_schema(tmp_path / "rand.parquet", 3)


def densepose_config() -> str:
    import densepose

    path = Path(densepose.__file__).resolve().parents[1] / "configs" / "densepose_rcnn_R_50_FPN_s1x.yaml"
    if not path.exists():
        pytest.skip(f"DensePose's configs are not beside the installed package ({path} is absent): "
                    "install densepose from a source checkout (pip install -e detectron2/projects/DensePose)")
    return str(path)


@pytest.mark.skipif(not (HAVE_D2 and HAVE_DP),
                    reason="detectron2 and densepose are not installed (not on PyPI; see docs/detectron2.md)")
def test_densepose_random_model_writes_the_iuv_store(tmp_path):
    from densepose import add_densepose_config
    from test_posetable import assert_pose_table_schema

    from steps.prepare.pose import write_chunk

    config, weights = random_model_files(tmp_path, densepose_config(), add_densepose_config)
    backend = get_backend("densepose", {"config_file": config, "weights": weights, "device": "cpu",
                                        "score_threshold": 0.0, "keypoints": "mediapipe",
                                        "keypoint_options": backend_options({}, "mediapipe")})
    parts = backend.extract(frames())
    pose = PoseArrays(parts, np.arange(3, dtype=np.float32), PoseMeta("rand", 128, 96, 1.0, "densepose"))
    write_pose(pose, tmp_path / "rand.parquet")
    assert_pose_table_schema(tmp_path / "rand.parquet", 3)
    extras = backend.chunk_extras()
    assert extras["iuv"].shape == (3, 96, 128, 3) and extras["iuv"][..., 0].max() <= 24
    write_chunk(tmp_path / "0000.npz", {**parts, **extras}, 0)
    iuv, index = load_iuv(merge_chunks([str(tmp_path / "0000.npz")], tmp_path / "store"))
    assert iuv.shape == (3, 96, 128, 3) and index["frame"].tolist() == [0, 1, 2]
    assert {c: str(t) for c, t in index.dtypes.items()} == INDEX_DTYPES
    assert (index["pixels"] == index[PART_COLUMNS].sum(axis=1)).all()


def test_fit_scale_shift_and_warp_iuv_follow_a_normalized_pose():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 60, (25, 2))
    src[3] = np.nan                                  # a missing joint is ignored
    dst = 2 * src + [5, -3]
    dst[7] = np.nan
    s, t = fit_scale_shift(src, dst)
    assert s == pytest.approx(2) and t == pytest.approx([5, -3])
    assert fit_scale_shift(src[:1], dst[:1]) is None
    assert fit_scale_shift(np.ones((4, 2)), np.ones((4, 2))) is None
    iuv = np.zeros((20, 20, 3), np.uint8)
    iuv[2:4, 3:5] = [7, 100, 200]                    # a 2 x 2 patch of part 7
    out = warp_iuv(iuv, 2.0, (1.5, 0.5), 24, 30)   # no pixel centre on a pixel edge: no ties
    assert out.shape == (24, 30, 3)
    ys, xs = np.nonzero(out[..., 0])
    assert set(map(tuple, out[ys, xs])) == {(7, 100, 200)}  # values kept, not blended
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (4, 7, 7, 10)  # rows [1.5, 3.5] -> [3.5, 7.5]


def test_merge_cli_writes_the_store_and_names_the_subject_on_error(tmp_path):
    import subprocess
    import sys

    c0, a0 = iuv_chunk(tmp_path, "0000.npz", 0, 2)
    c1, a1 = iuv_chunk(tmp_path, "0001.npz", 2, 2)
    run = lambda *chunks: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "steps.prepare.backends.densepose", "merge", *chunks, "--out-dir",
         str(tmp_path / "store"), "--subject", "bob"], cwd=ROOT, capture_output=True, text=True)
    r = run(c0, c1)
    assert r.returncode == 0, r.stderr
    iuv, index = load_iuv(tmp_path / "store")
    np.testing.assert_array_equal(iuv, np.concatenate([a0, a1]))
    assert "4 frames" in r.stderr
    r = run(c1)
    assert r.returncode != 0 and "merge_densepose: subject 'bob'" in r.stderr and "gap at frame 0" in r.stderr


def test_label_previews_show_the_iuv_under_the_skeleton(tmp_path):
    """steps.prepare.labels --iuv (what render_labels runs with labels.iuv: overlay): the preview frames
    are the coloured IUV where the person is, the skeleton on top, black elsewhere."""
    import subprocess
    import sys

    import av

    from steps.prepare.backends.convert import iuv_colour
    from steps.prepare.labels import render_label_map
    from steps.prepare.posetable import empty_arrays

    n, h, w = 4, 64, 64
    pose = empty_arrays(n, PoseMeta("iuv", w, h, 10.0, "test"))
    pose.parts["body"][:, B["Neck"]] = (32, 20, 1.0)
    pose.parts["body"][:, B["MidHip"]] = (32, 44, 1.0)
    write_pose(pose, tmp_path / "pose.parquet")
    iuv = np.zeros((n, h, w, 3), np.uint8)
    iuv[:, 10:54, 8:24] = (3, 100, 200)      # an arm-like patch beside the skeleton
    np.save(tmp_path / "iuv.npy", iuv)
    cmd = [sys.executable, "-m", "steps.prepare.labels", "--pose", str(tmp_path / "pose.parquet"),
           "--settings", '{"thickness": 2, "face": false, "hands": false}', "--iuv", str(tmp_path / "iuv.npy"), "--out", str(tmp_path / "p.mp4")]
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    with av.open(str(tmp_path / "p.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == n
    patch = iuv_colour(iuv[0])[30, 16].astype(int)
    assert np.abs(frames[0][20:44, 12:20].reshape(-1, 3).mean(0) - patch).max() < 12   # the IUV colour
    skeleton = render_label_map(pose, 0, h, w, 2, False, False)
    assert np.abs(frames[0][28:36, 32:34].astype(int) - skeleton[28:36, 32:34]).mean() < 12  # skeleton on top
    assert frames[0][:, 40:].max() < 30  # background stays black
    np.save(tmp_path / "short.npy", iuv[:2])
    bad = subprocess.run(cmd[:-4] + ["--iuv", str(tmp_path / "short.npy"), "--out", str(tmp_path / "q.mp4")],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "has 2 IUV images but" in bad.stderr and not (tmp_path / "q.mp4").exists()


def test_iuv_previews_need_the_densepose_backend(tmp_path):
    from conftest import snakemake, write_config

    (tmp_path / "a.mp4").write_bytes(b"")
    write_config(tmp_path, {"subjects": {"a": {"video": str(tmp_path / "a.mp4")}}, "labels": {"iuv": "overlay"}})
    r = snakemake(tmp_path, "-n", check=False)
    assert r.returncode != 0
    assert "labels.iuv: 'overlay' needs DensePose's IUV images, but pose.backend is 'mediapipe'" in r.stdout

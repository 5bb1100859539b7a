"""The pose table's schema, its round trip through Parquet, and the BODY_25 mapping."""
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from steps.prepare.backends.mediapipe import MP, mediapipe_to_body25
from steps.prepare.posetable import (B, BODY_25, N_FACE, PARTS, PoseMeta, PoseTableError, empty_arrays,
                             read_meta, read_pose, table_to_arrays, write_pose)

DTYPES = {"frame": "int32", "time_s": "float32", "person": "int8", "part": "category",
          "joint": "int16", "name": "category", "x": "float32", "y": "float32",
          "confidence": "float32"}


def random_pose(n=6, seed=0):
    rng = np.random.default_rng(seed)
    pose = empty_arrays(n, PoseMeta("alice", 320, 240, 15.0, "test"))
    for part, arr in pose.parts.items():
        arr[..., 0] = rng.uniform(0, 320, arr.shape[:2])
        arr[..., 1] = rng.uniform(0, 240, arr.shape[:2])
        arr[..., 2] = rng.uniform(0.1, 1, arr.shape[:2])
    pose.parts["left_hand"][2] = [np.nan, np.nan, 0]  # a missed hand in frame 2
    return pose


def assert_pose_table_schema(path, n_frames):
    """Every Parquet pose output must pass this: columns, dtypes, all frames, metadata."""
    df = pd.read_parquet(path)
    assert list(df.columns[:9]) == list(DTYPES)
    for col, dtype in DTYPES.items():
        assert str(df[col].dtype) == dtype, col
    assert sorted(df["frame"].unique()) == list(range(n_frames))
    per_frame = sum(len(v) for v in PARTS.values())
    assert (df.groupby("frame").size() == per_frame).all()
    assert set(df["part"].cat.categories) == set(PARTS)
    missing = df["x"].isna()
    assert (df.loc[missing, "confidence"] == 0).all()
    meta = read_meta(path)
    for key in ("subject", "width", "height", "fps", "backend", "skeleton"):
        assert getattr(meta, key) not in (None, "")
    return df


def test_round_trip_keeps_values_schema_and_metadata(tmp_path):
    pose = random_pose()
    path = tmp_path / "alice.parquet"
    write_pose(pose, path)
    df = assert_pose_table_schema(path, 6)
    assert df[(df.frame == 2) & (df.part == "left_hand")]["x"].isna().all()
    back = read_pose(path)
    for part in PARTS:
        np.testing.assert_array_equal(back.parts[part], np.where(np.isnan(pose.parts[part]), np.nan, pose.parts[part]))
    assert back.meta.subject == "alice" and back.meta.width == 320 and back.meta.fps == 15.0
    names = df[(df.frame == 0) & (df.part == "body")]["name"].tolist()
    assert names == BODY_25
    assert len(df[(df.frame == 0) & (df.part == "face")]) == N_FACE


def test_a_table_with_a_missing_frame_is_rejected():
    pose = random_pose(4)
    from steps.prepare.posetable import arrays_to_table
    df = arrays_to_table(pose)
    with pytest.raises(PoseTableError, match="bad.parquet"):
        table_to_arrays(df[df.frame != 1], pose.meta, "bad.parquet")


def test_write_leaves_no_temporary_files(tmp_path):
    write_pose(random_pose(), tmp_path / "a.parquet")
    assert [p.name for p in tmp_path.iterdir()] == ["a.parquet"]
    assert pq.read_metadata(tmp_path / "a.parquet").num_rows == 6 * sum(len(v) for v in PARTS.values())


def test_body25_mapping_from_known_mediapipe_landmarks():
    lm = np.zeros((33, 3), np.float32)
    lm[:, 0] = np.arange(33) * 10.0      # x encodes the landmark index
    lm[:, 1] = 1000 + np.arange(33)
    lm[:, 2] = np.linspace(0.5, 1.0, 33)
    body = mediapipe_to_body25(lm)
    single = {"Nose": "nose", "RShoulder": "right_shoulder", "LShoulder": "left_shoulder",
              "RElbow": "right_elbow", "LElbow": "left_elbow", "RWrist": "right_wrist",
              "LWrist": "left_wrist", "RHip": "right_hip", "LHip": "left_hip",
              "RKnee": "right_knee", "LKnee": "left_knee", "RAnkle": "right_ankle",
              "LAnkle": "left_ankle", "REye": "right_eye", "LEye": "left_eye", "REar": "right_ear",
              "LEar": "left_ear", "LHeel": "left_heel", "RHeel": "right_heel",
              "LBigToe": "left_foot_index", "RBigToe": "right_foot_index",
              "LSmallToe": "left_foot_index", "RSmallToe": "right_foot_index"}
    for j, m in single.items():
        np.testing.assert_allclose(body[B[j]], lm[MP[m]], err_msg=j)
    # Neck and MidHip are midpoints, with the weaker of the two confidences
    np.testing.assert_allclose(body[B["Neck"], :2], (lm[11, :2] + lm[12, :2]) / 2)
    np.testing.assert_allclose(body[B["MidHip"], :2], (lm[23, :2] + lm[24, :2]) / 2)
    assert body[B["Neck"], 2] == pytest.approx(min(lm[11, 2], lm[12, 2]))
    assert body[B["MidHip"], 2] == pytest.approx(min(lm[23, 2], lm[24, 2]))


def test_a_long_table_round_trips_by_row_groups_and_another_row_order_still_reads(tmp_path):
    """2,500 frames: three Parquet row groups, read back exactly; the same rows in another order
    (a table written by other code) take the general path to the same arrays."""
    from steps.prepare.posetable import ROW_GROUP_FRAMES, arrays_to_table

    pose = random_pose(2500, seed=3)
    write_pose(pose, tmp_path / "p.parquet")
    assert pq.ParquetFile(tmp_path / "p.parquet").num_row_groups == -(-2500 // ROW_GROUP_FRAMES)
    back = read_pose(tmp_path / "p.parquet")
    for part in PARTS:
        np.testing.assert_array_equal(back.parts[part], pose.parts[part])
    np.testing.assert_array_equal(back.time_s, pose.time_s)
    shuffled = arrays_to_table(random_pose(40, seed=4)).sample(frac=1, random_state=0)
    table = __import__("pyarrow").Table.from_pandas(shuffled, preserve_index=False)
    pq.write_table(table.replace_schema_metadata({b"edn": pose.meta.to_json()}), tmp_path / "s.parquet")
    again = read_pose(tmp_path / "s.parquet")
    for part in PARTS:
        np.testing.assert_array_equal(again.parts[part], random_pose(40, seed=4).parts[part])


RULE_CALLS = {  # each pose rule's own entry point on the folder D (made by long_poses)
    "merge_pose": "from steps.prepare.pose import merge_chunks; from steps.prepare.posetable import PoseMeta; "
                  "import glob; merge_chunks(sorted(glob.glob(D + '/c*.npz')), PoseMeta('alice', 320, 240, 30.0, "
                  "'test'), 0.1, 'v', 0.5, D + '/merged.parquet')",
    "smooth_pose": "from steps.prepare.smooth import main; main(['--pose', D + '/p.parquet', '--out', D + '/s.parquet'])",
    "subject_stats": "from steps.prepare.stats import main; main(['--pose', D + '/p.parquet', '--json', D + '/s.json', "
                     "'--table', D + '/s_frames.parquet', '--plot', D + '/s.png', '--coverage-plot', D + '/c.png'])",
    "normalize_pose": "from steps.prepare.normalize import main; main(['--pose', D + '/p.parquet', '--source-stats', "
                      "D + '/st.json', '--target-stats', D + '/st.json', '--out', D + '/n.parquet'])",
    "render_labels": "from steps.prepare.labels import main; main(['--pose', D + '/p.parquet', '--out', D + '/l.mp4', "
                     "'--settings', '{\"face\": false, \"hands\": false}'])",  # the random faces and hands: slow
}
LENGTHS = (3000, 18000)  # frames: 100 s and 10 minutes at 30 fps (past the allocators' warm-up)


@pytest.fixture(scope="module")
def long_poses(tmp_path_factory):
    """For each length: random poses as extract_pose's chunks (300 frames) and as a pose table, and
    statistics to normalize them with."""
    import dataclasses
    import json

    from steps.prepare.stats import compute_stats, per_frame

    out = {}
    for n in LENGTHS:
        d = tmp_path_factory.mktemp(f"poses{n}")
        pose = random_pose(n, seed=n)
        for k, lo in enumerate(range(0, n, 300)):
            np.savez(d / f"c{k:04d}.npz", start=lo, **{p: a[lo:lo + 300] for p, a in pose.parts.items()})
        write_pose(pose, d / "p.parquet")
        (d / "st.json").write_text(json.dumps(dataclasses.asdict(compute_stats(per_frame(pose), "alice", 320, 240))))
        out[n] = d
    return out


@pytest.mark.parametrize("rule", list(RULE_CALLS))
def test_a_pose_rules_memory_does_not_grow_with_the_video(rule, long_poses):
    """Each pose rule on 100 s and on 10 minutes of poses (30 fps): its process's peak resident
    memory grows by less than a fifth. The 10 minutes' arrays are 115 MB: a rule holding one more
    copy of them than on the short video would grow by about half."""
    import subprocess
    import sys

    peaks = []
    for n in LENGTHS:
        # VmHWM: this process's own peak (ru_maxrss would start from the parent's, kept across exec)
        code = (f"D = {str(long_poses[n])!r}; {RULE_CALLS[rule]}; "
                "print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        peaks.append(int(r.stdout.split()[-1]) / 1024)
    print(f"{rule}: peak {peaks[0]:.0f} MB on {LENGTHS[0]} frames, {peaks[1]:.0f} MB on {LENGTHS[1]}")
    assert peaks[1] < 1.2 * peaks[0], f"{rule}: peak {peaks[0]:.0f} MB on {LENGTHS[0]} frames, {peaks[1]:.0f} MB on {LENGTHS[1]}"

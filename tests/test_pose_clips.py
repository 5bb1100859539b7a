"""The real detector on real people (../shared/data/clips; skipped when absent)."""
import numpy as np
import pytest

from steps.prepare.frames import decode_frames
from steps.prepare.framestore import open_frames
from steps.prepare.pose import detection_rates, extract_arrays
from steps.prepare.posetable import B

from conftest import clip


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dancer_source.mp4", "model_target_small.mp4"])
def test_person_and_ankles_found_in_real_clips(name, tmp_path):
    decode_frames(str(clip(name)), tmp_path, fps=10, width=256, height=256, end=6.0, progress=False)
    frames = open_frames(tmp_path)[:]
    pose = extract_arrays(frames, 10, name)
    rates = detection_rates(pose)
    assert rates["person"] >= 0.95 and rates["ankles"] >= 0.90, rates
    body = pose.parts["body"]
    seen = body[:, :, 2] > 0.5
    # a standing person: nose above neck above mid-hip above the ankles, left/right hands at
    # the matching wrists (holistic's left hand is the person's left)
    for upper, lower in [("Nose", "Neck"), ("Neck", "MidHip"), ("MidHip", "LAnkle")]:
        ok = seen[:, B[upper]] & seen[:, B[lower]]
        assert (body[ok, B[upper], 1] < body[ok, B[lower], 1]).mean() > 0.95
    for side, wrist in [("left_hand", "LWrist"), ("right_hand", "RWrist")]:
        hand = pose.parts[side]
        ok = (hand[:, 0, 2] > 0) & seen[:, B[wrist]]
        if ok.sum() >= 5:
            d = np.linalg.norm(hand[ok, 0, :2] - body[ok, B[wrist], :2], axis=1)
            assert np.median(d) < 10, (side, np.median(d))

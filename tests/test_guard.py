"""CollapseGuard: rewind only when D wins AND the held-out metric gets worse; stop after
max_returns; the state survives a JSON round trip."""
from __future__ import annotations

import json

from steps.gan.guard import CollapseGuard, GuardConfig

CFG = GuardConfig(d_floor=0.05, window=10, patience=2, max_returns=2, lr_factor=0.5)


def run(guard: CollapseGuard, trace: list[tuple[float, float]], start: int = 100, every: int = 100) -> list:
    """Feed (loss_D for `every` steps, then a validation metric) pairs; return the verdicts."""
    verdicts = []
    for i, (loss_d, metric) in enumerate(trace):
        for _ in range(every):
            guard.observe_loss_d(loss_d)
        verdicts.append(guard.observe_val(start + i * every, metric))
    return verdicts


def test_healthy_run_is_only_ok_and_tracks_the_best():
    g = CollapseGuard(CFG)
    verdicts = run(g, [(0.3, 0.20), (0.25, 0.18), (0.35, 0.15), (0.3, 0.14)])
    assert [v.action for v in verdicts] == ["ok"] * 4
    assert all(v.message == "" and v.lr_scale == 1.0 for v in verdicts)
    assert (g.best_step, g.best_metric) == (400, 0.14) and verdicts[-1].best_step == 400


def test_collapse_rewinds_to_the_best_then_stops():
    g = CollapseGuard(CFG)
    # healthy to step 300 (best 0.10), then D wins and the metric rises for `patience` evaluations
    v = run(g, [(0.3, 0.14), (0.3, 0.12), (0.3, 0.10), (0.001, 0.12), (0.001, 0.19)])
    assert [x.action for x in v] == ["ok"] * 4 + ["rewind"]
    assert v[-1].best_step == 300 and v[-1].lr_scale == 0.5
    assert "going back to step 300" in v[-1].message and "0.12 -> 0.19" in v[-1].message
    assert "return 1 of 2" in v[-1].message

    v = run(g, [(0.001, 0.13), (0.001, 0.14)], start=400)  # collapses again after the rewind
    assert [x.action for x in v] == ["ok", "rewind"] and v[-1].lr_scale == 0.25

    v = run(g, [(0.001, 0.13), (0.001, 0.14)], start=400)
    assert [x.action for x in v] == ["ok", "stop"]
    assert v[-1].best_step == 300 and v[-1].lr_scale == 0.25
    assert "best model (ST-LPIPS 0.1 at step 300) is kept" in v[-1].message


def test_rewind_clears_the_loss_window():
    g = CollapseGuard(CFG)
    run(g, [(0.3, 0.10), (0.001, 0.12), (0.001, 0.19)])
    assert len(g.losses) == 0 and not g.d_winning()
    # the metric stays worse, but fewer than `window` steps after the rewind is not winning
    assert run(g, [(0.001, 0.2), (0.001, 0.2)], every=4)[-1].action == "ok"


def test_d_winning_but_metric_improving_is_ok():
    v = run(CollapseGuard(CFG), [(0.001, 0.20), (0.001, 0.18), (0.001, 0.15), (0.001, 0.12)])
    assert [x.action for x in v] == ["ok"] * 4


def test_metric_worse_but_d_balanced_is_ok():
    g = CollapseGuard(CFG)
    v = run(g, [(0.3, 0.10), (0.3, 0.12), (0.3, 0.15), (0.3, 0.19)])
    assert [x.action for x in v] == ["ok"] * 4 and all(x.message == "" for x in v)
    assert g.best_step == 100


def test_window_only_counts_the_last_steps():
    g = CollapseGuard(GuardConfig(window=5, d_floor=0.05))
    for loss in [0.001] * 4:
        g.observe_loss_d(loss)
    assert not g.d_winning()              # fewer steps than the window: not winning
    g.observe_loss_d(0.001)
    assert g.d_winning()
    for loss in [0.4] * 3 + [0.001] * 2:  # old low losses fall out of the window
        g.observe_loss_d(loss)
    assert len(g.losses) == 5 and not g.d_winning()


def test_state_dict_round_trip_gives_the_same_verdicts():
    head = [(0.3, 0.14), (0.3, 0.10), (0.001, 0.12)]
    tail = [(0.001, 0.19), (0.001, 0.13), (0.001, 0.14), (0.001, 0.15), (0.001, 0.16)]
    a = CollapseGuard(CFG)
    run(a, head)
    for loss in [0.002, 0.003]:  # a partly filled window after the last validation
        a.observe_loss_d(loss)
    b = CollapseGuard(CFG)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    va, vb = run(a, tail, start=400), run(b, tail, start=400)
    assert va == vb and [v.action for v in va] == ["rewind", "ok", "rewind", "ok", "stop"]
    assert a.state_dict() == b.state_dict()


def test_fresh_state_is_json():
    g = CollapseGuard(CFG)
    assert json.loads(json.dumps(g.state_dict()))["best_step"] is None

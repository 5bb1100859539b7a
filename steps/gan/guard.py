"""CollapseGuard: notice a discriminator that wins outright and go back to the best model.

On a short target video D can learn to tell every real frame from every fake one. Its LSGAN loss
(0.5 * (real + fake), about 0.2-0.5 in a balanced run) then sinks towards 0, G gets useless
gradients and the held-out metric (ST-LPIPS, lower is better) gets worse. Either sign alone is
not enough: D may be ahead for a while as G still improves, and the metric is noisy. So:
- D is winning when the mean loss_D over the last `window` steps is below `d_floor` (fewer steps
  seen than `window` is not winning),
- the metric is getting worse when it has been worse than the best for `patience` validations,
- both at once: "rewind" to the best step with the learning rate times `lr_factor`, at most
  `max_returns` times; after that "stop" (the best model is kept).
The guard also keeps the best (step, metric), so the caller asks it which checkpoint is best.
Pure logic, no torch; its state is plain JSON so a resumed run keeps it.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class GuardConfig:
    d_floor: float = 0.05      # mean loss_D below this = D is winning (balanced: ~0.2-0.5)
    window: int = 200          # steps of loss_D averaged
    patience: int = 2          # consecutive validations worse than the best
    max_returns: int = 2       # rewinds before giving up
    lr_factor: float = 0.5     # learning rate multiplier per rewind
    metric: str = "ST-LPIPS"   # the held-out metric's name, for messages


@dataclass
class Verdict:
    action: str                # "ok" | "rewind" | "stop"
    message: str               # empty for "ok"
    best_step: int | None      # the step to go back to / the best model to keep
    lr_scale: float            # cumulative learning rate multiplier to use from now on


class CollapseGuard:
    def __init__(self, cfg: GuardConfig):
        self.cfg = cfg
        self.losses: deque[float] = deque(maxlen=cfg.window)
        self._best_step: int | None = None
        self._best_metric: float | None = None
        self.worse = 0                         # consecutive validations worse than the best
        self.first_worse: float | None = None  # the metric when the current worse run began
        self.returns = 0
        self.lr_scale = 1.0

    @property
    def best_step(self) -> int | None:
        return self._best_step

    @property
    def best_metric(self) -> float | None:
        return self._best_metric

    def observe_loss_d(self, loss_d: float) -> None:
        self.losses.append(float(loss_d))

    def mean_loss_d(self) -> float | None:
        """Mean loss_D over a full window, None until `window` steps are seen."""
        if len(self.losses) < self.cfg.window:
            return None
        return sum(self.losses) / len(self.losses)

    def d_winning(self) -> bool:
        mean = self.mean_loss_d()
        return mean is not None and mean < self.cfg.d_floor

    def observe_val(self, step: int, metric: float) -> Verdict:
        metric = float(metric)
        if self._best_metric is None or metric < self._best_metric:
            self._best_step, self._best_metric = int(step), metric
            self.worse, self.first_worse = 0, None
        elif metric > self._best_metric:
            self.worse += 1
            self.first_worse = metric if self.first_worse is None else self.first_worse
        else:  # a tie is not worse: it ends the run of worse evaluations
            self.worse, self.first_worse = 0, None
        if not (self.d_winning() and self.worse >= self.cfg.patience):
            return self.verdict("ok", "")
        why = self.explain(metric)
        if self.returns >= self.cfg.max_returns:
            return self.verdict("stop", f"{why}, and training already went back {self.returns} times (the most "
                                        f"allowed): stopping; the best model ({self.cfg.metric} "
                                        f"{self._best_metric:.4g} at step {self._best_step}) is kept")
        self.returns += 1
        self.lr_scale *= self.cfg.lr_factor
        self.worse, self.first_worse = 0, None
        self.losses.clear()  # give the rewound run a full window before judging D again
        return self.verdict("rewind", f"{why}: going back to step {self._best_step} with the learning rate "
                                      f"multiplied by {self.cfg.lr_factor:g} (now {self.lr_scale:g}x the original; "
                                      f"return {self.returns} of {self.cfg.max_returns})")

    def explain(self, metric: float) -> str:
        return (f"the discriminator is winning (loss_D {self.mean_loss_d():.3g} over the last {self.cfg.window} "
                f"steps, a healthy run stays around 0.2-0.5) and the held-out {self.cfg.metric} got worse for "
                f"{self.worse} evaluations ({self.first_worse:.4g} -> {metric:.4g}, best {self._best_metric:.4g} "
                f"at step {self._best_step})")

    def verdict(self, action: str, message: str) -> Verdict:
        return Verdict(action, message, self._best_step, self.lr_scale)

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "best_step": self._best_step, "best_metric": self._best_metric,
                "worse": self.worse, "first_worse": self.first_worse, "returns": self.returns,
                "lr_scale": self.lr_scale}

    def load_state_dict(self, d: dict) -> None:
        self.losses = deque(d["losses"], maxlen=self.cfg.window)
        self._best_step, self._best_metric = d["best_step"], d["best_metric"]
        self.worse, self.first_worse = d["worse"], d["first_worse"]
        self.returns, self.lr_scale = d["returns"], d["lr_scale"]

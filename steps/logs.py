"""One logging set-up for every step's command line: one format, so the workflow finds the
warnings in any step's log the same way (common.smk's `logged`: lines with " WARNING ")."""
from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def setup(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=FORMAT, stream=sys.stderr)

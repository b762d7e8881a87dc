"""The example named by ``EXAMPLE`` with ``otel_bridge.init()`` called *after* the middleware was built.

Users sometimes wrap the app at import time and initialise later (e.g. in a factory); the bridge must
give the same transactions and errors as with init first.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import otel_bridge

EXAMPLES_DIR = str(Path(__file__).resolve().parents[2] / "examples")
if EXAMPLES_DIR not in sys.path:
    sys.path.insert(0, EXAMPLES_DIR)


def _no_init(**options: Any) -> None:
    return None


_real_init = otel_bridge.init
otel_bridge.init = _no_init
try:
    example = importlib.import_module(os.environ["EXAMPLE"])
finally:
    otel_bridge.init = _real_init

otel_bridge.init()
app = example.app

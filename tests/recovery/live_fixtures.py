"""Re-export of tests/live/conftest.py's fixtures (lab, tracker, test_host) for live tests here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_LIVE = Path(__file__).parent.parent / "live"
if str(_LIVE) not in sys.path:
    sys.path.insert(0, str(_LIVE))  # lab_helpers
_spec = importlib.util.spec_from_file_location("persona_live_conftest", _LIVE / "conftest.py")
assert _spec is not None and _spec.loader is not None
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
lab, tracker, test_host = _mod.lab, _mod.tracker, _mod.test_host

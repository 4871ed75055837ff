import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "provision"))  # fakes (typed fake engine)
sys.path.insert(0, str(HERE.parent / "live"))  # lab_helpers

# the live lab's fixtures (prerequisites checked, every container recorded and removed):
# one definition, shared with tests/live
_spec = importlib.util.spec_from_file_location(
    "_live_conftest", HERE.parent / "live" / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_live = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_live)
lab = _live.lab
tracker = _live.tracker
test_host = _live.test_host
check_host = _live.check_host

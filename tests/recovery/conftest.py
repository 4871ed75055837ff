import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "provision"))
sys.path.insert(0, str(Path(__file__).parent))

from live_fixtures import lab, test_host, tracker  # noqa: F401  (live fixtures)

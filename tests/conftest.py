import sys
from pathlib import Path

# tests import their helpers as `from util import ...`
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Property tests run on shared 2-core machines: a slow moment is not a failure.
# Timings never decide a test here (design notes §7), so no per-example deadline.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("surgeon", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("surgeon")

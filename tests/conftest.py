import os
import tempfile

# Daemons started by the suite register themselves (watcher/runtime.py) in a state
# directory of the suite's own, never in the developer's ~/.local/state, so operator
# commands of a `make run` beside the suite do not see them and vice versa.
os.environ["WATCHER_STATE_DIR"] = tempfile.mkdtemp(prefix="watcher-test-state-")

pytest_plugins = ["tests.fixtures_chain", "tests.fixtures_db"]

"""One benchmark harness: every scenario side by side with its baselines, one report.

    python -m benchmarks.harness [--quick] [--only NAME,...] [--soak-seconds N]

Shared parts: `procs` (child processes, tools, HTTP), `load` (wrk, CPU accounting),
`servers` (nginx configs, the gateway, the bare aiohttp baselines), `fixture` (the
GOPROXY tree on disk), `report` (markdown + JSON). Each scenario is a short module
in `scenarios/`; the cache and selection simulations live in `sims/`.
"""

import sys
from pathlib import Path

# The scenarios build their modules with the tests' own builders (`support.*`), imported
# under the one name the tests use.
_TESTS = str(Path(__file__).resolve().parents[2] / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

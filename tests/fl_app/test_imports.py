"""What a run's processes import: Opacus only where differential privacy is asked for."""

from __future__ import annotations

import subprocess
import sys

# Every client actor, the server and each CLI import the apps and parse a run config;
# importing Opacus (torch.distributed with it) cost each of them ~1.6 s.
_CHECK = """
import sys
import fl_app.client_app, fl_app.server_app
from fl_app.config import parse_run_config
parse_run_config({})
print(sorted(name for name in sys.modules if name.split(".")[0] == "opacus"))
from fl_app.privacy.settings import accountant_names
print("rdp" in accountant_names(), "opacus" in sys.modules)
"""


def test_a_run_without_dp_does_not_import_opacus_until_asked():
    out = subprocess.run([sys.executable, "-c", _CHECK], capture_output=True, text=True,
                         check=True, timeout=120)
    without_dp, asked = out.stdout.strip().splitlines()
    assert without_dp == "[]"
    assert asked == "True True"  # the accountant check still reads Opacus' registry

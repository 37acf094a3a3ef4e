#!/usr/bin/env python3
"""Classic AGI caller lookup: ``AGI(/path/agi_scripts/crm_lookup.py,/etc/ami-daemon/config.yaml)``.

Asterisk runs this file directly, so its first line must name a Python that
has the ``ami-daemon`` package installed: point it at the virtualenv
(``#!/opt/ami-daemon/.venv/bin/python``), or call the console script the
package installs with the right interpreter already in its first line,
``AGI(/opt/ami-daemon/.venv/bin/ami-daemon-agi,/etc/ami-daemon/config.yaml)``.
When started by a Python without the package, this file re-executes itself
with ``.venv/bin/python`` of the checkout it lives in, if there is one.

The work is done by :mod:`ami_daemon.agi.classic`; FastAGI
(``AGI(agi://127.0.0.1:4573/crm_lookup)``) is the faster default.
"""

import os
import sys

try:
    from ami_daemon.agi.classic import main
except ImportError:
    venv = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), ".venv")
    venv_python = os.path.join(venv, "bin", "python")
    if os.access(venv_python, os.X_OK) and os.path.realpath(sys.prefix) != os.path.realpath(venv):
        os.execv(venv_python, [venv_python, os.path.realpath(__file__), *sys.argv[1:]])
    sys.stderr.write("crm_lookup: the ami-daemon package is not installed for this Python\n")
    sys.stdout.write('SET VARIABLE CRM_LOOKUP "error"\n')
    sys.exit(0)

if __name__ == "__main__":
    sys.exit(main())

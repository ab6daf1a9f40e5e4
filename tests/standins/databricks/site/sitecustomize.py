"""Installs the stand-in's connector shim in every Python process started with this folder on
PYTHONPATH (a `bridge` command a test runs against the stand-in), since the shim lives in the
process that connects. Does nothing unless DBX_STANDIN_COMPAT_DIR names the stand-in's folder."""

import os
import sys

_folder = os.environ.get("DBX_STANDIN_COMPAT_DIR")
if _folder:
    sys.path.insert(0, _folder)
    try:
        import dbx_standin_compat
    except ImportError:  # an interpreter without the connector never connects to a warehouse
        pass
    else:
        dbx_standin_compat.install()

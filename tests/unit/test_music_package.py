"""The music package stands alone: a musician-developer can import and run it without the service."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import music

SERVICE_MODULES = ("ray", "fastapi", "starlette", "sqlalchemy", "psycopg", "serve_app", "deployments")


def test_importing_every_music_module_pulls_in_no_service_code() -> None:
    names = [m.name for m in pkgutil.walk_packages(music.__path__, prefix="music.")]
    assert "music.engines.separator" in names and "music.midi" in names
    # A fresh interpreter: this test process has the service imported already.
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICE_MODULES!r}))\n"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert found.strip() == "[]", f"music imports service code: {found}"

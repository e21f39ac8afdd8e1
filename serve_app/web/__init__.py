"""The web page served by the ingress at `/` (see `page.py`)."""

from serve_app.web.page import STATIC_DIR, install_web

__all__ = ["STATIC_DIR", "install_web"]

"""Where Orchestra keeps its data."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "ORCHESTRA_HOME"
CONFIG_ENV = "ORCHESTRA_CONFIG"
STORE_URL_ENV = "ORCHESTRA_STORE_URL"
DB_NAME = "orchestra.db"


def data_dir() -> Path:
    """`$ORCHESTRA_HOME`, or the platform's user data directory."""
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("orchestra", appauthor=False))


def default_db_path() -> Path:
    return data_dir() / DB_NAME

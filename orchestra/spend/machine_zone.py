"""This machine's time zone as an IANA name, which a store records as its budget calendar's.

The standard library knows the local offset but not the zone's name (`zoneinfo` has no
"local key", and `tzlocal` is not a dependency), so the name is read where the C library looks:
`$TZ` when it names an IANA zone, else the zone file `/etc/localtime` links to, else "UTC".
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

LOCALTIME = Path("/etc/localtime")
_VARIANTS = ("posix/", "right/")  # copies of the database laid out under the zoneinfo root


def machine_zone(environ: Mapping[str, str] | None = None, localtime: Path = LOCALTIME) -> str:
    """The IANA name of this machine's zone: `$TZ`'s, else `/etc/localtime`'s, else "UTC"."""
    env = os.environ if environ is None else environ
    for candidate in (env.get("TZ", "").removeprefix(":"), *_link_targets(localtime)):
        name = iana_name(candidate)
        if name is not None:
            return name
    return "UTC"


def iana_name(text: str) -> str | None:
    """`text` as an IANA zone name (a name, or a path to a file under a `zoneinfo` directory),
    or None when it is not one (empty, a POSIX rule such as "EST+5", an unknown name)."""
    if "zoneinfo/" in text:
        text = text.rsplit("zoneinfo/", 1)[1]
        for variant in _VARIANTS:
            text = text.removeprefix(variant)
    if not text or text.startswith("/") or ".." in text.split("/"):
        return None
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None
    return text


def _link_targets(path: Path) -> list[str]:
    """Where the link points as written (the name the administrator chose), then resolved."""
    try:
        if not path.is_symlink():
            return []
        return [os.path.join(path.parent, os.readlink(path)), os.path.realpath(path)]
    except OSError:
        return []

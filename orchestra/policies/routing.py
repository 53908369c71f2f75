"""Which policies can give a route (target and candidates) without explaining it: the built-ins.

Replay asks them for `route` instead of `decide`: the same candidates and target, with none of
the explanation it does not report. Only an instance of a built-in class itself qualifies (a
subclass, or an instance given its own `decide`, may decide otherwise); its route needs no
`enforce`, since a built-in never proposes a vetoed or relabelled model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

from orchestra.core.catalog import Catalog
from orchestra.core.request import Request
from orchestra.core.verdict import Verdict
from orchestra.policies._common import Route
from orchestra.policies.base import Policy

Router = Callable[[Request, Sequence[Verdict], Catalog], Route]


@cache
def _builtins() -> frozenset[type]:
    from orchestra.policies.registry import BUILTIN_POLICIES, builtin_policy_type

    return frozenset(builtin_policy_type(name) for name in BUILTIN_POLICIES)


def router(policy: Policy) -> Router | None:
    """`policy.route` when `policy` is a built-in policy as shipped, else None."""
    if type(policy) not in _builtins():
        return None
    own = vars(policy)
    if "decide" in own or "route" in own:
        return None
    route: Router = policy.route  # type: ignore[attr-defined]
    return route

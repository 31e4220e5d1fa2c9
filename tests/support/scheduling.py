"""How `pytest -n N --dist loadgroup` (pytest-xdist, `make test`) shares the tests among workers.

A worker runs whole scopes: the tests that share a package-scoped fixture (a suite started once
for a package's tests: tests/e2e/, tests/browser/) are one group, marked `xdist_group` with the
package's path (`group_by_package_fixtures`), so that no suite is started twice; every other test
module is a scope of its own, so that its module-scoped fixtures are made once. The scopes that
start whole suites go first, so that no worker is left with one of them at the end while the
others are idle; the rest follow, the largest first."""

from __future__ import annotations

import pytest
from xdist.scheduler import LoadGroupScheduling

# Scopes that start whole suites, in the order they are handed out (the longest first).
FIRST = (
    "tests/reliability/test_scale_out.py",
    "tests/browser",
    "tests/e2e",
    "tests/reliability/",
    "tests/security/test_session_end_flow.py",
)


def group_by_package_fixtures(items: list[pytest.Item]) -> None:
    """Mark each test that uses a package-scoped fixture with the group of that package."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        packages = {
            definitions[-1].baseid
            for definitions in info.name2fixturedefs.values()
            if definitions and definitions[-1].scope == "package"
        }
        for package in sorted(packages):
            item.add_marker(pytest.mark.xdist_group(package))


class SuiteScopeScheduling(LoadGroupScheduling):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ordered = False

    def _split_scope(self, nodeid: str) -> str:
        if nodeid.rfind("@") > nodeid.rfind("]"):
            return nodeid.rsplit("@", 1)[1]  # a group (xdist adds `@<group>` to the node id)
        return nodeid.split("::", 1)[0]  # the module

    def _assign_work_unit(self, node) -> None:  # type: ignore[no-untyped-def]
        if not self._ordered:
            self._ordered = True
            first = [scope for prefix in FIRST for scope in list(self.workqueue) if scope.startswith(prefix)]
            for scope in reversed(dict.fromkeys(first)):
                self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)

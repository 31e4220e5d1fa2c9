"""How `pytest -n N --dist loadscope` (pytest-xdist, `make test`) shares the tests among workers.

A worker runs whole scopes: a test module, or a whole package whose tests share a suite started
once for them (a package-scoped fixture: tests/e2e/, tests/browser/), so that no suite is started
twice. (pytest-xdist's own groups, `--dist loadgroup`, mark a test by a suffix to its node id,
which pytest 9 no longer takes.) The scopes that start whole suites go first, so that no worker is
left with one of them at the end while the others are idle; the rest follow, the largest first."""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

# Packages whose tests share a suite (a package-scoped fixture in their conftest.py).
PACKAGES = ("tests/browser/", "tests/e2e/")
# Scopes that start whole suites, in the order they are handed out (the longest first).
FIRST = (
    "tests/reliability/test_scale_out.py",
    "tests/browser/",
    "tests/e2e/",
    "tests/reliability/",
    "tests/security/test_session_end_flow.py",
)


class SuiteScopeScheduling(LoadScopeScheduling):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._ordered = False

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        for package in PACKAGES:
            if path.startswith(package):
                return package
        return path

    def _assign_work_unit(self, node) -> None:  # type: ignore[no-untyped-def]
        if not self._ordered:
            self._ordered = True
            first = [scope for prefix in FIRST for scope in list(self.workqueue) if scope.startswith(prefix)]
            for scope in reversed(dict.fromkeys(first)):
                self.workqueue.move_to_end(scope, last=False)
        super()._assign_work_unit(node)

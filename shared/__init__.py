"""What two or more of Adgang's services share."""

import sys

# httpx imports its command-line client when click, rich and pygments are installed (as beside
# the development tools): about 8 MB in every process, and no process of the suite runs it. A
# None in sys.modules makes that import fail, and httpx goes on without its CLI, as it does
# where they are not installed.
if "httpx" not in sys.modules and "httpx._main" not in sys.modules:
    sys.modules["httpx._main"] = None  # type: ignore[assignment]

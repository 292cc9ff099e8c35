"""Browser tests of the page: Playwright for Python driving Debian's ``chromium`` (never ``playwright install``,
which downloads a browser and cannot work offline), against a real ``imagegen serve`` on the demo model.

``make test`` installs chromium with apt when it is missing and the user is root; without a browser (or without the
``playwright`` package) every test here is skipped, and the reason is printed. ``IMAGEGEN_CHROMIUM`` names another
Chromium binary. ``IMAGEGEN_SCREENSHOTS=DIR`` keeps the screenshots the tests take (README's come from there).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.server_harness import ServerProcess

#: Where Debian's chromium package puts the browser.
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    wanted = os.environ.get("IMAGEGEN_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, for one test module: Playwright's sync API runs an event loop in this thread while it is open, and
    tests elsewhere that call ``asyncio.run`` must not find it running."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.skip("browser tests: the playwright package is not installed (pip install -e '.[dev]')")
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "browser tests: no chromium found (apt-get install chromium as root, or set IMAGEGEN_CHROMIUM); "
            "`make test` installs it when run as root"
        )
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def make_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """``imagegen serve`` on the demo model (the default model), on its own data directory; stopped at the end."""
    servers: list[ServerProcess] = []

    def make(*args: str) -> ServerProcess:
        root = tmp_path_factory.mktemp("page-server")
        server = ServerProcess(["--data-dir", str(root / "data"), *args], root / "server.log")
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("IMAGEGEN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder

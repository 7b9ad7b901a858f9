"""What the console's browser tests share: Debian's Chromium driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (the
``chromium`` package, which ``.ci/run`` installs), headless and with the flags that keep
it off the network. Without Chromium or Playwright the browser tests skip, except under
``CI=true``, where a missing browser fails them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: the screenshots' size (the README shows them)
VIEWPORT = {"width": 1280, "height": 800}


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (Debian's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def launch() -> Iterator[Any]:
    """One headless Chromium (a test module's ``browser`` fixture yields from this)."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the browser tests: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Any) -> Any:
    """A page in a fresh context (its own cookies): one user's browser. A page error
    (an exception in the console's scripts) fails the test that reads ``page.errors``."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Save the viewport (1280x800) as ``name``.png in the test's folder and, when
    ``SPOTRUN_SCREENSHOTS`` names a folder, there too (how the README's images are made)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    keep = os.environ.get("SPOTRUN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def log_in(page: Any, base: str, key: tuple[str, str]) -> None:
    """Log in on the console's login page with an access key."""
    page.goto(f"{base}/console/jobs")
    assert "/console/login" in page.url, page.url
    page.get_by_label("Access key ID").fill(key[0])
    page.get_by_label("Secret access key").fill(key[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/console/jobs")

"""Headless Chromium for the report tests: render a page and ask the browser where its SVG texts are."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]

_PROBE = """<script>
window.addEventListener('load', () => {
  const texts = [...document.querySelectorAll('svg text')]
    .map(t => [t.textContent.trim(), t.getBoundingClientRect()])
    .filter(([s, r]) => s && r.width > 0 && r.height > 0);
  const bad = [];
  for (let i = 0; i < texts.length; i++) for (let j = i + 1; j < texts.length; j++) {
    const [a, ra] = texts[i], [b, rb] = texts[j];
    if (ra.left < rb.right - 0.5 && rb.left < ra.right - 0.5 && ra.top < rb.bottom - 0.5 && rb.top < ra.bottom - 0.5)
      bad.push([a, b]);
  }
  document.body.setAttribute('data-probe', JSON.stringify({texts: texts.length, overlaps: bad}));
});
</script>"""


def chromium() -> str | None:
    """The Chromium on this machine (tests/setup_system.sh installs Debian's)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def svg_text_layout(page: Path, workdir: Path) -> dict[str, Any]:
    """Render ``page`` in headless Chromium; the count of visible SVG texts and the pairs that overlap."""
    browser = chromium()
    assert browser is not None, "chromium is not installed (tests/setup_system.sh installs it)"
    probe = workdir / (page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    res = subprocess.run([browser, *FLAGS, f"--user-data-dir={workdir / 'chromium-profile'}",
                          "--window-size=1400,2600", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                         check=True, capture_output=True, text=True, timeout=120)
    found = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert found, f"the page did not run its probe: {res.stdout[-500:]} {res.stderr[-500:]}"
    return json.loads(html.unescape(found.group(1)))

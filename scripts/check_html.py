#!/usr/bin/env python
"""Open every page of the built book in headless Chromium and check what a reader would see.

    python scripts/check_html.py                 # check _build/html, screenshots in _build/screenshots
    python scripts/check_html.py --find-browser  # print the browser it would use (exit 1 if none)

Fails if a page of the toc is missing, has a broken image (an ``<img>`` whose file is not in the
HTML folder), shows a Python traceback or an error output, or renders as a blank screenshot; and, from
the rendered page (:data:`PROBE`, a script run in a copy of each page, its measurements read back from
Chromium's ``--dump-dom``), if a displayed equation is wider than the text column or drawn under its
number, or a table is wider than the text column (a reader would have to scroll it sideways).
The browser is ``$CHROMIUM`` or the first of chromium, chromium-browser, google-chrome(-stable)
on PATH. When none is found: in CI (``$CI`` set, not ``false``/``0``) Debian's chromium is
installed if this runs as root with apt-get, and the check fails otherwise; outside CI the
screenshots are skipped with a notice and only the HTML checks run.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import book_pages  # noqa: E402

REPO = book_pages.REPO
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,2400", "--virtual-time-budget=5000"]
# Error outputs as myst-nb renders them, and what a traceback prints.
ERROR_PATTERNS = [re.compile(p) for p in (
    r"Traceback \(most recent call last\)",
    r'class="[^"]*\boutput\s+(?:[\w-]+\s+)*traceback\b',
    r'class="[^"]*\boutput\s+(?:[\w-]+\s+)*error\b',
    r"An Exception was encountered at",
)]


def find_browser() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) or Path(env).is_file() else None
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def in_ci(env=None) -> bool:
    """True when ``$CI`` is set to anything but ``""``, ``0`` or ``false`` (GitHub Actions sets CI=true)."""
    env = os.environ if env is None else env
    return env.get("CI", "").strip().lower() not in ("", "0", "false")


def install_browser() -> str | None:
    """In CI, as root with apt-get: install Debian's chromium; return the browser then found."""
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("check_html: installing chromium (apt-get)", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        ok = subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0 and subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env,
            stdout=subprocess.DEVNULL).returncode == 0
        if ok:
            return find_browser()
    return None


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src") or "")


def broken_images(page: Path, html_root: Path = HTML) -> list[str]:
    """The ``src`` of every local ``<img>`` of ``page`` whose file does not exist."""
    parser = _Images()
    parser.feed(page.read_text(encoding="utf-8"))
    broken = []
    for src in parser.srcs:
        if not src:
            broken.append("(empty src)")
            continue
        parts = urlsplit(src)
        if parts.scheme in ("http", "https", "data"):
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if not target.is_file() or not target.is_relative_to(html_root.resolve()):
            broken.append(src)
    return broken


def error_outputs(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    return [p.pattern for p in ERROR_PATTERNS if p.search(text)]


# Run in a copy of every page once it has loaded and MathJax has typeset it: measures every displayed
# equation (its width against the column it sits in, and whether its number is drawn over it) and every
# table of the article (its width against its container), and writes the numbers as JSON into
# <pre id="hgb-layout">, which --dump-dom hands back. Geometry in CSS pixels at the window's width.
LAYOUT_ID = "hgb-layout"
PROBE = """<script>
window.addEventListener('load', function () {
  function report(out) {
    var p = document.createElement('pre'); p.id = '%(id)s'; p.style.display = 'none';
    p.textContent = JSON.stringify(out); document.body.appendChild(p);
  }
  function box(r) { return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width}; }
  function measure() {
    var out = {equations: [], tables: []};
    document.querySelectorAll('div.math').forEach(function (div) {
      var math = div.querySelector('mjx-math'), eqno = div.querySelector('.eqno');
      out.equations.push({id: div.id || '', typeset: !!math, column: div.clientWidth,
                          number: eqno ? eqno.textContent.replace('#', '').trim() : '',
                          math: math ? box(math.getBoundingClientRect()) : null,
                          eqno: eqno ? box(eqno.getBoundingClientRect()) : null});
    });
    document.querySelectorAll('article table').forEach(function (t) {
      var c = t.closest('.pst-scrollable-table-container') || t.parentElement;
      var head = t.querySelector('th, td');
      out.tables.push({head: head ? head.textContent.trim().slice(0, 60) : '', width: t.scrollWidth,
                       column: c.clientWidth});
    });
    report(out);
  }
  if (!document.querySelector('div.math')) { measure(); return; }
  if (window.MathJax && MathJax.startup && MathJax.startup.promise)
    MathJax.startup.promise.then(measure, function (e) { report({error: 'MathJax failed: ' + e}); });
  else report({error: 'the page has equations but MathJax did not load'});
});
</script>""" % {"id": LAYOUT_ID}
# A pixel of slack for sub-pixel rounding.
SLACK_PX = 1.0


def probe_copy(page: Path) -> Path | None:
    """A copy of ``page`` beside it (same relative links) with :data:`PROBE` before ``</body>``; None
    for a page without a body (the index redirect), which is not measured."""
    text = page.read_text(encoding="utf-8")
    at = text.rfind("</body>")
    if at < 0:
        return None
    copy = page.with_name(page.stem + ".hgb-probe.html")
    copy.write_text(text[:at] + PROBE + text[at:], encoding="utf-8")
    return copy


def read_layout(dom: str) -> dict | None:
    """The probe's JSON from a ``--dump-dom`` output (None if the probe did not report)."""
    m = re.search(r'<pre id="%s"[^>]*>(.*?)</pre>' % LAYOUT_ID, dom, flags=re.S)
    return json.loads(html.unescape(m.group(1))) if m else None


def layout_problems(layout: dict | None) -> list[str]:
    """What the probe measured that a reader would see as broken: an equation wider than its column
    or under its number, an untypeset equation, a table wider than its column."""
    if layout is None:
        return ["the layout probe did not report (the page did not finish loading within the time budget)"]
    if layout.get("error"):
        return [layout["error"]]
    out = []
    for eq in layout.get("equations", []):
        name = f"equation {eq.get('number') or eq.get('id') or '(unnumbered)'}"
        math, num = eq.get("math"), eq.get("eqno")
        if not eq.get("typeset") or math is None:
            out.append(f"{name} was not typeset by MathJax")
            continue
        if math["width"] > eq["column"] + SLACK_PX:
            out.append(f"{name} is {math['width']:.0f} px wide in a {eq['column']:.0f} px column")
        if num and math["right"] > num["left"] + SLACK_PX and math["left"] < num["right"] - SLACK_PX \
                and math["bottom"] > num["top"] and math["top"] < num["bottom"]:
            out.append(f"{name} is drawn under its number")
    for t in layout.get("tables", []):
        if t["width"] > t["column"] + SLACK_PX:
            out.append(f"table '{t['head']}' is {t['width']:.0f} px wide in a {t['column']:.0f} px column")
    return out


def render(browser: str, page: Path, out: Path, timeout: float = 90) -> tuple[str | None, list[str]]:
    """Render ``page`` (a probe copy of it) to the screenshot ``out`` and measure its layout. Returns
    (an error message about the screenshot or None, the layout problems)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    copy = probe_copy(page)
    try:
        with tempfile.TemporaryDirectory(prefix="hgb-chromium-") as profile_dir:
            cmd = [browser, *FLAGS, f"--user-data-dir={profile_dir}", f"--screenshot={out}", "--dump-dom",
                   (copy or page).resolve().as_uri()]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return f"chromium timed out after {timeout:.0f} s", []
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)
    layout = layout_problems(read_layout(proc.stdout)) if copy is not None else []
    if not out.is_file() or out.stat().st_size == 0:
        return f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr.strip()[-300:]}", layout
    from PIL import Image
    with Image.open(out) as im:
        lo_hi = im.convert("L").getextrema()
    if lo_hi[0] == lo_hi[1]:
        return "the screenshot is blank (a single colour)", layout
    return None, layout


def pages_to_check(html_root: Path = HTML, root: Path = REPO) -> list[tuple[str, Path]]:
    """(name, html file) for the index redirect and every toc entry of the book at ``root``."""
    pages = [("index", html_root / "index.html")]
    for src in book_pages.toc_files(root):
        rel = src.relative_to(root).with_suffix(".html")
        pages.append((str(rel.with_suffix("")).replace("/", "__"), html_root / rel))
    return pages


def main(argv=None, env=None, install=install_browser) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--find-browser", action="store_true", help="print the browser and exit")
    ap.add_argument("--html", type=Path, default=HTML)
    ap.add_argument("--out", type=Path, default=SHOTS)
    ap.add_argument("--root", type=Path, default=REPO, help="the book whose _toc.yml lists the pages")
    args = ap.parse_args(argv)

    browser = find_browser()
    if args.find_browser:
        print(browser or "no chromium found")
        return 0 if browser else 1
    if not (args.html / "index.html").is_file():
        print(f"check_html: {args.html} has no index.html; run `make book` first", file=sys.stderr)
        return 1
    if browser is None and in_ci(env):
        browser = install()
        if browser is None:
            print("check_html: no headless browser, and CI requires the screenshot check: install Debian's "
                  "`chromium` (apt-get install -y --no-install-recommends chromium) or set $CHROMIUM",
                  file=sys.stderr)
            return 1
    if browser is None:
        print("check_html: notice: no Chromium/Chrome found, so the pages are not rendered (no screenshots); "
              "install chromium or set $CHROMIUM to run that check (CI requires it). Checking the HTML only.")
    if args.out.exists():
        shutil.rmtree(args.out)

    problems = []
    for name, page in pages_to_check(args.html, args.root):
        rel = page.relative_to(args.html)
        if not page.is_file():
            problems.append(f"{rel}: missing")
            continue
        issues = [f"broken image {s}" for s in broken_images(page, args.html)]
        issues += [f"error output ({p})" for p in error_outputs(page)]
        shot = args.out / f"{name}.png"
        err, layout = render(browser, page, shot) if browser else (None, [])
        if err:
            issues.append(err)
        issues += layout
        where = (shot.relative_to(REPO) if shot.is_relative_to(REPO) else shot) if browser else "(not rendered)"
        print(f"{'ok ' if not issues else 'BAD'} {rel} -> {where}")
        problems += [f"{rel}: {i}" for i in issues]
    if problems:
        print("check_html: problems:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print(f"check_html: every page renders; screenshots in {args.out}" if browser else
          "check_html: the HTML of every page is complete (screenshots skipped: no browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Check a Snakemake HTML report in a real headless Chromium.

Opens a self-contained report (``snakemake --report report.html``), fails on console errors, uncaught page
errors and requests leaving the file, then shows every image result through the report's own UI (the same
``app.showResultInfo(path)`` that rst links call, then a click on the result's "view" button) and checks that
the shown ``<img>`` decodes (also strictly, with WebCodecs' ImageDecoder: ``<img>`` shows a truncated PNG/JPEG
partially, without error), has a nonzero natural size and draws at least one non-transparent pixel. Images on the
start page (workflow description) and in result captions are checked the same way.

Needs Debian's ``chromium`` (apt) and the ``playwright`` Python package driving it via ``executable_path``;
``playwright install`` (a browser download) is never needed.

A test tool (tests/test_workflow.py's report test), not part of the package. Usage, from the repository root:
``python tests/browser_check.py REPORT.html --screenshot OUT.png [--figure-screenshot FIG.png]``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

CHROMIUM_ENV = "BRAINJEPA_CHROMIUM"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# MIME types the report UI shows as <img> (snakemake report html_reporter, AbstractViewManager).
SHOWN_AS_IMAGE = ("image/png", "image/jpeg", "image/svg+xml")

# Waits until the report's React app exists and is mounted.
_APP_READY = "() => typeof app !== 'undefined' && app !== null && document.querySelector('#app nav') !== null"

# UI navigation as the report does it; flushSync renders at once, so no stale panel is clicked.
_SYNC = "(f) => (typeof ReactDOM.flushSync === 'function' ? ReactDOM.flushSync(f) : f())"
_SHOW_INFO = f"(p) => ({_SYNC})(() => app.showResultInfo(p))"
_SHOW_SUBCATEGORY = (
    f"([c, s]) => ({_SYNC})(() => app.setView({{navbarMode: 'subcategory', category: c, subcategory: s}}))"
)

# Finds the shown image for a result: an <img> outside the navbar whose src is the result's data URI.
_FIND_SHOWN = """(path) => {
  const uri = results[path].data_uri;
  const img = Array.from(document.querySelectorAll('#app img'))
    .find((i) => !i.closest('nav') && i.getAttribute('src') === uri);
  return app.state.content === 'img' && app.state.resultPath === path && img !== undefined && img.complete;
}"""

# Measures one <img> (the shown result found like _FIND_SHOWN, or the index-th match of a CSS selector):
# decode, strict decode, sizes, drawn pixels.
_MEASURE = """async ([path, selector, index]) => {
  let img;
  if (path !== null) {
    const uri = results[path].data_uri;
    img = Array.from(document.querySelectorAll('#app img'))
      .find((i) => !i.closest('nav') && i.getAttribute('src') === uri);
  } else {
    img = document.querySelectorAll(selector)[index];
  }
  const shown = img;
  if (img.tagName === 'OBJECT') {  // docutils writes SVG images as <object data=... type="image/svg+xml">
    img = new Image();
    img.src = shown.data;
  }
  const out = {decode: null, strict: null, opaque: null, src: (img.currentSrc || img.src).slice(0, 300)};
  try { await img.decode(); } catch (err) { out.decode = String(err); }
  // <img> shows a truncated PNG/JPEG partially without error; WebCodecs' ImageDecoder decodes it strictly.
  const src = img.currentSrc || img.src;
  if (out.decode === null && src.startsWith('data:') && typeof ImageDecoder === 'function') {
    const type = src.slice(5, src.search(/[;,]/));
    if (await ImageDecoder.isTypeSupported(type)) {
      const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('timed out')), 5000));
      try {
        const data = await (await fetch(src)).arrayBuffer();
        const decoder = new ImageDecoder({data, type});
        const frame = await Promise.race([decoder.decode({completeFramesOnly: true}), timeout]);
        frame.image.close();
        decoder.close();
      } catch (err) { out.strict = String(err); }
    }
  }
  out.naturalWidth = img.naturalWidth;
  out.naturalHeight = img.naturalHeight;
  const rect = shown.getBoundingClientRect();
  out.width = rect.width;
  out.height = rect.height;
  if (out.decode === null && img.naturalWidth > 0) {
    try {
      const scale = Math.min(1, 512 / Math.max(img.naturalWidth, img.naturalHeight));
      const canvas = document.createElement('canvas');
      canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
      canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
      const ctx = canvas.getContext('2d');
      ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
      const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
      let opaque = 0;
      for (let k = 3; k < px.length; k += 4) { if (px[k] !== 0) { opaque += 1; } }
      out.opaque = opaque;
    } catch (err) { out.opaque = null; }  // a tainted canvas: pixel check skipped
  }
  return out;
}"""


_IMAGES = ":is(img, object[type^='image/'])"  # what rst image/figure directives render to


class ChromiumNotFoundError(RuntimeError):
    """No Chromium (or no playwright package) to run the check with, or Chromium would not start."""


def find_chromium(chromium: str | os.PathLike[str] | None = None) -> str:
    """Chromium to use: ``chromium`` if given, else ``$BRAINJEPA_CHROMIUM``, else the first of ``CHROMIUM_NAMES``
    on PATH; raises ChromiumNotFoundError naming the Debian package when there is none."""
    explicit = chromium if chromium is not None else os.environ.get(CHROMIUM_ENV) or None
    if explicit is not None:
        found = shutil.which(str(explicit))
        if found is None:
            raise ChromiumNotFoundError(
                f"chromium executable {str(explicit)!r} (argument or ${CHROMIUM_ENV}) not found"
            )
        return found
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise ChromiumNotFoundError(
        f"no chromium found (tried {', '.join(CHROMIUM_NAMES)} and ${CHROMIUM_ENV}); "
        "install Debian's package: apt-get install -y chromium"
    )


def _image_problem(label: str, m: dict[str, Any]) -> str | None:
    """The problem with one measured image, or None when it loaded and rendered."""
    if m["decode"] is not None:
        return f"{label}: image does not decode ({m['decode']})"
    if m["strict"] is not None:
        return f"{label}: image is truncated or corrupt, a full decode fails ({m['strict']})"
    if m["naturalWidth"] <= 0 or m["naturalHeight"] <= 0:
        return f"{label}: image has no size (naturalWidth={m['naturalWidth']}, naturalHeight={m['naturalHeight']})"
    if m["width"] <= 0 or m["height"] <= 0:
        return f"{label}: image is not laid out visibly ({m['width']}x{m['height']} px)"
    if m["opaque"] == 0:
        return f"{label}: image renders fully transparent (truncated or empty file?)"
    return None


def check_report(
    html_path: str | os.PathLike[str],
    screenshot_path: str | os.PathLike[str],
    chromium: str | os.PathLike[str] | None = None,
    *,
    figure_screenshot_path: str | os.PathLike[str] | None = None,
    timeout_ms: int = 15_000,
) -> list[str]:
    """Check the report at ``html_path`` in headless Chromium; return the problems found (empty when fine).

    Saves a screenshot of the main page to ``screenshot_path`` and, if ``figure_screenshot_path`` is given, one
    with the first image result shown. Raises ChromiumNotFoundError when no Chromium or playwright is available.
    """
    html = Path(html_path).resolve()
    if not html.is_file():
        return [f"report not found: {html}"]
    executable = find_chromium(chromium)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as err:
        raise ChromiumNotFoundError("python package 'playwright' is not installed (pip install playwright)") from err

    problems: list[str] = []
    with sync_playwright() as pw:
        try:  # flags (Playwright's defaults too): no sandbox, as root; /tmp, not a small /dev/shm (containers)
            browser = pw.chromium.launch(
                executable_path=executable, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
            )
        except PlaywrightError as err:
            raise ChromiumNotFoundError(f"chromium {executable} did not start: {str(err).splitlines()[0]}") from err
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(timeout_ms)

            def on_console(msg: Any) -> None:
                if msg.type == "error":
                    loc = msg.location or {}
                    where = f" ({loc.get('url', '')[:80]}:{loc.get('lineNumber', '?')})" if loc.get("url") else ""
                    problems.append(f"console error: {msg.text.splitlines()[0] if msg.text else ''}{where}")

            def on_route(route: Any) -> None:
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    problems.append(f"report requests an external resource (blocked): {route.request.url[:200]}")
                    route.abort()

            page.on("console", on_console)
            page.on("pageerror", lambda err: problems.append(f"uncaught page error: {err}"))
            page.on("crash", lambda _page: problems.append("page crashed"))
            page.route("**/*", on_route)

            page.goto(html.as_uri(), wait_until="load")
            try:
                page.wait_for_function(_APP_READY)
            except PlaywrightError:
                problems.append("report UI did not start (global `app` missing or nothing mounted in #app)")
                page.screenshot(path=str(screenshot_path))
                return problems
            _settle_main_view(page, timeout_ms, PlaywrightError)
            page.screenshot(path=str(screenshot_path))
            problems += _check_images(page, f"#app {_IMAGES}", "start page")

            problems += _check_image_results(page, figure_screenshot_path, timeout_ms, PlaywrightError)
        finally:
            browser.close()
    return problems


def _settle_main_view(page: Any, timeout_ms: int, error_type: type[Exception]) -> None:
    """Wait (best effort) until the start view's vega rule graph has drawn, so the screenshot shows it."""
    try:
        page.wait_for_function(
            "() => document.querySelector('#rulegraph') === null"
            " || document.querySelector('#rulegraph canvas, #rulegraph svg') !== null",
            timeout=timeout_ms,
        )
    except error_type:  # a slow rule graph only affects the screenshot
        pass
    page.wait_for_timeout(200)
    # the start view can open scrolled (a focused element below the fold): show its top, the run summary
    page.evaluate("() => { window.scrollTo(0, 0); for (const e of document.querySelectorAll('*'))"
                  " { if (e.scrollTop) e.scrollTop = 0; } }")


def _check_image_results(
    page: Any, figure_screenshot_path: str | os.PathLike[str] | None, timeout_ms: int, error_type: type[Exception]
) -> list[str]:
    """Walk the categories as a reader would (subcategory table, then each image result's info panel and view
    button) and check each displayed image; return the problems."""
    problems: list[str] = []
    index: dict[str, Any] = page.evaluate(
        "() => ({results: Object.fromEntries(Object.entries(results).map(([p, r]) => [p, r.mime_type])),"
        " categories: categories})"
    )
    mimes: dict[str, str] = index["results"]
    groups: list[tuple[str | None, str | None, list[str]]] = [
        (category, subcategory, paths)
        for category, subcats in index["categories"].items()
        for subcategory, paths in subcats.items()
    ]
    listed = {path for _, _, paths in groups for path in paths}
    groups.append((None, None, [path for path in sorted(mimes) if path not in listed]))
    screenshot = figure_screenshot_path
    for category, subcategory, paths in groups:
        if category is not None:
            page.evaluate(_SHOW_SUBCATEGORY, [category, subcategory])
            try:
                page.wait_for_selector("nav table tbody tr", timeout=timeout_ms)
            except error_type:
                problems.append(f"category {category!r} / {subcategory!r}: result table did not render")
        for path in paths:
            mime = mimes.get(path)
            if mime is None:
                problems.append(f"{path}: in category {category!r} but not in the embedded results")
            elif mime.startswith("image/") and mime not in SHOWN_AS_IMAGE:
                problems.append(f"{path}: the report UI offers {mime} as a download, not an image")
            elif mime in SHOWN_AS_IMAGE:
                problems += _show_image_result(page, path, timeout_ms, error_type)
                if screenshot is not None:
                    page.screenshot(path=str(screenshot))
                    screenshot = None
    return problems


def _show_image_result(page: Any, path: str, timeout_ms: int, error_type: type[Exception]) -> list[str]:
    """Open ``path``'s info panel, click its view button and check the image shown and the caption's images."""
    page.evaluate(_SHOW_INFO, path)  # what the report's rst links do
    problems = _check_images(page, f"nav ul {_IMAGES}", f"{path} (caption)")
    button = page.locator('nav ul a[type="button"]').first  # the result's view button leads the info panel
    try:
        button.click(timeout=timeout_ms)
        page.wait_for_function(_FIND_SHOWN, arg=path, timeout=timeout_ms)
    except error_type:
        return [*problems, f"{path}: clicking its view button did not show the image (report UI changed?)"]
    problem = _image_problem(path, page.evaluate(_MEASURE, [path, None, 0]))
    return problems if problem is None else [*problems, problem]


def _check_images(page: Any, selector: str, where: str) -> list[str]:
    """Check every image element matching ``selector`` (decoded, sized, drawn); ``where`` names them in the problems."""
    problems = []
    for index in range(page.evaluate("(sel) => document.querySelectorAll(sel).length", selector)):
        measured = page.evaluate(_MEASURE, [None, selector, index])
        problem = _image_problem(f"{where} image {_describe_src(measured['src'])}", measured)
        if problem is not None:
            problems.append(problem)
    return problems


def _describe_src(src: str) -> str:
    """Short name of an image source: a data URI's ``filename=`` (as Snakemake writes it), else its start."""
    if src.startswith("data:"):
        head = src.split(",", 1)[0]
        names = [part[len("filename=") :] for part in head.split(";") if part.startswith("filename=")]
        return names[0] if names else head[:60]
    return src[:120]


def main(argv: list[str] | None = None) -> int:
    """CLI: exit 0 when the report is fine, 1 (problems printed) when not, 2 when no chromium/playwright."""
    parser = argparse.ArgumentParser(
        prog="python tests/browser_check.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("report", type=Path, help="self-contained Snakemake HTML report")
    parser.add_argument("--screenshot", type=Path, required=True, help="PNG screenshot of the report's main page")
    parser.add_argument("--figure-screenshot", type=Path, help="PNG screenshot with the first image result shown")
    parser.add_argument("--chromium", help=f"chromium executable (default: ${CHROMIUM_ENV}, then PATH)")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for each UI step")
    args = parser.parse_args(argv)
    try:
        problems = check_report(
            args.report,
            args.screenshot,
            args.chromium,
            figure_screenshot_path=args.figure_screenshot,
            timeout_ms=int(args.timeout * 1000),
        )
    except ChromiumNotFoundError as err:
        print(f"browser_check: {err}", file=sys.stderr)
        return 2
    if problems:
        print(f"browser_check: {len(problems)} problem(s) in {args.report}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"browser_check: {args.report} OK; screenshot {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

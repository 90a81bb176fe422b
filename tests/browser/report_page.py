"""Checks a report's HTML passes in a real browser (used on dry-run and real-lab reports)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from tests.browser.conftest import not_blank

PHONE = {"width": 390, "height": 844}


def check_report_in_browser(open_page: Callable[..., Any], html: Path, sections: list[str],
                            shots: Path) -> dict[str, Any]:
    """Open the report from its file: no request leaves the file, no console error, every
    section visible, pictures drawn, readable at phone width, printable; screenshots (desktop
    and phone) saved under ``shots`` and not blank.  Returns what was measured."""
    w = open_page(("file://", "data:"))
    page = w.page
    page.goto(html.resolve().as_uri(), wait_until="load")
    assert not w.outside(), f"the report asked the network for {w.outside()}"
    assert not w.console_errors and not w.page_errors, (w.console_errors, w.page_errors)
    for key in sections:
        assert page.locator(f"#sec-{key}").is_visible(), key
        assert page.locator(f"#sec-{key} h2").inner_text().strip()
    boxes = page.eval_on_selector_all("svg", "els => els.map(e => e.getBoundingClientRect())"
                                      ".map(r => [r.width, r.height])")
    assert boxes and all(wd > 50 and ht > 50 for wd, ht in boxes), boxes
    desktop = shots / "report-desktop.png"
    page.screenshot(path=str(desktop), full_page=True)
    measured = {"desktop": not_blank(str(desktop)), "svgs": len(boxes)}
    # a phone: nothing wider than the screen but the boxes that scroll on their own
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= PHONE["width"], f"page is {overflow}px wide on a {PHONE['width']}px phone"
    phone = shots / "report-phone.png"
    page.screenshot(path=str(phone), full_page=True)
    measured["phone"] = not_blank(str(phone))
    # print: no navigation, a PDF comes out
    page.emulate_media(media="print")
    assert page.locator("nav").is_hidden()
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 10000
    (shots / "report.pdf").write_bytes(pdf)
    page.emulate_media(media="screen")
    assert not w.outside() and not w.console_errors and not w.page_errors
    return measured

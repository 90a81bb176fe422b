"""The lab report in a real browser (headless Chromium): self-contained, every section
visible, readable on a phone, printable; screenshots under the test's tmp dir."""

from __future__ import annotations

import pytest

pytest.importorskip("jinja2")

from tests.browser.report_page import check_report_in_browser  # noqa: E402
from tests.render.reportlab import (ObservedLab, dry_lab, results_for,  # noqa: E402
                                    sample_doctor, sample_traffic)

pytestmark = pytest.mark.browser


def test_report_opens_offline_with_every_section(watched_page, tmp_path):
    from hybridnb.render.report import report_of

    lab = dry_lab(tmp_path / "state")
    # with the doctor's findings and a traffic recording (as a lab offering them gives)
    observed = ObservedLab(lab, sample_doctor(), sample_traffic(["db", "probe", "web"]))
    rep = report_of(observed, monitor=4, **results_for(lab))
    assert rep.data.keys[-2:] == ["traffic", "doctor"]
    html = tmp_path / "lab.html"
    rep.save(html)
    measured = check_report_in_browser(watched_page, html, rep.data.keys, tmp_path)
    assert measured["svgs"] == 6                       # + the traffic plot


def test_a_report_that_reaches_out_is_caught(watched_page, tmp_path):
    """The check itself can fail: a page with an external image is reported."""
    page_file = tmp_path / "bad.html"
    page_file.write_text('<!DOCTYPE html><html><body><h1>x</h1>'
                         '<img src="http://report.invalid/x.png"></body></html>')
    w = watched_page(("file://", "data:"))
    w.page.goto(page_file.as_uri(), wait_until="load")
    assert w.outside() == ["http://report.invalid/x.png"]


def test_asyncio_works_again_after_a_browser_test():
    """The browser fixture stops Playwright after each test (its sync API holds a running
    asyncio loop while started): later tests may use asyncio.run."""
    import asyncio

    assert asyncio.run(asyncio.sleep(0, result=7)) == 7

"""``lapse report --html``: one self-contained page with the verdicts and one chart point per day."""

from __future__ import annotations

import re
from datetime import timedelta

from lapse.operator.report import write_html_report
from tests.operator import support
from tests.support.cli import lapse


def external_references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", html, re.I)


def test_the_report_is_self_contained_with_verdicts_and_one_point_per_day(pool, world, tmp_path):
    path = tmp_path / "report.html"
    found = write_html_report(pool, path, since=support.NOW - timedelta(days=6), now=support.NOW,
                              config=support.config())
    html = path.read_text()
    assert external_references(html) == []
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert not re.search(r"""\b(?:src|href)\s*=""", html, re.I)  # nothing to load at all
    verdicts = {v.name: v for v in found}
    assert verdicts["sweeps succeeding"].ok is False  # the seeded purge run failed
    assert verdicts["no new dead letter"].ok is False
    assert verdicts["invariant expired_has_no_key"].ok is True
    for v in found:
        assert v.name in html
    assert html.count('<tr class="verdict">') == len(found)
    svgs = re.findall(r'<svg class="chart".*?</svg>', html, re.S)
    assert len(svgs) == 6
    for svg in svgs:
        assert 'data-days="7"' in svg
        for group in re.findall(r'<g class="series".*?</g>', svg, re.S):
            days = re.findall(r'<circle class="point" data-day="([0-9-]+)"', group)
            assert days == [(support.NOW - timedelta(days=n)).date().isoformat()
                            for n in range(6, -1, -1)]


def test_the_check_for_external_references_can_fail():
    assert external_references('<img src="https://cdn.example/x.png">') != []
    assert external_references("<a href=//cdn.example/x>") != []


def test_lapse_report_writes_the_page_and_exits_1_when_a_check_fails(pool, world, database,
                                                                    tmp_path):
    path = tmp_path / "r.html"
    result = lapse("report", "--html", str(path), "--since", "6d", "--now",
                   support.NOW.isoformat(), env={"DATABASE_URL": database})
    assert result.returncode == 1, result.stderr
    assert f"wrote {path}" in result.stdout and "FAIL sweeps succeeding" in result.stdout
    assert path.read_text().count('data-days="7"') == 6
    bad = lapse("report", "--html", str(path), "--since", "soon", env={"DATABASE_URL": database})
    assert bad.returncode == 2 and "not a time or a duration" in bad.stderr

"""STYLE rule 12 for the web console: delete each guard once and watch its test fail.

``python -m tests.support.web_guards [N ...]`` applies each mutation below in
turn (the file is restored after each), runs the test that should catch it and
prints FAILS (good) or STILL PASSES (bad). Not collected by pytest.
"""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
SQL = "lapse/operator/web/sql/web.sql"
BULK = "lapse/operator/web/bulk.py"
APP = "lapse/operator/web/app.py"
T = "tests/operator/test_web.py::"
M = [
 ("a confirmation acts only up to the counted highest id", SQL,
  "  and id <= %(max_id)s\n", "  and %(max_id)s::bigint is not null\n",
  T + "test_bulk_requeue_acts_only_on_the_rows_its_dry_run_counted"),
 ("a confirmation keeps the filter", SQL,
  "  and (%(error)s::text is null or error = %(error)s)\n  and id <= %(max_id)s\n",
  "  and id <= %(max_id)s\n",
  T + "test_an_api_client_uses_the_bearer_token_without_a_cookie"),
 ("a confirmation is refused when more rows match than were counted", BULK,
  "        if len(ids) > counted:\n", "        if False:\n",
  T + "test_a_confirmation_is_refused_when_more_rows_match_than_were_counted"),
 ("without LAPSE_WEB_TOKEN every mutation is refused", APP,
  '        if token is None:\n            return 403, "the console is read-only: LAPSE_WEB_TOKEN is not set"\n',
  '        if token is None:\n            return None\n',
  T + "test_without_a_token_the_console_is_read_only"),
 ("the form must carry the token", APP,
  '        if not _same(fields.get("token", ""), token):\n', "        if False:\n",
  T + "test_a_mutation_without_the_token_or_the_csrf_value_is_refused"),
 ("the form must carry the CSRF value of the cookie", APP,
  '        if not cookie or not _same(fields.get("csrf", ""), cookie):\n', "        if False:\n",
  T + "test_a_mutation_without_the_token_or_the_csrf_value_is_refused"),
 ("a form from another origin is refused", APP,
  '        if origin and origin != "null" and urlparse(origin).netloc != request.url.netloc:\n',
  "        if False:\n",
  T + "test_a_form_post_from_another_origin_is_refused"),
 ("a wrong Bearer token is refused", APP,
  "            return None if _same(given, token) else (401, \"wrong token\")\n",
  "            return None\n",
  T + "test_an_api_client_uses_the_bearer_token_without_a_cookie"),
 ("a refused mutation is audited", APP,
  "                bulk.record(conn, bulk.BulkResult(action, \"refused\", detail=reason), flt,\n"
  "                            counted=counted, counted_max_id=max_id, client=client, now=self.now())\n",
  "                pass\n",
  T + "test_without_a_token_the_console_is_read_only"),
 ("the bulk buttons are hidden without a token", "lapse/operator/web/templates/dead_letters.html",
  "{% if writable %}\n{% set f = data.filter %}\n<h2>", "{% if true %}\n{% set f = data.filter %}\n<h2>",
  T + "test_without_a_token_the_console_is_read_only"),
]


def main(only: list[str]) -> None:
    for i, (name, path, old, new, test) in enumerate(M):
        if only and str(i) not in only:
            continue
        f = ROOT / path
        text = f.read_text()
        assert text.count(old) == 1, (name, text.count(old))
        f.write_text(text.replace(old, new))
        try:
            r = subprocess.run([str(ROOT / ".venv/bin/pytest"), "-q", "-x", "-p", "no:cacheprovider",
                                test], cwd=ROOT, capture_output=True, text=True, timeout=600)
            line = [out for out in r.stdout.splitlines()
                    if " passed" in out or " failed" in out or "error" in out.lower()][-1:]
            verdict = "FAILS" if r.returncode else "STILL PASSES"
            print(f"{verdict}  {i} {name}  -> {test.split('::')[1]}  {line}", flush=True)
        finally:
            f.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])

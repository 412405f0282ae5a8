"""STYLE rule 12 for the panel work: delete each guard once and watch its test fail.

``python -m tests.support.panel_guards [N ...]`` (tests/support/guard_runner.py).
"""

import sys

from tests.support.guard_runner import run

M = [
 ("re-login once on a 404", "lapse/ports/panel.py", "            self._login_again(used)  # an expired session answers 404: log in again, once\n", "            pass\n", "tests/platform/test_panel.py::test_an_expired_session_answered_404_is_survived_with_exactly_one_relogin"),
 ("threads re-login once between them", "lapse/ports/panel.py", "            if self.api.session == used:\n", "            if True:\n", "tests/platform/test_panel.py::test_threads_whose_session_expired_log_in_again_once_between_them"),
 ("requests without a session go out (404 handled as expiry)", "lapse/ports/panel.py", "        kwargs.pop(\"is_login\", None)\n        return self._request_with_retry(requests.get, url, headers, **kwargs)\n", "        return super()._get(url, headers, **kwargs)\n", "tests/platform/test_panel.py::test_a_call_made_while_another_thread_renews_the_session_logs_in_again"),
 ("refused login is permanent (not retried)", "lapse/ports/panel.py", "            except LapseError:\n                self.breaker.succeeded()  # the panel answered; the failure is not its outage\n                raise\n", "            except LapseError:\n                continue\n", "tests/platform/test_panel.py::test_a_refused_login_is_not_retried"),
 ("refusal mapped to PanelLoginRefused", "lapse/ports/panel.py", '            raise PanelLoginRefused(self.name, f"success=false: {refusal.message}") from None\n', "            raise\n", "tests/platform/test_panel.py::test_a_refused_login_is_not_retried"),
 ("add: read back on refusal", "lapse/ports/panel.py", "            found = self._read(key)\n", "            found = None\n", "tests/platform/test_panel.py::test_already_in_use_by_our_own_client_is_success"),
 ("add: foreign client check", "lapse/ports/panel.py", "            if not found.is_key(key):\n", "            if False:\n", "tests/platform/test_panel.py::test_already_in_use_by_a_foreign_client_is_an_error_and_it_is_left_alone"),
 ("remove: not found is success", "lapse/ports/panel.py", "            if self._read(email) is not None:\n", "            if True:\n", "tests/platform/test_panel.py::test_removing_a_client_that_is_not_there_is_success"),
 ("remove: read back before calling it success", "lapse/ports/panel.py", "            if self._read(email) is not None:\n", "            if False:\n", "tests/platform/test_panel.py::test_removing_a_client_that_is_not_there_is_success"),
 ("timeout on every request", "lapse/ports/panel.py", "cookies=self.cookies, timeout=self.timeout, **kwargs)", "cookies=self.cookies, **kwargs)", "tests/platform/test_panel.py::test_every_request_has_a_timeout"),
 ("breaker counts an outage", "lapse/ports/panel.py", "        self.breaker.failed()\n", "", "tests/platform/test_panel.py::test_an_outage_is_retryable_and_trips_the_breaker"),
 ("malformed JSON is PanelGarbage", "lapse/ports/panel.py", "            except (requests.JSONDecodeError, _Garbage) as error:", "            except (_Garbage,) as error:", "tests/platform/test_panel.py::test_malformed_json_is_a_clear_error"),
 ("list: only the configured inbound", "lapse/ports/panel.py", "        return [c for c in clients if self.inbound_id in c.inbound_ids]", "        return clients", "tests/platform/test_panel.py::test_the_list_holds_lapse_clients_of_the_configured_inbound_with_their_comment"),
 ("update: read, change, write back", "lapse/ports/panel.py", '        record = dict(obj["client"])\n', '        record = {"email": email}\n', "tests/platform/test_panel.py::test_an_update_reads_changes_and_writes_back_every_field"),
 ("too old: a refusal from the inbounds API still means it exists", "lapse/ports/panel.py", "        except _Refusal:\n            pass  # the inbounds API answered", "        except _Refusal:\n            raise  # the inbounds API answered", "tests/platform/test_panel.py::test_a_panel_older_than_v3_1_is_too_old"),
 ("too old: probe the inbounds API after the 404s", "lapse/ports/panel.py", "                    raise\n        self._explain_404()\n", "                    raise\n        raise PanelSessionLost(self.name)\n", "tests/platform/test_panel.py::test_a_panel_older_than_v3_1_is_too_old"),
 ("5xx retried", "lapse/ports/panel.py", '                    problem = f"HTTP {status}"\n                    continue\n', '                    raise\n', "tests/platform/test_panel.py::test_5xx_and_dropped_connections_are_retried_with_backoff"),
 ("panel add refuses a missing credential variable", "lapse/operator/panels.py", "        Credentials.from_env(args.credentials_env)  # refuse a missing variable now\n", "", "tests/platform/test_panel_cli.py::test_add_refuses_a_missing_credential_variable"),
 ("check marks a refusing panel", "lapse/operator/panels.py", "                panels.mark_login_refused(conn, panel.id, checked.problem or \"\", now=clock.now())\n", "                pass\n", "tests/platform/test_panel_cli.py::test_check_says_which_panel_refuses_marks_it_and_a_later_success_clears_it"),
 ("check clears the mark on success", "lapse/operator/panels.py", "                panels.clear_login_refused(conn, panel.id, now=clock.now())\n", "                pass\n", "tests/platform/test_panel_cli.py::test_check_says_which_panel_refuses_marks_it_and_a_later_success_clears_it"),
 ("check exits 1 on a problem", "lapse/operator/panels.py", "    return EXIT_FOUND if any(c.problem for c in checks) else EXIT_OK", "    return EXIT_OK", "tests/platform/test_panel_cli.py::test_check_says_which_panel_refuses_marks_it_and_a_later_success_clears_it"),
 ("check reports a missing inbound", "lapse/flows/panel_check.py", "    if not checked.inbound_found:\n", "    if False:\n", "tests/platform/test_panel_cli.py::test_check_says_which_panel_is_too_old_or_unreachable_or_lacks_the_inbound"),
 ("name taken is InvalidPanel", "domain/panels.py", '        if error.diag.constraint_name == "panels_name_unique":\n', '        if False:\n', "tests/domain/test_panels.py::test_a_name_is_taken_once"),
 ("default panel keeps enabled", "domain/sql/panels.sql", "        credentials_env = excluded.credentials_env, updated_at = %(now)s\n", "        credentials_env = excluded.credentials_env, updated_at = %(now)s, enabled = true\n", "tests/domain/test_panels.py::test_the_default_panel_follows_the_environment_and_keeps_the_operators_choices"),
 ("login-refused mark keeps its first time", "domain/sql/panels.sql", "set login_refused_at = coalesce(login_refused_at, %(now)s)", "set login_refused_at = %(now)s", "tests/domain/test_panels.py::test_the_login_refused_mark_keeps_its_first_time_until_cleared"),
 ("'default' is reserved", "domain/panels.py", "    if name == DEFAULT_NAME:\n", "    if False:\n", "tests/domain/test_panels.py::test_a_bad_definition_is_refused_with_the_reason"),
 ("config: default panel needs credentials", "lapse/platform/config.py", "    _panel_credentials(raw)\n", "", "tests/platform/test_config.py::test_bad_values_name_the_variable"),
]


if __name__ == "__main__":
    run(M, sys.argv[1:], timeout=300, fails="FAILS (good)", line="{verdict}  {name}  -> {test}  {last}")

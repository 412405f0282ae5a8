"""The 3x-ui panel port against the fake panel on loopback: every quirk of SPEC §6 "Panel facts".

The fake answers in Russian: nothing may depend on the text of a panel's message.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from lapse.platform.breaker import CircuitBreaker, CircuitOpen
from lapse.ports.fakes import xui as fake
from lapse.ports.panel import (
    Credentials,
    ForeignClient,
    MissingCredentials,
    PanelGarbage,
    PanelLoginRefused,
    PanelRefused,
    PanelSessionLost,
    PanelTooOld,
    PanelUnavailable,
    XuiPanel,
)
from tests.conftest import eventually

PASSWORD_LOGIN = Credentials(user=fake.USER, password=fake.PASSWORD)


@pytest.fixture
def xui(httpserver):
    return fake.FakeXui.serve(httpserver, language="ru")


def port(xui, *, credentials=PASSWORD_LOGIN, timeout=2.0, breaker=None, slept=None, inbound=1):
    return XuiPanel("a", xui.url, inbound, credentials, timeout=timeout, backoff=0.01,
                    sleep=(slept.append if slept is not None else lambda s: None),
                    breaker=breaker or CircuitBreaker("test-panel", threshold=2, cooldown=60))


def new_key():
    return str(uuid.uuid4())


def test_a_client_is_added_read_listed_and_removed_by_its_key(xui):
    panel, key = port(xui), new_key()
    added = panel.add_client(key)
    [body] = [r.body for r in xui.calls("/clients/add")]
    assert body == {"client": {"id": key, "email": key, "subId": key, "comment": "lapse",
                               "enable": True}, "inboundIds": [1]}
    assert added.is_key(key) and panel.get_client(key) == added
    assert panel.list_clients() == [added]
    panel.remove_client(key)
    assert panel.get_client(key) is None and panel.list_clients() == []
    assert [r.path for r in xui.calls("/clients/del/")] == [f"/panel/api/clients/del/{key}"]


def test_the_session_login_uses_the_csrf_token_and_the_session_cookie(xui):
    port(xui).list_clients()
    paths = [r.path for r in xui.received]
    assert paths == ["/csrf-token", "/login", "/panel/api/clients/list"]
    assert xui.received[1].body == {"username": fake.USER, "password": fake.PASSWORD}
    assert xui.received[2].auth == "session"


def test_login_logs_in_once(xui):
    panel = port(xui)
    panel.login()
    panel.list_clients()
    assert xui.login_attempts == 1


def test_a_token_skips_the_login_and_is_sent_as_bearer(xui):
    panel, key = port(xui, credentials=Credentials(token=fake.TOKEN)), new_key()
    panel.add_client(key)
    panel.remove_client(key)
    assert xui.login_attempts == 0 and not xui.calls("csrf-token")
    assert {r.auth for r in xui.received} == {"bearer"}


def test_a_refused_token_is_a_login_refusal_not_a_retry(xui):
    with pytest.raises(PanelLoginRefused, match="token not accepted"):
        port(xui, credentials=Credentials(token="wrong")).list_clients()
    assert xui.login_attempts == 0 and len(xui.calls("/clients/list")) == 1


def test_an_expired_session_answered_404_is_survived_with_exactly_one_relogin(xui):
    panel, key = port(xui), new_key()
    panel.add_client(key)
    assert xui.login_attempts == 1
    xui.expire_sessions()
    assert panel.get_client(key) is not None
    assert xui.login_attempts == 2
    assert [r.path for r in xui.received[-4:]] == [
        f"/panel/api/clients/get/{key}", "/csrf-token", "/login", f"/panel/api/clients/get/{key}"]


@pytest.fixture
def threaded_xui():
    served = fake.FakeXui.start()  # answers requests in parallel, like the real panel
    yield served
    served.stop()


def test_threads_whose_session_expired_log_in_again_once_between_them(threaded_xui):
    xui = threaded_xui
    panel, key = port(xui), new_key()
    panel.add_client(key)
    for round_ in range(1, 4):
        xui.expire_sessions()
        with ThreadPoolExecutor(8) as pool:
            found = list(pool.map(lambda _: panel.get_client(key), range(32)))
        assert all(f is not None and f.is_key(key) for f in found)
        assert xui.login_attempts == 1 + round_


def test_a_call_made_while_another_thread_renews_the_session_logs_in_again(xui):
    panel, key = port(xui), new_key()
    panel.add_client(key)
    panel.api.session = None  # what py3xui's login does first, in the other thread
    assert panel.get_client(key) is not None and xui.login_attempts == 2


def test_a_404_after_the_relogin_is_not_retried_again(xui):
    xui.inject(fake.expired_session(), on="/clients/list", times=5)
    with pytest.raises(PanelSessionLost, match="404 again after a fresh login") as error:
        port(xui).list_clients()
    assert not error.value.permanent  # not a refused login: the panel is not marked
    assert xui.login_attempts == 2 and len(xui.calls("/clients/list")) == 2


def test_a_panel_older_than_v3_1_is_too_old(xui):
    xui.version = (2, 6, 0)
    with pytest.raises(PanelTooOld, match="v3.1"):
        port(xui).list_clients()
    assert xui.login_attempts == 2  # one re-login, then the inbounds API tells why
    with pytest.raises(PanelTooOld):
        port(xui, credentials=Credentials(token=fake.TOKEN)).list_clients()
    with pytest.raises(PanelTooOld):  # the inbounds API answers, even about a missing inbound
        port(xui, inbound=7).list_clients()


def test_a_refused_login_is_not_retried(xui):
    panel = port(xui, credentials=Credentials(user=fake.USER, password="wrong"))
    with pytest.raises(PanelLoginRefused, match="login refused"):
        panel.add_client(new_key())
    assert xui.login_attempts == 1 and not xui.calls("/panel/api/")


def test_five_refused_logins_lock_the_address_out_even_for_the_right_password(xui):
    for _ in range(5):
        with pytest.raises(PanelLoginRefused):
            port(xui, credentials=Credentials(user=fake.USER, password="wrong")).login()
    assert xui.locked_out()
    with pytest.raises(PanelLoginRefused):
        port(xui).login()
    assert xui.login_attempts == 6


def test_already_in_use_by_our_own_client_is_success(xui):
    panel, key = port(xui), new_key()
    panel.add_client(key)
    xui.inject(fake.already_in_use(), on="/clients/add")
    assert panel.add_client(key).is_key(key)
    assert len(xui.calls("/clients/add")) == 2 and len(xui.clients) == 1


def test_already_in_use_by_a_foreign_client_is_an_error_and_it_is_left_alone(xui):
    key = new_key()
    foreign = xui.put_client(key, comment="vip")
    with pytest.raises(ForeignClient, match="did not create"):
        port(xui).add_client(key)
    assert xui.clients[key] == foreign and not xui.calls("/clients/del/")


def test_a_refused_add_with_nothing_on_the_panel_is_retryable(xui):
    xui.inject(fake.already_in_use(), on="/clients/add")
    with pytest.raises(PanelRefused) as error:
        port(xui).add_client(new_key())
    assert not error.value.permanent


def test_an_add_whose_answer_was_lost_is_retried_into_the_same_client(xui):
    key = new_key()
    xui.inject(fake.drop(after_acting=True), on="/clients/add")
    assert port(xui).add_client(key).is_key(key)
    assert len(xui.calls("/clients/add")) == 2 and list(xui.clients) == [key]


def test_removing_a_client_that_is_not_there_is_success(xui):
    port(xui).remove_client(new_key())
    key = new_key()
    xui.put_client(key, uuid_=key, sub_id=key, comment="lapse")
    xui.inject(fake.not_found(), on="/clients/del/")
    with pytest.raises(PanelRefused):  # "not found" while the client is there: not a success
        port(xui).remove_client(key)


def test_removing_never_downloads_the_client_list_nor_acts_on_every_client(xui):
    panel, keys = port(xui), [new_key() for _ in range(3)]
    for key in keys:
        panel.add_client(key)
    for key in keys:
        panel.remove_client(key)
        panel.remove_client(key)
    assert not xui.calls("/clients/list")
    assert not [r for r in xui.received if "delDepleted" in r.path or "resetAllTraffics" in r.path]


def test_the_list_holds_lapse_clients_of_the_configured_inbound_with_their_comment(xui):
    xui.inbounds.add(2)
    ours, elsewhere = new_key(), new_key()
    port(xui).add_client(ours)
    port(xui, inbound=2).add_client(elsewhere)
    xui.put_client("someone@example", comment="vip")
    assert [(c.email, c.comment) for c in port(xui).list_clients()] == [(ours, "lapse")]
    everyone = port(xui).list_clients(only_lapse=False)
    assert {(c.email, c.comment) for c in everyone} == {(ours, "lapse"), ("someone@example", "vip")}


def test_an_update_reads_changes_and_writes_back_every_field(xui):
    key = new_key()
    xui.put_client(key, uuid_=key, sub_id=key, comment="lapse", flow="xtls-rprx-vision",
                   group="premium", limitIp=3)
    port(xui).update_client(key, enable=False)
    record = xui.clients[key]
    assert (record["enable"], record["flow"], record["group"], record["limitIp"]) == (
        False, "xtls-rprx-vision", "premium", 3)
    assert record["uuid"] == key and record["subId"] == key


def test_malformed_json_is_a_clear_error(xui):
    xui.inject(fake.malformed(), on="/clients/list")
    with pytest.raises(PanelGarbage, match="unreadable answer"):
        port(xui).list_clients()
    xui.inject(lambda request, panel: fake.Response("<html>proxy</html>", status=200),
               on="/clients/get/")
    with pytest.raises(PanelGarbage):
        port(xui).get_client(new_key())


def test_5xx_and_dropped_connections_are_retried_with_backoff(xui):
    slept = []
    xui.inject(fake.status(502), on="/clients/list")
    xui.inject(fake.drop(), on="/clients/list")
    assert port(xui, slept=slept).list_clients() == []
    assert slept == [0.01, 0.02] and len(xui.calls("/clients/list")) == 3


def test_an_outage_is_retryable_and_trips_the_breaker(xui):
    breaker = CircuitBreaker("test-panel", threshold=2, cooldown=60)
    panel = port(xui, breaker=breaker)
    xui.inject(fake.status(503), on="/clients/list", times=3)
    xui.inject(fake.drop(), on="/clients/list", times=3)
    for expected in ("HTTP 503", "ConnectionError"):
        with pytest.raises(PanelUnavailable, match=f"{expected}.*after 3 attempts") as error:
            panel.list_clients()
        assert not error.value.permanent
    assert breaker.state == "open"
    seen = len(xui.received)
    with pytest.raises(CircuitOpen):
        panel.list_clients()
    assert len(xui.received) == seen  # the open circuit spares the panel


def test_a_panel_that_answers_is_no_outage_for_the_breaker(xui):
    breaker = CircuitBreaker("test-panel", threshold=1, cooldown=60)
    with pytest.raises(PanelLoginRefused):
        port(xui, credentials=Credentials(user=fake.USER, password="x"), breaker=breaker).login()
    xui.inject(fake.malformed(), on="/clients/list")
    with pytest.raises(PanelGarbage):
        port(xui, breaker=breaker).list_clients()
    assert breaker.state == "closed"


def test_every_request_has_a_timeout(xui):
    xui.inject(fake.latency(0.5), on="/clients/list", times=3)
    with pytest.raises(PanelUnavailable, match="ReadTimeout"):
        port(xui, timeout=0.2).list_clients()
    # the server answers one request at a time: let it take the abandoned ones first
    eventually(lambda: not xui.faults, timeout=5, what="the timed-out requests")


def test_a_slow_list_within_the_timeout_is_fine(xui):
    key = new_key()
    port(xui).add_client(key)
    xui.inject(fake.latency(0.3), on="/clients/list")
    assert [c.email for c in port(xui, timeout=2).list_clients()] == [key]


def test_credentials_come_from_the_environment_by_prefix():
    assert Credentials.from_env("P", {"P_TOKEN": "t"}).token == "t"
    both = Credentials.from_env("P", {"P_USER": "u", "P_PASSWORD": "hunter2"})
    assert (both.user, both.password, both.token) == ("u", "hunter2", None)
    assert "hunter2" not in repr(both)
    with pytest.raises(MissingCredentials, match="P_TOKEN, or P_USER and P_PASSWORD"):
        Credentials.from_env("P", {"P_USER": "u"})


def test_a_proxy_in_the_environment_is_used_unless_no_proxy_names_the_panel(xui, monkeypatch):
    """The port reads HTTP(S)_PROXY and NO_PROXY once, when it is made (not on every request)."""
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens: a proxy error
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with pytest.raises(PanelUnavailable, match="ProxyError"):
        port(xui).list_clients()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    bypassing = port(xui)
    monkeypatch.setenv("NO_PROXY", "")  # read once: a later change is not seen by this port
    monkeypatch.setenv("no_proxy", "")
    assert bypassing.list_clients() == []

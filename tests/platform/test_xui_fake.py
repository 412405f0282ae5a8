"""The fake 3x-ui panel behaves like the real one where Lapse's client has to cope (raw HTTP)."""

from __future__ import annotations

import pytest
import requests

from lapse.ports.fakes import xui as fake


@pytest.fixture
def xui(httpserver):
    return fake.FakeXui.serve(httpserver)


def session_login(xui, password=fake.PASSWORD):
    http = requests.Session()
    csrf = http.get(f"{xui.url}/csrf-token", timeout=5).json()["obj"]
    answer = http.post(f"{xui.url}/login", json={"username": fake.USER, "password": password},
                       headers={"X-CSRF-Token": csrf}, timeout=5)
    return http, csrf, answer


def test_login_needs_the_csrf_token_of_its_session(xui):
    http = requests.Session()
    http.get(f"{xui.url}/csrf-token", timeout=5)
    assert http.post(f"{xui.url}/login", json={"username": fake.USER, "password": fake.PASSWORD},
                     timeout=5).status_code == 403
    _, _, answer = session_login(xui)
    assert answer.json()["success"] and fake.COOKIE in answer.cookies


def test_a_wrong_password_is_http_200_success_false(xui):
    _, _, answer = session_login(xui, password="nope")
    assert answer.status_code == 200 and answer.json()["success"] is False


def test_the_api_without_a_session_is_404_or_401_for_xhr(xui):
    url = f"{xui.url}/panel/api/clients/list"
    assert requests.get(url, timeout=5).status_code == 404
    assert requests.get(url, headers={"X-Requested-With": "XMLHttpRequest"},
                        timeout=5).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 404


def test_a_session_post_needs_the_csrf_header(xui):
    http, csrf, _ = session_login(xui)
    url = f"{xui.url}/panel/api/clients/del/x"
    assert http.post(url, json={}, timeout=5).status_code == 403
    assert http.post(url, json={}, headers={"X-CSRF-Token": csrf}, timeout=5).json()["success"] is False


def test_adding_an_email_with_the_same_sub_id_attaches_it_and_another_is_refused(xui):
    xui.inbounds.add(2)
    headers = {"Authorization": f"Bearer {fake.TOKEN}"}
    add = f"{xui.url}/panel/api/clients/add"
    client = {"id": "k", "email": "k", "subId": "k", "enable": True}
    assert requests.post(add, json={"client": client, "inboundIds": [1]}, headers=headers,
                         timeout=5).json()["success"]
    assert requests.post(add, json={"client": client, "inboundIds": [2]}, headers=headers,
                         timeout=5).json()["success"]
    assert xui.clients["k"]["inboundIds"] == [1, 2]
    other = client | {"subId": "other"}
    assert not requests.post(add, json={"client": other, "inboundIds": [1]}, headers=headers,
                             timeout=5).json()["success"]


def test_an_update_replaces_every_field(xui):
    xui.put_client("k", uuid_="k", sub_id="k", comment="lapse", flow="xtls-rprx-vision")
    answer = requests.post(f"{xui.url}/panel/api/clients/update/k",
                           json={"id": "k", "email": "k", "enable": False},
                           headers={"Authorization": f"Bearer {fake.TOKEN}"}, timeout=5)
    assert answer.json()["success"]
    assert (xui.clients["k"]["flow"], xui.clients["k"]["comment"], xui.clients["k"]["subId"]) == (
        "", "", "")


def test_standalone_server_for_the_demo():
    served = fake.FakeXui.start()
    try:
        answer = requests.get(f"{served.url}/panel/api/inbounds/list",
                              headers={"Authorization": f"Bearer {fake.TOKEN}"}, timeout=5)
        assert [i["id"] for i in answer.json()["obj"]] == [1]
    finally:
        served.stop()


def test_the_standalone_server_keeps_a_connection_alive_like_the_panels_go_server():
    served = fake.FakeXui.start()
    http = requests.Session()
    headers = {"Authorization": f"Bearer {fake.TOKEN}"}
    try:
        for _ in range(3):
            answer = http.get(f"{served.url}/panel/api/inbounds/list", headers=headers, timeout=5)
            assert answer.json()["success"] and "close" not in answer.headers.get("Connection", "")
        assert len(served._server.open) == 1  # three requests, one connection
        served.inject(fake.drop(), on="inbounds/list")
        with pytest.raises(requests.ConnectionError):
            http.get(f"{served.url}/panel/api/inbounds/list", headers=headers, timeout=5)
        assert http.get(f"{served.url}/panel/api/inbounds/list", headers=headers,
                        timeout=5).json()["success"]  # a new connection after the drop
    finally:
        served.stop()
    with pytest.raises(requests.ConnectionError):  # stopped: the kept-alive connection is closed too
        http.get(f"{served.url}/panel/api/inbounds/list", headers=headers, timeout=5)

"""The 3x-ui panel port: the clients of one inbound, by email, through py3xui 0.7.

A Lapse client has ``id`` = ``email`` = ``subId`` = the key UUID and
``comment`` = ``lapse``. The panel's quirks (SPEC §6 "Panel facts") shape
every call:

- py3xui has no timeout and retries connection errors itself: its transport
  is replaced by one ``requests`` session with a timeout and one attempt per
  request; this port retries 5xx and transport errors with backoff behind a
  circuit breaker, like the other ports.
- An expired session answers 404, not 401: log in again once, then fail. A
  404 that survives a fresh login, while the inbounds API answers, means the
  panel predates v3.1 (no ``/panel/api/clients/*``): ``PanelTooOld``.
- A refused login raises ``PanelLoginRefused`` at once and is never retried
  here (five refusals lock the address out); the caller marks the panel.
- Errors are HTTP 200 ``{success: false, msg: <translated text>}``: the text
  is never read; the client is read back by email to learn what happened.
  Adding our own existing client is success; deleting a missing one is
  success; an email held by a client Lapse did not create is ``ForeignClient``.
- ``delete(uuid)``, ``delDepleted`` and ``resetAllTraffics`` are never called.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote, urlparse

import requests
from py3xui import Client
from py3xui.api import ClientApi

from domain.panels import Panel
from lapse.platform.breaker import CircuitBreaker
from lapse.platform.errors import LapseError, PermanentError, RetryableError

COMMENT = "lapse"
# py3xui logs every call at INFO (one line per client looked up): Lapse logs its own counts.
_PY3XUI_LOG = logging.getLogger("lapse.ports.panel.py3xui")
_PY3XUI_LOG.setLevel(logging.WARNING)
T = TypeVar("T")
_TRANSPORT = (requests.ConnectionError, requests.Timeout,
              requests.exceptions.ChunkedEncodingError)
_JSON = {"Accept": "application/json"}


class PanelUnavailable(RetryableError):
    """The panel did not answer usefully after the retries (timeouts, 5xx, dropped connections)."""

    def __init__(self, panel: str, problem: str) -> None:
        super().__init__(f"panel {panel}: unreachable: {problem}")
        self.panel = panel


class PanelGarbage(RetryableError):
    """The panel answered with a body Lapse cannot read; nothing was done with it."""

    def __init__(self, panel: str, problem: str) -> None:
        super().__init__(f"panel {panel}: unreadable answer: {problem}")
        self.panel = panel


class PanelRefused(RetryableError):
    """The panel answered success=false and reading the client back does not explain it."""

    def __init__(self, panel: str, action: str, message: str) -> None:
        super().__init__(f"panel {panel}: {action} refused ({message!r})")
        self.panel = panel


class PanelSessionLost(RetryableError):
    """The panel answered 404 again right after a fresh login (a proxy dropping the cookie?)."""

    def __init__(self, panel: str) -> None:
        super().__init__(f"panel {panel}: the session is not kept: 404 again after a fresh login")
        self.panel = panel


class PanelLoginRefused(PermanentError):
    """The panel refused Lapse's credentials; the caller marks the panel, nothing logs in again
    until ``lapse panel check`` succeeds (5 refusals lock the address out for 15 minutes)."""

    def __init__(self, panel: str, how: str) -> None:
        super().__init__(f"panel {panel}: login refused ({how}); check the credentials, then "
                         "run `lapse panel check`")
        self.panel = panel


class PanelTooOld(PermanentError):
    """The panel has no ``/panel/api/clients/*`` (3x-ui older than v3.1)."""

    def __init__(self, panel: str) -> None:
        super().__init__(f"panel {panel}: too old: no /panel/api/clients/* (3x-ui v3.1 or newer "
                         "is needed)")
        self.panel = panel


class ForeignClient(PermanentError):
    """The key's email is held on the panel by a client Lapse did not create."""

    def __init__(self, panel: str, email: str) -> None:
        super().__init__(f"panel {panel}: email {email} is already in use by a client Lapse did "
                         "not create; it is left alone")
        self.panel, self.email = panel, email


class MissingCredentials(PermanentError):
    """The environment lacks the variables a panel's credentials prefix names."""

    def __init__(self, prefix: str) -> None:
        super().__init__(f"{prefix}_TOKEN, or {prefix}_USER and {prefix}_PASSWORD, must be set "
                         "in the environment")
        self.prefix = prefix


@dataclass(frozen=True)
class Credentials:
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, prefix: str, environ: Mapping[str, str] | None = None) -> Credentials:
        """PREFIX_TOKEN, or PREFIX_USER and PREFIX_PASSWORD; MissingCredentials otherwise."""
        env = os.environ if environ is None else environ

        def value(suffix: str) -> str | None:
            text = env.get(f"{prefix}_{suffix}", "").strip()
            return text or None

        token, user, password = value("TOKEN"), value("USER"), value("PASSWORD")
        if token is None and (user is None or password is None):
            raise MissingCredentials(prefix)
        return cls(user=user, password=password, token=token)


@dataclass(frozen=True)
class PanelClient:
    email: str
    uuid: str
    sub_id: str
    comment: str
    enable: bool
    inbound_ids: tuple[int, ...]

    @property
    def is_lapse(self) -> bool:
        return self.comment == COMMENT

    def is_key(self, key: str) -> bool:
        """The client Lapse creates for ``key`` (a retried add finds it)."""
        return self.is_lapse and self.uuid == key and self.sub_id == key


class _Refusal(Exception):
    """The panel answered HTTP 200 with success=false (its msg is for logs only)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Transport(ClientApi):
    """py3xui's client API on one requests session with a timeout and a single attempt.

    py3xui 0.7 calls ``requests.get``/``post`` with no timeout and retries connection
    errors itself (3×, sleeping); its one request method is overridden here so the
    port owns timeouts, retries and the breaker. py3xui keeps the session cookie
    itself, so the requests session stores none (a re-login starts clean)."""

    def __init__(self, url: str, credentials: Credentials, timeout: float) -> None:
        super().__init__(url, credentials.user, credentials.password, token=credentials.token,
                         logger=_PY3XUI_LOG)
        self.timeout = timeout
        self.http = requests.Session()
        self.http.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        # The environment's proxies and CA bundle are read once here, not on every request
        # (requests scans os.environ and ~/.netrc per call otherwise: a seventh of a removal's CPU).
        self.http.trust_env = False
        self.http.proxies = requests.utils.get_environ_proxies(url)
        self.http.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                            or True)

    def _request_with_retry(self, method: Callable[..., requests.Response], url: str,
                            headers: dict[str, str], **kwargs: Any) -> requests.Response:
        if not kwargs.pop("is_csrf_request", False):
            headers = self._generate_headers(headers)
        skip_check = kwargs.pop("skip_check", False)
        response = self.http.request(method.__name__.upper(), url, headers=headers,
                                     cookies=self.cookies, timeout=self.timeout, **kwargs)
        response.raise_for_status()
        if not skip_check:
            self._check_response(response)
        return response

    # py3xui refuses to send without a session it knows of; here the port owns the login
    # state: a request without a session is answered 404 and handled as an expired one
    # (another thread may be logging in again at that moment).
    def _post(self, url: str, headers: dict[str, str], data: dict[str, Any],
              **kwargs: Any) -> requests.Response:
        kwargs.pop("is_login", None)
        return self._request_with_retry(requests.post, url, headers, json=data, **kwargs)

    def _get(self, url: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
        kwargs.pop("is_login", None)
        return self._request_with_retry(requests.get, url, headers, **kwargs)

    def _check_response(self, response: requests.Response) -> None:
        body = response.json()
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise _Garbage(f"HTTP {response.status_code}: {response.text[:200]!r}")
        if not body["success"]:
            raise _Refusal(str(body.get("msg") or ""))


class _Garbage(ValueError):
    """A JSON body without the panel's envelope."""


class XuiPanel:
    def __init__(self, name: str, url: str, inbound_id: int, credentials: Credentials, *,
                 timeout: float = 10.0, attempts: int = 3, backoff: float = 0.5,
                 breaker: CircuitBreaker | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.name, self.inbound_id = name, inbound_id
        self.api = _Transport(url.rstrip("/"), credentials, timeout)
        self.attempts, self.backoff, self.sleep = attempts, backoff, sleep
        self.breaker = breaker or CircuitBreaker(f"panel:{name}")
        self.logged_in = credentials.token is not None
        self._login_lock = threading.Lock()

    # -- the port's actions -------------------------------------------------------------

    def login(self) -> None:
        """Log in now (user and password with CSRF); with a token, check it is accepted."""
        if self.api.token is not None:
            self._call(lambda: self._get_json("panel/api/inbounds/list"))
            return
        self.logged_in = False
        self._call(lambda: None)

    def add_client(self, key: str) -> PanelClient:
        """Add the client of ``key`` to the inbound; our client already there is success."""
        client = Client(id=key, email=key, sub_id=key, comment=COMMENT, enable=True)
        return self._call(lambda: self._add(client))

    def get_client(self, email: str) -> PanelClient | None:
        return self._call(lambda: self._read(email))

    def remove_client(self, email: str) -> None:
        """Remove the client by email; a client that is not there is success."""
        self._call(lambda: self._remove(email))

    def list_clients(self, *, only_lapse: bool = True) -> list[PanelClient]:
        """The inbound's clients (Lapse's, ``comment = lapse``, unless ``only_lapse=False``)."""
        return self._call(lambda: [c for c in self._list()
                                   if c.is_lapse or not only_lapse])

    def list_emails(self) -> list[tuple[str, str]]:
        """(email, comment) of every client of the inbound, read compactly: each client record is
        reduced as it is parsed, so reconcile can list 100,000 clients in little memory."""
        return self._call(self._list_compact)

    def inbound_exists(self) -> bool:
        """Whether the configured inbound is on the panel (``lapse panel check``)."""
        def probe() -> bool:
            try:
                return isinstance(self._get_json(f"panel/api/inbounds/get/{self.inbound_id}"), dict)
            except _Refusal:
                return False
        return self._call(probe)

    def update_client(self, email: str, **changes: Any) -> PanelClient:
        """Change some fields: the panel replaces every field, so read, change, write back."""
        return self._call(lambda: self._update(email, changes))

    # -- one attempt of each ------------------------------------------------------------

    def _login(self) -> None:
        try:
            self.api.login()
        except _Refusal as refusal:
            raise PanelLoginRefused(self.name, f"success=false: {refusal.message}") from None
        except requests.HTTPError as error:
            status = error.response.status_code if error.response is not None else 0
            if status == 404:
                raise PanelTooOld(self.name) from None
            if status < 500:
                raise PanelLoginRefused(self.name, f"HTTP {status}") from None
            raise
        except (_Garbage, requests.JSONDecodeError):
            raise
        except ValueError as error:  # py3xui: no CSRF token, or no session cookie, in the answer
            raise _Garbage(f"login: {error}") from None
        self.logged_in = True

    def _add(self, client: Client) -> PanelClient:
        key = str(client.email)
        try:
            self.api.add(self.inbound_id, [client])
        except _Refusal as refusal:
            found = self._read(key)
            if found is None:
                raise PanelRefused(self.name, f"add {key}", refusal.message) from None
            if not found.is_key(key):
                raise ForeignClient(self.name, key) from None
            if self.inbound_id not in found.inbound_ids:
                raise PanelRefused(self.name, f"add {key}", refusal.message) from None
            return found
        return PanelClient(email=key, uuid=key, sub_id=key, comment=COMMENT, enable=True,
                           inbound_ids=(self.inbound_id,))

    def _read(self, email: str) -> PanelClient | None:
        # 3x-ui answers an unknown email with success=false (a bare ValueError in py3xui's
        # get_by_email); the client record with every inbound it is on is in obj.client.
        try:
            obj = self._get_json(f"panel/api/clients/get/{quote(email, safe='')}")
        except _Refusal:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("client"), dict):
            raise _Garbage(f"clients/get: no client in {str(obj)[:200]}")
        return _client(obj["client"] | {"inboundIds": obj.get("inboundIds")})

    def _remove(self, email: str) -> None:
        try:
            self.api._post(self.api._url(f"panel/api/clients/del/{quote(email, safe='')}"),
                           dict(_JSON), {})
        except _Refusal as refusal:
            if self._read(email) is not None:
                raise PanelRefused(self.name, f"remove {email}", refusal.message) from None

    def _list(self) -> list[PanelClient]:
        rows = self._get_json("panel/api/clients/list")
        if not isinstance(rows, list):
            raise _Garbage(f"clients/list: obj is not a list: {str(rows)[:200]}")
        clients = [_client(row) for row in rows]
        return [c for c in clients if self.inbound_id in c.inbound_ids]

    def _list_compact(self) -> list[tuple[str, str]]:
        response = self.api._get(self.api._url("panel/api/clients/list"), dict(_JSON),
                                 skip_check=True)
        try:
            body = json.loads(response.content, object_hook=_compact_client)
        except ValueError as error:
            raise _Garbage(f"clients/list: {error}") from None
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise _Garbage(f"clients/list: HTTP {response.status_code}: {str(body)[:200]!r}")
        if not body["success"]:
            raise _Refusal(str(body.get("msg") or ""))
        rows = body.get("obj")
        if not isinstance(rows, list) or not all(isinstance(r, _Compact) for r in rows):
            raise _Garbage(f"clients/list: obj is not a list of clients: {str(rows)[:200]}")
        return [(r.email, r.comment) for r in rows if self.inbound_id in r.inbound_ids]

    def _update(self, email: str, changes: dict[str, Any]) -> PanelClient:
        obj = self._get_json(f"panel/api/clients/get/{quote(email, safe='')}")
        if not isinstance(obj, dict) or not isinstance(obj.get("client"), dict):
            raise _Garbage(f"clients/get: no client in {str(obj)[:200]}")
        record = dict(obj["client"])
        record.update(changes)
        record["id"] = record.get("uuid") or email  # the record's id is the row number
        self.api._post(self.api._url(f"panel/api/clients/update/{quote(email, safe='')}"),
                       dict(_JSON), record)
        return _client(record | {"inboundIds": obj.get("inboundIds")})

    def _get_json(self, endpoint: str) -> Any:
        return self.api._get(self.api._url(endpoint), dict(_JSON)).json().get("obj")

    # -- login, re-login, retries, breaker ----------------------------------------------

    def _call(self, action: Callable[[], T]) -> T:
        self.breaker.before_call()
        problem = "no attempt made"
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                result = self._authenticated(action)
            except _TRANSPORT as error:
                problem = f"{type(error).__name__}: {error}"
                continue
            except requests.HTTPError as error:
                status = error.response.status_code if error.response is not None else 0
                if status >= 500:
                    problem = f"HTTP {status}"
                    continue
                self.breaker.succeeded()
                raise PanelGarbage(self.name, f"HTTP {status} from {_path(error)}") from None
            except (requests.JSONDecodeError, _Garbage) as error:
                self.breaker.succeeded()
                raise PanelGarbage(self.name, str(error)[:300]) from None
            except _Refusal as refusal:
                self.breaker.succeeded()
                raise PanelRefused(self.name, "the call", refusal.message) from None
            except LapseError:
                self.breaker.succeeded()  # the panel answered; the failure is not its outage
                raise
            self.breaker.succeeded()
            return result
        self.breaker.failed()
        raise PanelUnavailable(self.name, f"{problem} after {self.attempts} attempts")

    def _authenticated(self, action: Callable[[], T]) -> T:
        used = self._ensure_login()
        try:
            return action()
        except requests.HTTPError as error:
            if not _is_404(error):
                raise
        if self.api.token is None:
            self._login_again(used)  # an expired session answers 404: log in again, once
            try:
                return action()
            except requests.HTTPError as error:
                if not _is_404(error):
                    raise
        self._explain_404()

    def _ensure_login(self) -> str | None:
        with self._login_lock:
            if not self.logged_in:
                self._login()
            return self.api.session

    def _login_again(self, used: str | None) -> None:
        # Threads whose calls failed on the same session log in once between them.
        with self._login_lock:
            if self.api.session == used:
                self.logged_in = False
                self._login()

    def _explain_404(self) -> NoReturn:
        """404 on the clients API after a fresh login (or with a token): too old, or refused."""
        try:
            self._get_json(f"panel/api/inbounds/get/{self.inbound_id}")
        except requests.HTTPError as error:
            if not _is_404(error):
                raise
            if self.api.token is not None:
                raise PanelLoginRefused(self.name, "the API answers 404: token not accepted"
                                        ) from None
            raise PanelSessionLost(self.name) from None
        except _Refusal:
            pass  # the inbounds API answered: it exists, the clients API does not
        raise PanelTooOld(self.name)


def _is_404(error: requests.HTTPError) -> bool:
    return error.response is not None and error.response.status_code == 404


def _path(error: requests.HTTPError) -> str:
    request = error.request
    return str(urlparse(str(request.url)).path) if request is not None else "?"


def _client(row: Any) -> PanelClient:
    try:
        inbound_ids = tuple(int(i) for i in (row.get("inboundIds") or ()))
        return PanelClient(email=str(row["email"]), uuid=str(row.get("uuid") or row.get("id")),
                           sub_id=str(row.get("subId") or ""), comment=str(row.get("comment") or ""),
                           enable=bool(row.get("enable", True)), inbound_ids=inbound_ids)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise _Garbage(f"a client Lapse cannot read ({error!r}): {str(row)[:200]}") from None


class _Compact(tuple[str, str, tuple[int, ...]]):
    """One client of a list, reduced while parsing: email, comment, inbound ids."""

    __slots__ = ()

    @property
    def email(self) -> str:
        return self[0]

    @property
    def comment(self) -> str:
        return self[1]

    @property
    def inbound_ids(self) -> tuple[int, ...]:
        return self[2]


def _compact_client(row: dict[str, Any]) -> Any:
    """``json.loads`` object hook: a client record becomes a small ``_Compact``; others stay."""
    if "email" not in row or "success" in row:
        return row
    try:
        return _Compact((str(row["email"]), sys.intern(str(row.get("comment") or "")),
                         tuple(int(i) for i in (row.get("inboundIds") or ()))))
    except (TypeError, ValueError) as error:
        raise _Garbage(f"a client Lapse cannot read ({error!r}): {str(row)[:200]}") from None


_breakers: dict[str, CircuitBreaker] = {}
_ports: dict[tuple[Any, ...], XuiPanel] = {}
_ports_lock = threading.Lock()


def connect(panel: Panel, *, timeout: float | None = None,
            environ: Mapping[str, str] | None = None) -> XuiPanel:
    """The process's port for one ``panels`` row, its credentials read from the environment now.

    Threads share one port per panel (one session, one login) and one circuit breaker
    per panel, so a down panel is not hammered by each worker thread and the others are
    not held back. A changed row or changed credentials make a new port."""
    if timeout is None:
        from lapse.platform.config import settings

        timeout = settings().panel_timeout_seconds
    credentials = Credentials.from_env(panel.credentials_env, environ)
    key = (panel.name, panel.url, panel.inbound_id, credentials, timeout)
    with _ports_lock:
        if panel.name not in _breakers:
            _breakers[panel.name] = CircuitBreaker(f"panel:{panel.name}")
        if key not in _ports:
            _ports[key] = XuiPanel(panel.name, panel.url, panel.inbound_id, credentials,
                                   timeout=timeout, breaker=_breakers[panel.name])
        return _ports[key]

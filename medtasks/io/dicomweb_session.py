"""DICOMweb addresses, credentials, TLS, timeouts and errors: the session that :mod:`medtasks.io.dicomweb` uses.

* **Addresses**: ``dicomweb:<base-url>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]``, where
  ``<base-url>`` is the server's DICOMweb root over http or https, e.g.
  ``dicomweb:https://pacs.example.org/dicom-web/studies/1.2.3``. Credentials in the URL are refused
  (they would land in shell history, process lists and logs).
* **Credentials**, never from the command line, never logged: ``$MEDTASKS_DICOMWEB_TOKEN`` (a bearer token),
  else ``$MEDTASKS_DICOMWEB_USER`` + ``$MEDTASKS_DICOMWEB_PASSWORD`` (HTTP basic), else the netrc entry for the
  server's host (``$NETRC`` or ``~/.netrc``), else none.
* **TLS**: certificates are verified by default (``$REQUESTS_CA_BUNDLE`` is honoured as by ``requests``);
  ``$MEDTASKS_DICOMWEB_CA_BUNDLE`` names a hospital CA bundle; ``MEDTASKS_DICOMWEB_INSECURE=1`` turns
  verification off, with a warning.
* **Timeouts**: every request has a (connect, read) timeout, 10 s and 120 s unless the caller or
  ``$MEDTASKS_DICOMWEB_TIMEOUT`` (``"read"`` or ``"connect,read"`` in seconds) says otherwise; the session
  itself adds the default to any request made without one, so no request can hang.
* **Errors** are :class:`DicomWebError` (a ``ValueError``) with a message a user can act on; :func:`translate`
  turns a failed request into one (never with a header or a secret in it).

Example:
    >>> src = parse_dicomweb_url("dicomweb:https://pacs.example.org/dicom-web/studies/1.2.3/series/1.2.3.4")
    >>> src.base_url, src.study_uid, src.series_uid
    ('https://pacs.example.org/dicom-web', '1.2.3', '1.2.3.4')
"""

from __future__ import annotations

import ipaddress
import logging
import netrc
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

__all__ = [
    "DEFAULT_TIMEOUT", "ENV_CA_BUNDLE", "ENV_INSECURE", "ENV_PASSWORD", "ENV_TIMEOUT", "ENV_TOKEN", "ENV_USER",
    "SCHEME", "AuthRefused", "DicomWebError", "DicomWebSource", "Unreachable", "check_base_url", "check_uid",
    "is_dicomweb_url", "make_client", "make_session", "parse_dicomweb_url", "translate",
]

logger = logging.getLogger(__name__)

SCHEME = "dicomweb:"
ENV_TOKEN = "MEDTASKS_DICOMWEB_TOKEN"
ENV_USER = "MEDTASKS_DICOMWEB_USER"
ENV_PASSWORD = "MEDTASKS_DICOMWEB_PASSWORD"
ENV_CA_BUNDLE = "MEDTASKS_DICOMWEB_CA_BUNDLE"
ENV_INSECURE = "MEDTASKS_DICOMWEB_INSECURE"
ENV_TIMEOUT = "MEDTASKS_DICOMWEB_TIMEOUT"
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 120.0)

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_TRUE = {"1", "true", "yes", "on"}


class DicomWebError(ValueError):
    """A DICOMweb transfer failed; the message says why and what to do (never a secret).

    Attributes:
        missing: SOPInstanceUIDs a partial retrieval could not fetch (empty otherwise).
    """

    def __init__(self, message: str, missing: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)


class AuthRefused(DicomWebError):
    """401/403: retrying cannot help."""


class Unreachable(DicomWebError):
    """The connection itself failed (refused, DNS, TLS, connect/read timeout)."""


@dataclass(frozen=True)
class DicomWebSource:
    """A study, or one series of it, on a DICOMweb server."""

    base_url: str
    study_uid: str
    series_uid: str | None = None

    @property
    def host(self) -> str:
        """``host[:port]`` of the server, for messages."""
        return urlsplit(self.base_url).netloc

    def describe(self) -> str:
        """``study <uid>`` or ``series <uid> of study <uid>``."""
        if self.series_uid:
            return f"series {self.series_uid} of study {self.study_uid}"
        return f"study {self.study_uid}"

    def __str__(self) -> str:
        tail = f"/series/{self.series_uid}" if self.series_uid else ""
        return f"{SCHEME}{self.base_url}/studies/{self.study_uid}{tail}"


def is_dicomweb_url(text: str | os.PathLike[str]) -> bool:
    """Whether ``text`` is meant as a DICOMweb address (starts with ``dicomweb:``)."""
    return isinstance(text, str) and text.startswith(SCHEME)


def check_base_url(url: str) -> str:
    """The http(s) base URL without a trailing slash; :class:`DicomWebError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomWebError(f"not an http(s) DICOMweb address: {_redact(url)!r}; expected e.g. "
                            f"{SCHEME}https://pacs.example.org/dicom-web/studies/<StudyInstanceUID>")
    if parts.username is not None or parts.password is not None:
        raise DicomWebError("credentials in the DICOMweb URL are not accepted (they would end up in shell history "
                            f"and logs): remove them and set {ENV_TOKEN}, or {ENV_USER} + {ENV_PASSWORD}, "
                            f"or a netrc entry for {parts.hostname}")
    if parts.query or parts.fragment:
        raise DicomWebError(f"a DICOMweb address takes no query or fragment: {_redact(url)!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise DicomWebError(f"malformed port in DICOMweb address {_redact(url)!r}") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` removed (for messages about a URL that is being refused)."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def check_uid(uid: str, what: str, where: str) -> str:
    if len(uid) > 64 or not _UID_RE.match(uid):
        raise DicomWebError(f"{what} {uid[:80]!r} in {where} is not a valid DICOM UID (digits and dots, at most "
                            "64 characters)")
    return uid


def parse_dicomweb_url(url: str | DicomWebSource) -> DicomWebSource:
    """Split ``dicomweb:<base-url>/studies/<uid>[/series/<uid>]`` into a :class:`DicomWebSource`.

    Args:
        url: The address; ``<base-url>`` is http or https (the server's DICOMweb root, e.g.
            ``http://127.0.0.1:8042/dicom-web``). A :class:`DicomWebSource` is returned as is.

    Raises:
        DicomWebError: Not ``dicomweb:``, not http(s), credentials in the URL, no ``/studies/<uid>``, a
            malformed UID, or anything after the series UID.
    """
    if isinstance(url, DicomWebSource):
        return url
    text = str(url).strip()
    if not text.startswith(SCHEME):
        raise DicomWebError(f"not a DICOMweb address: {_redact(text)!r}; expected "
                            f"{SCHEME}<base-url>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]")
    full = check_base_url(text[len(SCHEME):])
    parts = urlsplit(full)
    segments = parts.path.split("/")
    if "studies" not in segments:
        raise DicomWebError(f"no /studies/<StudyInstanceUID> in {_redact(text)!r}; expected "
                            f"{SCHEME}<base-url>/studies/<StudyInstanceUID>[/series/<SeriesInstanceUID>]")
    at = len(segments) - 1 - segments[::-1].index("studies")
    tail = segments[at + 1:]
    if not tail or not tail[0]:
        raise DicomWebError(f"the StudyInstanceUID is missing after /studies/ in {_redact(text)!r}")
    study = check_uid(tail[0], "StudyInstanceUID", text)
    series = None
    if len(tail) > 1:
        if len(tail) != 3 or tail[1] != "series" or not tail[2]:
            raise DicomWebError(f"unexpected path after the study in {_redact(text)!r}; only "
                                "/studies/<StudyInstanceUID> or /studies/<uid>/series/<SeriesInstanceUID> is accepted")
        series = check_uid(tail[2], "SeriesInstanceUID", text)
    base = f"{parts.scheme}://{parts.netloc}{'/'.join(segments[:at])}"
    return DicomWebSource(base_url=base.rstrip("/"), study_uid=study, series_uid=series)


# --------------------------------------------------------------------------------------------------- session


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>``; the token never shows in a repr."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(<hidden>)"


class _TimeoutSession(requests.Session):
    """A session that gives every request a timeout, whoever makes it, and keeps its own ``verify``.

    ``requests`` lets ``$REQUESTS_CA_BUNDLE`` override a session's ``verify`` (psf/requests#3829), which would
    silently drop ``$MEDTASKS_DICOMWEB_CA_BUNDLE`` and even an explicit "off"; passing it per request keeps it
    (``True`` still picks up ``$REQUESTS_CA_BUNDLE``).
    """

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        return super().request(method, url, *args, **kwargs)


def _timeout(timeout: float | tuple[float, float] | None, env: Mapping[str, str]) -> tuple[float, float]:
    """(connect, read) seconds from the argument, else ``$MEDTASKS_DICOMWEB_TIMEOUT``, else the default."""
    if timeout is None:
        text = env.get(ENV_TIMEOUT, "").strip()
        if not text:
            return DEFAULT_TIMEOUT
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) not in (1, 2) or min(values) <= 0:
            raise DicomWebError(f"${ENV_TIMEOUT}={text!r}: expected seconds as 'read' or 'connect,read', e.g. '10,300'")
        timeout = values[0] if len(values) == 1 else (values[0], values[1])
    if isinstance(timeout, (int, float)):
        return (min(float(timeout), DEFAULT_TIMEOUT[0]), float(timeout))
    connect, read = (float(v) for v in timeout)
    if connect <= 0 or read <= 0:
        raise DicomWebError(f"timeouts must be positive seconds, got {timeout!r}")
    return connect, read


def _netrc_auth(host: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(login, password) of the netrc entry for ``host``; errors name the file, never its content."""
    path = Path(env["NETRC"]).expanduser() if env.get("NETRC") else Path.home() / ".netrc"
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(host)
    except netrc.NetrcParseError as exc:
        hint = "; it must not be readable by others (chmod 600)" if "permissive" in str(exc.msg) else ""
        raise DicomWebError(f"cannot read the netrc file {path} (line {exc.lineno}){hint}") from None
    except OSError as exc:
        raise DicomWebError(f"cannot read the netrc file {path}: {exc.strerror}") from None
    if entry is None or not entry[2]:
        return None
    return entry[0] or "", entry[2]


def _credentials(host: str, env: Mapping[str, str]) -> tuple[requests.auth.AuthBase | None, str]:
    """The auth for ``host`` and where it came from (a description without the secret)."""
    token = env.get(ENV_TOKEN, "").strip()
    user, password = env.get(ENV_USER, ""), env.get(ENV_PASSWORD, "")
    if token and (user or password):
        raise DicomWebError(f"set either {ENV_TOKEN} or {ENV_USER} + {ENV_PASSWORD}, not both")
    if token:
        return _BearerAuth(token), f"a bearer token from ${ENV_TOKEN}"
    if user or password:
        if not (user and password):
            missing = ENV_PASSWORD if user else ENV_USER
            raise DicomWebError(f"{ENV_USER} and {ENV_PASSWORD} go together: set {missing} too")
        return requests.auth.HTTPBasicAuth(user, password), f"basic auth for user ${ENV_USER} from the environment"
    entry = _netrc_auth(host, env)
    if entry is not None:
        return requests.auth.HTTPBasicAuth(*entry), f"the netrc entry for {host}"
    return None, "no credentials"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_session(base_url: str, *, timeout: float | tuple[float, float] | None = None,
                 env: Mapping[str, str] | None = None) -> requests.Session:
    """A ``requests`` session for ``base_url``: credentials, TLS verification and a default timeout.

    Args:
        base_url: The DICOMweb root (http or https).
        timeout: Seconds, ``read`` or ``(connect, read)``; ``None``: ``$MEDTASKS_DICOMWEB_TIMEOUT`` or 10 s / 120 s.
        env: The environment to read settings from (default ``os.environ``).

    Raises:
        DicomWebError: Bad URL, inconsistent credential variables, unreadable netrc, missing CA bundle.
    """
    env = os.environ if env is None else env
    base_url = check_base_url(base_url)
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    session = _TimeoutSession(_timeout(timeout, env))
    auth, source = _credentials(host, env)
    session.auth = auth
    logger.debug("DICOMweb %s: %s", parts.netloc, source)
    if auth is not None and parts.scheme == "http" and not _is_loopback(host):
        logger.warning("sending credentials to %s over unencrypted http; use its https address", parts.netloc)
    if env.get(ENV_INSECURE, "").strip().lower() in _TRUE:
        session.verify = False
        logger.warning("TLS certificate verification is OFF for %s (%s is set): the connection can be intercepted; "
                       "prefer %s=<your CA bundle>", parts.netloc, ENV_INSECURE, ENV_CA_BUNDLE)
        import urllib3

        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    elif env.get(ENV_CA_BUNDLE):
        bundle = Path(env[ENV_CA_BUNDLE]).expanduser()
        if not bundle.is_file():
            raise DicomWebError(f"${ENV_CA_BUNDLE} points at {bundle}, which is not a file; give the PEM bundle of "
                                "the CA that signed the server's certificate")
        session.verify = str(bundle)
    return session


def make_client(base_url: str, *, timeout: float | tuple[float, float] | None = None,
                env: Mapping[str, str] | None = None) -> Any:
    """A ``dicomweb_client.DICOMwebClient`` on :func:`make_session` (its own retries off: ours are bounded).

    Raises:
        DicomWebError: As :func:`make_session`.
    """
    from dicomweb_client import DICOMwebClient

    if is_dicomweb_url(base_url):
        base_url = base_url[len(SCHEME):]
    session = make_session(base_url, timeout=timeout, env=env)
    # dicomweb-client logs every instance at INFO; quiet unless someone configured its logger.
    # The `retrying` package it uses logs every failed request with a traceback at WARNING; our errors say it once.
    for name, level in (("dicomweb_client", logging.WARNING), ("retrying", logging.ERROR)):
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(level)
    client = DICOMwebClient(check_base_url(base_url), session=session, timeout=session.default_timeout)
    client.set_http_retry_params(retry=False)
    return client


# --------------------------------------------------------------------------------------------------- errors


def _credentials_hint(host: str) -> str:
    return f"set {ENV_TOKEN}, or {ENV_USER} + {ENV_PASSWORD}, or a netrc entry for {host}"


def translate(exc: Exception, *, host: str, what: str, timeout: tuple[float, float],
              not_found: str | None = None) -> DicomWebError:
    """A :class:`DicomWebError` for a failed request (the message never carries headers or credentials)."""
    if isinstance(exc, DicomWebError):
        return exc
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        status, reason = exc.response.status_code, exc.response.reason or ""
        if status in (401, 403):
            verb = "refused the credentials" if status == 401 else "denied access with these credentials"
            return AuthRefused(f"{what}: the server {host} {verb} (HTTP {status}); {_credentials_hint(host)}"
                               + (" with an account that may read and store there" if status == 403 else ""))
        if status == 404 and not_found:
            return DicomWebError(not_found)
        hint = " (a server error; try again later or ask its administrators)" if status >= 500 else ""
        return DicomWebError(f"{what}: the server {host} answered HTTP {status} {reason}{hint}".rstrip())
    if isinstance(exc, requests.exceptions.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate verify failed" in str(exc):
            return Unreachable(f"{what}: TLS verification failed for {host}: its certificate is not trusted (or not "
                               f"for this host name); set {ENV_CA_BUNDLE} to the PEM bundle of your hospital's CA")
        return Unreachable(f"{what}: the TLS handshake with {host} failed (protocol or cipher mismatch, or not an "
                           "https server: check http vs https in the address)")
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Unreachable(f"{what}: cannot connect to {host} within {timeout[0]:g} s (server down, wrong address "
                           f"or a firewall/VPN in the way); raise ${ENV_TIMEOUT} if the network is slow")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Unreachable(f"{what}: {host} did not answer within {timeout[1]:g} s; try again, or raise "
                           f"${ENV_TIMEOUT} (e.g. '10,600') for a slow server")
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        if "Name or service not known" in text or "name resolution" in text or "getaddrinfo" in text \
                or "nodename nor servname" in text:
            why = "its host name does not resolve"
        elif "refused" in text.lower():
            why = "connection refused: no server listens there"
        elif "reset" in text.lower() or "aborted" in text.lower() or "RemoteDisconnected" in text:
            why = "the connection was dropped"
        else:
            why = "connection failed"
        return Unreachable(f"{what}: cannot reach the DICOMweb server at {host} ({why}); check the address, "
                           "that the server runs, and your network/VPN")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return DicomWebError(f"{what}: the connection to {host} broke during the transfer")
    if isinstance(exc, requests.RequestException):
        return DicomWebError(f"{what}: request to {host} failed ({type(exc).__name__})")
    return DicomWebError(f"{what}: unexpected answer from {host}: {exc}")

"""DICOMweb transport against a real Orthanc (tests/orthanc.py): retrieve, store, credentials, TLS, errors.

The server tests skip, saying why, where Orthanc or its DICOMweb plugin is not installed; ``.ci/run``
installs both. Timeouts are small here so that a failure is quick, never a hang.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import time

import certifi
import numpy as np
import pydicom
import pytest
import requests

from medtasks.io import dicomweb
from medtasks.io.dicom_sr import classification_sr, read_classification_sr
from medtasks.io.dicomweb import DicomWebError, make_client, make_session, parse_dicomweb_url, retrieve, store
from tests.orthanc import PASSWORD, TlsProxy, free_port, self_signed_cert, upload_study, write_study

pytestmark = pytest.mark.timeout(120)

FAST = {"timeout": (2.0, 10.0), "backoff_s": 0.05}
TOKEN = "tok-3b9e0c1d-not-a-real-token"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; a CI proxy must not sit between these tests and 127.0.0.1."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything logged, DEBUG included (urllib3, dicomweb_client, ours)."""
    caplog.set_level(logging.DEBUG)
    for name in ("urllib3", "dicomweb_client", "medtasks", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------------------------- addresses


@pytest.mark.parametrize("url, base, study, series", [
    ("dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2.3", "http://127.0.0.1:8042/dicom-web", "1.2.3", None),
    ("dicomweb:https://pacs.example.org/dicom-web/studies/1.2.3/series/1.2.3.4/",
     "https://pacs.example.org/dicom-web", "1.2.3", "1.2.3.4"),
    ("dicomweb:https://pacs.example.org/studies/2.25.1", "https://pacs.example.org", "2.25.1", None),
    ("dicomweb:https://h/a/studies/b/studies/1.2", "https://h/a/studies/b", "1.2", None),  # the last /studies/
])
def test_parse_addresses(url, base, study, series):
    src = parse_dicomweb_url(url)
    assert (src.base_url, src.study_uid, src.series_uid) == (base, study, series)
    assert parse_dicomweb_url(str(src)) == src


@pytest.mark.parametrize("url, message", [
    ("http://h/dicom-web/studies/1.2", "not a DICOMweb address"),
    ("dicomweb:ftp://h/studies/1.2", "not an http"),
    ("dicomweb:https://h/dicom-web", r"no /studies/"),
    ("dicomweb:https://h/dicom-web/studies/", "StudyInstanceUID is missing"),
    ("dicomweb:https://h/dicom-web/studies/ID_12cadc6af", "not a valid DICOM UID"),
    ("dicomweb:https://h/dicom-web/studies/1.02", "not a valid DICOM UID"),
    ("dicomweb:https://h/studies/1.2/instances/1.2.3", "unexpected path"),
    ("dicomweb:https://h/studies/1.2?limit=1", "no query"),
    ("dicomweb:https://h:99999/studies/1.2", "malformed port"),
])
def test_parse_errors(url, message):
    with pytest.raises(DicomWebError, match=message):
        parse_dicomweb_url(url)


def test_credentials_in_the_url_are_refused_without_echoing_them():
    with pytest.raises(DicomWebError, match="credentials in the DICOMweb URL are not accepted") as err:
        parse_dicomweb_url("dicomweb:https://alice:hunter2@pacs.example.org/dicom-web/studies/1.2")
    assert_no_secret(str(err.value), "hunter2")
    with pytest.raises(DicomWebError) as err:
        store("https://alice:hunter2@pacs.example.org/dicom-web", [])
    assert_no_secret(str(err.value), "hunter2")


# --------------------------------------------------------------------------------------- session settings


def _authorization(session: requests.Session, url: str = "https://pacs.example.org/dicom-web") -> str | None:
    prepared = session.prepare_request(requests.Request("GET", url))
    return prepared.headers.get("Authorization")


def test_credentials_from_environment_and_netrc(tmp_path, logs):
    base = "https://pacs.example.org/dicom-web"
    no_netrc = {"NETRC": str(tmp_path / "absent")}
    assert _authorization(make_session(base, env={dicomweb.ENV_TOKEN: TOKEN, **no_netrc})) == f"Bearer {TOKEN}"
    env = {dicomweb.ENV_USER: "alice", dicomweb.ENV_PASSWORD: PASSWORD, **no_netrc}
    assert _authorization(make_session(base, env=env)) == f"Basic {_basic('alice', PASSWORD)}"
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine other.example.org login bob password nope\n"
                     f"machine pacs.example.org login carol password {PASSWORD}\n")
    netrc.chmod(0o600)
    assert _authorization(make_session(base, env={"NETRC": str(netrc)})) == f"Basic {_basic('carol', PASSWORD)}"
    assert _authorization(make_session("https://third.example.org/x", env={"NETRC": str(netrc)})) is None
    assert repr(make_session(base, env={dicomweb.ENV_TOKEN: TOKEN}).auth) == "_BearerAuth(<hidden>)"
    assert_no_secret(logs.text, TOKEN, PASSWORD)


@pytest.mark.parametrize("env, message", [
    ({dicomweb.ENV_USER: "alice"}, "set MEDTASKS_DICOMWEB_PASSWORD too"),
    ({dicomweb.ENV_PASSWORD: PASSWORD}, "set MEDTASKS_DICOMWEB_USER too"),
    ({dicomweb.ENV_TOKEN: TOKEN, dicomweb.ENV_USER: "a", dicomweb.ENV_PASSWORD: PASSWORD}, "not both"),
    ({dicomweb.ENV_CA_BUNDLE: "/nonexistent/ca.pem"}, "not a file"),
    ({dicomweb.ENV_TIMEOUT: "soon"}, "expected seconds"),
    ({dicomweb.ENV_TIMEOUT: "0,5"}, "expected seconds"),
])
def test_session_setting_errors(env, message):
    with pytest.raises(DicomWebError, match=message) as err:
        make_session("https://pacs.example.org/dicom-web", env=env)
    assert_no_secret(str(err.value), TOKEN, PASSWORD)


def test_netrc_parse_error_names_the_file_not_its_content(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine pacs.example.org login carol password {PASSWORD} bogus\n")
    with pytest.raises(DicomWebError, match="cannot read the netrc file") as err:
        make_session("https://pacs.example.org/x", env={"NETRC": str(netrc)})
    assert_no_secret(str(err.value), PASSWORD)


def test_tls_verification_settings(tmp_path, logs):
    base = "https://pacs.example.org/dicom-web"
    assert make_session(base, env={}).verify is True
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert make_session(base, env={dicomweb.ENV_CA_BUNDLE: str(bundle)}).verify == str(bundle)
    assert "verification is OFF" not in logs.text
    assert make_session(base, env={dicomweb.ENV_INSECURE: "1"}).verify is False
    assert "TLS certificate verification is OFF for pacs.example.org" in logs.text


def test_timeouts(logs):
    base = "https://pacs.example.org/dicom-web"
    assert make_session(base, env={}).default_timeout == dicomweb.DEFAULT_TIMEOUT
    assert make_session(base, env={dicomweb.ENV_TIMEOUT: "300"}).default_timeout == (10.0, 300.0)
    assert make_session(base, env={dicomweb.ENV_TIMEOUT: "3,60"}).default_timeout == (3.0, 60.0)
    assert make_session(base, timeout=(1, 2), env={dicomweb.ENV_TIMEOUT: "3,60"}).default_timeout == (1.0, 2.0)
    assert make_client(base, timeout=(1, 2), env={})._timeout == (1.0, 2.0)


def test_credentials_over_plain_http_to_a_remote_host_warn(logs):
    make_session("http://pacs.example.org/dicom-web", env={dicomweb.ENV_TOKEN: TOKEN})
    assert "over unencrypted http" in logs.text
    logs.clear()
    make_session("http://127.0.0.1:8042/dicom-web", env={dicomweb.ENV_TOKEN: TOKEN})
    assert "unencrypted" not in logs.text


# ------------------------------------------------------------------------------------------ no hang, ever


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections (the kernel's backlog) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as sock:
        yield int(sock.getsockname()[1])


def test_a_server_that_never_answers_times_out(silent_server, tmp_path):
    base = f"http://127.0.0.1:{silent_server}/dicom-web"
    # a bare request through the session, without a timeout argument, still gets one
    start = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        make_session(base, timeout=(0.5, 0.5), env={}).get(f"{base}/studies")
    assert time.monotonic() - start < 5
    start = time.monotonic()
    with pytest.raises(DicomWebError, match=rf"127.0.0.1:{silent_server} did not answer within 0.5 s"):
        retrieve(f"dicomweb:{base}/studies/1.2.3", tmp_path, timeout=(0.5, 0.5), attempts=2, backoff_s=0.05, env={})
    assert time.monotonic() - start < 10


def test_unreachable_server_is_reported_quickly(tmp_path):
    port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(DicomWebError, match=rf"cannot reach the DICOMweb server at 127.0.0.1:{port} "
                                            r"\(connection refused"):
        retrieve(f"dicomweb:http://127.0.0.1:{port}/dicom-web/studies/1.2.3", tmp_path, env={}, **FAST)
    study = write_study(tmp_path / "s", slices=(1,), matrix=32)
    with pytest.raises(DicomWebError, match="cannot reach"):
        store(f"http://127.0.0.1:{port}/dicom-web", list(study.files.values()), env={}, **FAST)
    with pytest.raises(DicomWebError, match="cannot store a dataset: it has no SOPClassUID, SOPInstanceUID"):
        store(f"http://127.0.0.1:{port}/dicom-web", [pydicom.Dataset()], env={}, **FAST)
    assert time.monotonic() - start < 10


def test_unknown_host_is_reported(tmp_path):
    with pytest.raises(DicomWebError, match="does not resolve|cannot reach"):
        retrieve("dicomweb:http://no-such-host.invalid/dicom-web/studies/1.2.3", tmp_path, env={}, attempts=1,
                 timeout=(2.0, 2.0))


# ------------------------------------------------------------------------------------- against Orthanc


def test_retrieve_study(orthanc, orthanc_study, tmp_path, logs):
    files = retrieve(orthanc.study_url(orthanc_study.study_uid), tmp_path, env=orthanc.env(), **FAST)
    assert sorted(f.stem for f in files) == sorted(orthanc_study.sop_uids)
    for path in files:
        series = path.parent.name
        assert path.parent.parent == tmp_path and path.stem in orthanc_study.series[series]
        original = orthanc_study.files[path.stem]
        assert path.read_bytes() == original.read_bytes()        # Orthanc keeps the file as sent
        ds = pydicom.dcmread(path)
        assert ds.SOPInstanceUID == path.stem and ds.SeriesInstanceUID == series
        assert ds.PixelData == pydicom.dcmread(original).PixelData
    assert not list(tmp_path.rglob(".*.tmp"))                    # atomic writes leave nothing behind
    # no credentials and no patient identifiers in any log line
    assert_no_secret(logs.text, PASSWORD, _basic(orthanc.user, PASSWORD), orthanc_study.patient_name)


def test_retrieve_series(orthanc, orthanc_study, tmp_path):
    series, sops = list(orthanc_study.series.items())[1]
    files = retrieve(orthanc.study_url(orthanc_study.study_uid, series), tmp_path, env=orthanc.env(), **FAST)
    assert [f.parent.name for f in files] == [series] * len(sops)
    assert sorted(f.stem for f in files) == sorted(sops)


def test_retrieve_pages_through_the_listing(orthanc, orthanc_study, tmp_path, monkeypatch):
    monkeypatch.setattr(dicomweb, "_QIDO_PAGE", 2)  # 7 instances: pages of 2, 2, 2, 1, then an empty page
    files = retrieve(orthanc.study_url(orthanc_study.study_uid), tmp_path, env=orthanc.env(), **FAST)
    assert sorted(f.stem for f in files) == sorted(orthanc_study.sop_uids)


def test_unknown_study_and_series(orthanc, orthanc_study, tmp_path):
    with pytest.raises(DicomWebError, match=rf"^study 1.2.3.4.5 not found on {orthanc.dicomweb}$"):
        retrieve(orthanc.study_url("1.2.3.4.5"), tmp_path, env=orthanc.env(), **FAST)
    with pytest.raises(DicomWebError, match=rf"series 1.2.3.9 of study {orthanc_study.study_uid} not found"):
        retrieve(orthanc.study_url(orthanc_study.study_uid, "1.2.3.9"), tmp_path, env=orthanc.env(), **FAST)
    # a base URL that is not the server's DICOMweb root: Orthanc answers 404
    with pytest.raises(DicomWebError, match="not found on .*/not-dicomweb.*DICOMweb root"):
        retrieve(f"dicomweb:{orthanc.url}/not-dicomweb/studies/1.2.3", tmp_path, env=orthanc.env(), **FAST)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["wrong password", "token", "none"])
def test_refused_credentials(orthanc, orthanc_study, tmp_path, logs, kind):
    env = {"wrong password": orthanc.env(MEDTASKS_DICOMWEB_PASSWORD="wrong-" + PASSWORD),
           "token": {dicomweb.ENV_TOKEN: TOKEN, "NETRC": str(tmp_path / "none")},
           "none": {"NETRC": str(tmp_path / "none")}}[kind]
    start = time.monotonic()
    with pytest.raises(DicomWebError, match=r"refused the credentials \(HTTP 401\); set MEDTASKS_DICOMWEB_TOKEN, "
                                            r"or MEDTASKS_DICOMWEB_USER \+ MEDTASKS_DICOMWEB_PASSWORD, or a netrc "
                                            r"entry for 127.0.0.1") as err:
        retrieve(orthanc.study_url(orthanc_study.study_uid), tmp_path, env=env, **FAST)
    assert time.monotonic() - start < 5                         # a 401 is not retried
    with pytest.raises(DicomWebError, match="HTTP 401"):
        store(orthanc.dicomweb, [orthanc_study.files[orthanc_study.sop_uids[0]]], env=env, **FAST)
    secrets = (PASSWORD, TOKEN, _basic(orthanc.user, "wrong-" + PASSWORD))
    assert_no_secret(str(err.value), *secrets)
    assert_no_secret(logs.text, *secrets)


def test_netrc_entry_is_used(orthanc, orthanc_study, tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {orthanc.user} password {orthanc.password}\n")
    netrc.chmod(0o600)
    series, sops = list(orthanc_study.series.items())[1]
    files = retrieve(orthanc.study_url(orthanc_study.study_uid, series), tmp_path / "out", env={"NETRC": str(netrc)},
                     **FAST)
    assert len(files) == len(sops)


@pytest.fixture
def small_study(orthanc, tmp_path):
    """A fresh 3-instance study of this test alone (deleted afterwards)."""
    study = write_study(tmp_path / "small", slices=(3,), matrix=32)
    upload_study(orthanc, study)
    yield study
    orthanc.delete_study(study.study_uid)


def _deleting_client(orthanc, study, victim: str, calls: list[str]):
    """A real client whose first request for ``victim`` is preceded by deleting it on the server (between
    the QIDO listing and its WADO retrieval, as when someone deletes it mid-transfer)."""
    client = make_client(orthanc.dicomweb, env=orthanc.env(), timeout=FAST["timeout"])
    real = client.retrieve_instance

    def retrieve_instance(study_uid, series_uid, sop_uid, *args, **kwargs):
        calls.append(sop_uid)
        if sop_uid == victim and calls.count(victim) == 1:
            orthanc.delete_instance(victim)
        return real(study_uid, series_uid, sop_uid, *args, **kwargs)

    client.retrieve_instance = retrieve_instance
    return client


def test_partial_retrieval_is_retried_then_reported(orthanc, small_study, tmp_path):
    victim = small_study.sop_uids[1]
    calls: list[str] = []
    client = _deleting_client(orthanc, small_study, victim, calls)
    start = time.monotonic()
    with pytest.raises(DicomWebError) as err:
        retrieve(orthanc.study_url(small_study.study_uid), tmp_path / "out", client=client, attempts=3,
                 backoff_s=0.05)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert f"1 of 3 instance(s) could not be retrieved after 3 attempt(s): {victim}" in message
    assert "HTTP 404" in message and f"The 2 retrieved instance(s) are in {tmp_path / 'out'}" in message
    assert err.value.missing == (victim,)
    assert calls.count(victim) == 3                               # bounded: one try per round
    written = sorted(p.stem for p in (tmp_path / "out").rglob("*.dcm"))
    assert written == sorted(set(small_study.sop_uids) - {victim})


def test_partial_retrieval_recovers_on_retry(orthanc, small_study, tmp_path, monkeypatch):
    victim = small_study.sop_uids[0]
    calls: list[str] = []
    client = _deleting_client(orthanc, small_study, victim, calls)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:  # the backoff: the instance comes back meanwhile
        sleeps.append(seconds)
        orthanc.upload(small_study.files[victim])

    monkeypatch.setattr(dicomweb.time, "sleep", sleep)
    files = retrieve(orthanc.study_url(small_study.study_uid), tmp_path, client=client, attempts=3, backoff_s=0.5)
    assert sorted(f.stem for f in files) == sorted(small_study.sop_uids)
    assert sleeps == [0.5] and calls.count(victim) == 2


def test_store_sr_and_read_it_back(orthanc, small_study, tmp_path, logs):
    from tests.io.test_dicom_sr import dciodvfy_errors

    pulled = retrieve(orthanc.study_url(small_study.study_uid), tmp_path / "in", env=orthanc.env(), **FAST)
    sources = [pydicom.dcmread(p, stop_before_pixels=True) for p in pulled]
    probs = np.array([[0.1, 0.7], [0.6, 0.2], [0.95, 0.05]])
    sr = classification_sr(sources, ["bleed", "any"], probs, None, "ich_classify", run_id="r42", thresholds=0.5)
    assert store(orthanc.dicomweb, [sr], env=orthanc.env(), **FAST) == [sr.SOPInstanceUID]
    # again, from a file: storing is idempotent per SOPInstanceUID
    path = tmp_path / "sr.dcm"
    pydicom.dcmwrite(path, sr, enforce_file_format=True)
    assert store(f"dicomweb:{orthanc.dicomweb}", [path], env=orthanc.env(), **FAST) == [sr.SOPInstanceUID]

    # the SR is now a series of the study: a viewer lists it beside the images
    client = make_client(orthanc.dicomweb, env=orthanc.env())
    modalities = {s["00080060"]["Value"][0] for s in client.search_for_series(small_study.study_uid)}
    assert modalities == {"CT", "SR"}
    back = retrieve(orthanc.study_url(small_study.study_uid, sr.SeriesInstanceUID), tmp_path / "out",
                    env=orthanc.env(), **FAST)
    assert [p.stem for p in back] == [sr.SOPInstanceUID]
    ds = pydicom.dcmread(back[0])
    findings = read_classification_sr(ds)
    assert [(f.label, f.probability, f.call) for f in findings] == [
        (label, probs[i, j], bool(probs[i, j] >= 0.5)) for i in range(3) for j, label in enumerate(["bleed", "any"])]
    by_row = [f.sop_instance_uids for f in findings[::2]]
    assert by_row == [(s.SOPInstanceUID,) for s in sources]
    assert set(by_row) == {(sop,) for sop in small_study.sop_uids}
    assert not dciodvfy_errors(back[0])
    assert_no_secret(logs.text, PASSWORD, small_study.patient_name)


def test_store_errors(orthanc, tmp_path):
    with pytest.raises(DicomWebError, match="studies was not found.*DICOMweb root"):
        store(f"{orthanc.url}/not-dicomweb", [write_study(tmp_path, slices=(1,), matrix=32).files.popitem()[1]],
              env=orthanc.env(), **FAST)
    bad = tmp_path / "not-dicom.dcm"
    bad.write_bytes(b"hello")
    with pytest.raises(DicomWebError, match="not a readable DICOM file"):
        store(orthanc.dicomweb, [bad], env=orthanc.env(), **FAST)


# ---------------------------------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_front(orthanc, tmp_path):
    pair = self_signed_cert(tmp_path)
    if pair is None:
        pytest.skip("openssl is not installed: the TLS test needs it to make a certificate")
    proxy = TlsProxy(orthanc.port, *pair)
    yield proxy, pair[0]
    proxy.close()


def test_tls_is_verified_by_default_and_a_ca_bundle_is_honoured(orthanc, orthanc_study, tls_front, tmp_path, logs,
                                                                monkeypatch):
    proxy, ca = tls_front
    # a system-wide bundle in $REQUESTS_CA_BUNDLE (common on managed machines) must not override ours
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    series, sops = list(orthanc_study.series.items())[1]
    url = f"dicomweb:{proxy.dicomweb}/studies/{orthanc_study.study_uid}/series/{series}"
    env = orthanc.env()
    with pytest.raises(DicomWebError, match=rf"TLS verification failed for 127.0.0.1:{proxy.port}.*"
                                            "MEDTASKS_DICOMWEB_CA_BUNDLE"):
        retrieve(url, tmp_path / "a", env=env, **FAST)
    files = retrieve(url, tmp_path / "b", env={**env, dicomweb.ENV_CA_BUNDLE: str(ca)}, **FAST)
    assert sorted(f.stem for f in files) == sorted(sops)
    files = retrieve(url, tmp_path / "c", env={**env, dicomweb.ENV_INSECURE: "1"}, **FAST)
    assert len(files) == len(sops) and "verification is OFF" in logs.text
    assert_no_secret(logs.text, PASSWORD)


def test_orthanc_is_local_and_authenticated(orthanc):
    """The test server itself: 127.0.0.1 only, DIMSE off, authentication on (an anonymous request is refused)."""
    config = json.loads((orthanc.folder / "orthanc.json").read_text())
    assert config["RemoteAccessAllowed"] is False and config["DicomServerEnabled"] is False
    assert config["AuthenticationEnabled"] is True
    assert requests.get(f"{orthanc.dicomweb}/studies", timeout=(2, 5)).status_code == 401
    assert orthanc.rest("GET", "/system").json()["Name"] == "medtasks-test"


def test_store_more_than_one_chunk(orthanc, tmp_path):
    """A STOW-RS body over dicomweb-client's 1 MB chunk size goes out with chunked transfer encoding."""
    study = write_study(tmp_path / "big", slices=(12,), matrix=256)
    paths = list(study.files.values())
    assert sum(p.stat().st_size for p in paths) > 1_000_000
    try:
        assert store(orthanc.dicomweb, paths, env=orthanc.env(), batch_size=12, **FAST) == study.sop_uids
        files = retrieve(orthanc.study_url(study.study_uid), tmp_path / "out", env=orthanc.env(), **FAST)
        assert {f.stem: f.read_bytes() for f in files} == {sop: study.files[sop].read_bytes() for sop in study.sop_uids}
    finally:
        orthanc.delete_study(study.study_uid)

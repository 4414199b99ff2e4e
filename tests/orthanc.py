"""A real Orthanc DICOMweb server for tests, started on 127.0.0.1 with authentication on.

Debian's ``orthanc`` and ``orthanc-dicomweb`` packages provide the ``Orthanc`` binary and the DICOMweb
plugin; ``.ci/run`` installs them. Without them the fixtures skip, saying so. Each server gets its own
temporary configuration and storage, a free HTTP port, the DICOM (DIMSE) server off, remote access
refused, and one registered user; it is stopped (terminate, then kill) when the fixture ends, and a
parent-death signal (``setpriv --pdeathsig``) stops it even if the test process itself is killed.

Use from a test module or a conftest (a fixture is found where it is imported)::

    from tests.orthanc import orthanc, orthanc_study  # noqa: F401

    def test_x(orthanc, orthanc_study):
        files = retrieve(orthanc.study_url(orthanc_study.study_uid), tmp_path, env=orthanc.env())

``orthanc`` yields an :class:`Orthanc` (``.dicomweb`` is the DICOMweb root, ``.env()`` the credential
variables for ``medtasks.io.dicomweb``); ``orthanc_study`` uploads a synthetic two-series head-CT study
through Orthanc's own REST API (not through the code under test) and yields a :class:`SyntheticStudy`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

USER = "medtasks-test"
PASSWORD = "orthanc-test-secret-7d1f"  # a test-only secret; the tests check it never reaches a log or message
START_TIMEOUT_S = 20.0
REQUEST_TIMEOUT = (2.0, 10.0)

_PLUGIN_CANDIDATES = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so",
    "/usr/local/share/orthanc/plugins/libOrthancDicomWeb.so",
)


def find_orthanc() -> tuple[str | None, str | None]:
    """(Orthanc binary, DICOMweb plugin) or None for what is missing; ``$MEDTASKS_ORTHANC`` and
    ``$MEDTASKS_ORTHANC_DICOMWEB`` override the search."""
    binary = os.environ.get("MEDTASKS_ORTHANC") or shutil.which("Orthanc") or shutil.which(
        "Orthanc", path="/usr/sbin:/usr/local/sbin:/usr/bin:/usr/local/bin")
    if binary and not (Path(binary).is_file() and os.access(binary, os.X_OK)):
        binary = None
    plugin = os.environ.get("MEDTASKS_ORTHANC_DICOMWEB")
    if plugin and not Path(plugin).is_file():
        plugin = None
    elif not plugin:
        plugin = next((p for p in _PLUGIN_CANDIDATES if Path(p).is_file()), None)
        if plugin is None:  # Debian ships a versioned file beside the plugin folder's link
            plugin = next((str(p) for p in sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*"))), None) \
                if Path("/usr/lib/orthanc").is_dir() else None
    return binary, plugin


def skip_reason() -> str | None:
    """Why the Orthanc tests cannot run here, or None."""
    binary, plugin = find_orthanc()
    if binary is None:
        return ("Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb; .ci/run does this "
                "as root): the DICOMweb tests against a real server are skipped")
    if plugin is None:
        return ("the Orthanc DICOMweb plugin (libOrthancDicomWeb.so) is not installed (Debian: apt-get install "
                "orthanc-dicomweb): the DICOMweb tests against a real server are skipped")
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent(command: list[str]) -> list[str]:
    """``command`` run so that it gets SIGTERM when the test process dies (Linux: util-linux ``setpriv``), so a
    test process killed by a timeout leaves no Orthanc behind. (No ``preexec_fn``: unsafe with threads.)"""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "TERM", *command] if setpriv else command


@dataclass
class Orthanc:
    """A running test server."""

    port: int
    folder: Path
    process: subprocess.Popen
    log_path: Path
    user: str = USER
    password: str = field(default=PASSWORD, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        """The DICOMweb root, e.g. ``http://127.0.0.1:41234/dicom-web``."""
        return f"{self.url}/dicom-web"

    def study_url(self, study_uid: str, series_uid: str | None = None) -> str:
        tail = f"/series/{series_uid}" if series_uid else ""
        return f"dicomweb:{self.dicomweb}/studies/{study_uid}{tail}"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for ``medtasks.io.dicomweb`` with this server's credentials (HOME kept, no netrc)."""
        out = {"MEDTASKS_DICOMWEB_USER": self.user, "MEDTASKS_DICOMWEB_PASSWORD": self.password,
               "NETRC": str(self.folder / "no-netrc")}
        out.update(extra)
        return out

    def rest(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """Orthanc's own REST API (not DICOMweb), authenticated; raises on HTTP errors."""
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        with requests.Session() as session:
            session.trust_env = False  # no proxy from the environment between the harness and 127.0.0.1
            r = session.request(method, f"{self.url}{path}", auth=(self.user, self.password), **kwargs)
        r.raise_for_status()
        return r

    def upload(self, path: Path) -> str:
        """POST one DICOM file to /instances; returns Orthanc's instance id."""
        return str(self.rest("POST", "/instances", data=Path(path).read_bytes(),
                             headers={"Content-Type": "application/dicom"}).json()["ID"])

    def orthanc_id(self, uid: str) -> str | None:
        """Orthanc's id of the instance/series/study with this DICOM UID, or None."""
        hits = self.rest("POST", "/tools/lookup", data=uid).json()
        return str(hits[0]["ID"]) if hits else None

    def delete_instance(self, sop_uid: str) -> None:
        oid = self.orthanc_id(sop_uid)
        if oid is not None:
            self.rest("DELETE", f"/instances/{oid}")

    def delete_study(self, study_uid: str) -> None:
        oid = self.orthanc_id(study_uid)
        if oid is not None:
            self.rest("DELETE", f"/studies/{oid}")

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _config(folder: Path, port: int, plugin: str) -> dict:
    storage = folder / "db"
    cfg = {
        "Name": "medtasks-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "DicomServerEnabled": False,          # DIMSE off: the tests speak DICOMweb only
        "RemoteAccessAllowed": False,         # 127.0.0.1 only
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "OrthancExplorerEnabled": False,
        "WebDavEnabled": False,
        "SaveJobs": False,
        "MetricsEnabled": False,
        "HttpThreadsCount": 8,
        "StableAge": 1,
    }
    return cfg


def start_orthanc(folder: Path, tries: int = 3) -> Orthanc:
    """Start Orthanc in ``folder`` on a free port and wait (bounded) until ``/system`` answers.

    Skips the test when Orthanc or its DICOMweb plugin is missing; fails, with Orthanc's log, when it
    does not come up.
    """
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    binary, plugin = find_orthanc()
    assert binary and plugin
    folder.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(tries):
        port = free_port()
        cfg_path = folder / "orthanc.json"
        cfg_path.write_text(json.dumps(_config(folder, port, plugin), indent=2))
        log_path = folder / f"orthanc-{attempt}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(_die_with_parent([binary, str(cfg_path)]), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Orthanc(port=port, folder=folder, process=process, log_path=log_path)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                server.rest("GET", "/system", timeout=(0.5, 2.0))
                return server
            except requests.RequestException:
                time.sleep(0.1)
        last = server.log_tail()
        server.stop()  # port taken or slow start: try a fresh port
    pytest.fail(f"Orthanc did not start within {START_TIMEOUT_S:.0f} s ({tries} tries); its log ends:\n{last}")


# ------------------------------------------------------------------------------------------ synthetic study


@dataclass
class SyntheticStudy:
    """A study uploaded to the server: its UIDs and the files that were uploaded."""

    study_uid: str
    series: dict[str, list[str]]                                  # SeriesInstanceUID -> SOPInstanceUIDs
    files: dict[str, Path] = field(default_factory=dict)          # SOPInstanceUID -> uploaded file
    patient_name: str = ""

    @property
    def sop_uids(self) -> list[str]:
        return [sop for sops in self.series.values() for sop in sops]


def write_study(out: Path, slices: tuple[int, ...] = (4, 3), matrix: int = 64, seed: int = 7) -> SyntheticStudy:
    """Write a synthetic head-CT study (one series per entry of ``slices``) with valid DICOM UIDs.

    The project's RSNA-style generator uses ``ID_...`` identifiers (as RSNA does), which are not DICOM UIDs
    and which a DICOMweb server may refuse; here its plan gets fresh UIDs of the PS3.5 form.
    """
    from pydicom.uid import generate_uid

    from medtasks.synth.dicom_writer import write_ct_slice
    from medtasks.synth.head_ct import plan_dataset, render_series

    plan = plan_dataset(1, seed=seed, matrix=matrix, slices_per_series=(max(slices), max(slices)))[0]
    hu, _ = render_series(plan, matrix, 5.0)
    study_uid = generate_uid()
    study = SyntheticStudy(study_uid=study_uid, series={}, patient_name=str(plan.header.patient_name))
    for number, n in enumerate(slices, start=1):
        header = dataclasses.replace(plan.header, study_uid=study_uid, series_uid=generate_uid(),
                                     series_number=number)
        sops = [generate_uid() for _ in range(n)]
        study.series[header.series_uid] = sops
        for k, sop in enumerate(sops):
            path = out / header.series_uid / f"{sop}.dcm"
            write_ct_slice(path, hu[k], header, sop, k + 1, plan.z_positions[k])
            study.files[sop] = path
    return study


def upload_study(server: Orthanc, study: SyntheticStudy) -> None:
    for path in study.files.values():
        server.upload(path)


def self_signed_cert(folder: Path) -> tuple[Path, Path] | None:
    """(certificate, private key) of a self-signed certificate for 127.0.0.1, or None without openssl.

    The certificate is also the CA bundle a client must be given to trust it.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsProxy:
    """An https front for a test Orthanc: TLS terminated here with ``cert``, bytes piped to Orthanc's http port.

    Orthanc 1.10's own HTTPS (civetweb) resets connections with OpenSSL 3, so the TLS tests put this in
    front of the real server instead; the DICOMweb traffic behind it is Orthanc's. Threads end with the
    connection or after ``idle_s`` without traffic.
    """

    def __init__(self, target_port: int, cert: Path, key: Path, idle_s: float = 10.0) -> None:
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(str(cert), str(key))
        self._target, self._idle = target_port, idle_s
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def dicomweb(self) -> str:
        return f"https://127.0.0.1:{self.port}/dicom-web"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        upstream = None
        try:
            conn.settimeout(self._idle)
            tls = self._ctx.wrap_socket(conn, server_side=True)  # fails when the client rejects the certificate
            upstream = socket.create_connection(("127.0.0.1", self._target), timeout=self._idle)
            peers = {tls: upstream, upstream: tls}
            while not self._stop.is_set():
                # decrypted bytes already buffered in the TLS object are invisible to select()
                ready = [tls] if tls.pending() else select.select([tls, upstream], [], [], self._idle)[0]
                if not ready:
                    return
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    peers[src].sendall(data)
        except (OSError, ssl.SSLError):
            return
        finally:
            for s in (conn, upstream):
                if s is not None:
                    s.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """A running Orthanc (http, authentication on) for the whole session; stopped at the end."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def orthanc_study(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> SyntheticStudy:
    """A synthetic two-series CT study (4 + 3 slices, 64 x 64), uploaded through Orthanc's REST API."""
    study = write_study(tmp_path_factory.mktemp("synthetic-study"))
    upload_study(orthanc, study)
    return study

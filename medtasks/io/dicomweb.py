"""DICOMweb transfers: pull a study or series (QIDO-RS + WADO-RS) and push results back (STOW-RS).

Built on ``dicomweb-client`` with the session of :mod:`medtasks.io.dicomweb_session` (addresses, credentials
from the environment or netrc, TLS verification, a timeout on every request, :class:`DicomWebError` messages
a user can act on); its public names are re-exported here.

Retrieval lists the instances (QIDO-RS, paged), then fetches them one at a time (WADO-RS), so memory holds
one instance, and writes each atomically as ``<dest>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, as the
server stored it. Failures are retried a bounded number of times with backoff; what is still missing is
reported by SOPInstanceUID. Storing sends batches of instances and names any the server refuses.

Example:
    >>> files = retrieve("dicomweb:https://pacs.example.org/dicom-web/studies/1.2.3", "study/")  # doctest: +SKIP
    >>> store("https://pacs.example.org/dicom-web", [sr_dataset])  # doctest: +SKIP
    ['2.25.1234...']
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pydicom
import requests
from pydicom.dataset import Dataset

from medtasks.io.atomic import atomic_path
from medtasks.io.dicomweb_session import (
    DEFAULT_TIMEOUT,
    ENV_CA_BUNDLE,
    ENV_INSECURE,
    ENV_PASSWORD,
    ENV_TIMEOUT,
    ENV_TOKEN,
    ENV_USER,
    SCHEME,
    AuthRefused,
    DicomWebError,
    DicomWebSource,
    Unreachable,
    check_base_url,
    check_uid,
    is_dicomweb_url,
    make_client,
    make_session,
    parse_dicomweb_url,
    translate,
)

__all__ = [
    "DEFAULT_TIMEOUT", "ENV_CA_BUNDLE", "ENV_INSECURE", "ENV_PASSWORD", "ENV_TIMEOUT", "ENV_TOKEN", "ENV_USER",
    "SCHEME", "DicomWebError", "DicomWebSource", "is_dicomweb_url", "make_client", "make_session",
    "parse_dicomweb_url", "retrieve", "retrieved", "store",
]

logger = logging.getLogger(__name__)

_QIDO_PAGE = 1000
_T = TypeVar("_T")


def _client_host(client: Any) -> str:
    return urlsplit(client.base_url).netloc


def _client_timeout(client: Any) -> tuple[float, float]:
    t = getattr(client, "_timeout", DEFAULT_TIMEOUT)
    return (float(t), float(t)) if isinstance(t, (int, float)) else (float(t[0]), float(t[1]))


def _retriable(err: DicomWebError) -> bool:
    return not isinstance(err, AuthRefused)


def _call(fn: Callable[[], _T], *, client: Any, what: str, attempts: int, backoff_s: float,
          not_found: str | None = None) -> _T:
    """``fn()`` with failures translated, retried up to ``attempts`` times (not 401/403, not 4xx answers)."""
    host, timeout = _client_host(client), _client_timeout(client)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - every failure becomes one DicomWebError
            err = translate(exc, host=host, what=what, timeout=timeout, not_found=not_found)
            status = exc.response.status_code if isinstance(exc, requests.HTTPError) and exc.response is not None \
                else None
            transient = status is None or status >= 500 or status in (408, 429)
            if attempt == attempts or not _retriable(err) or not transient or not isinstance(
                    exc, (requests.RequestException, DicomWebError)):
                raise err from None
            delay = backoff_s * 2 ** (attempt - 1)
            logger.warning("%s failed (attempt %d of %d), retrying in %.1f s: %s", what, attempt, attempts, delay, err)
            time.sleep(delay)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------------- retrieve


def _first(row: Mapping[str, Any], tag: str) -> str | None:
    value = (row.get(tag) or {}).get("Value") or []
    return str(value[0]) if value else None


def _list_instances(client: Any, src: DicomWebSource, attempts: int, backoff_s: float) -> list[tuple[str, str]]:
    """(SeriesInstanceUID, SOPInstanceUID) of every instance, paged with limit/offset, in the server's order.

    Paging stops at an empty page or one with nothing new, so a server that ignores ``offset`` or caps
    ``limit`` cannot make it loop or silently truncate.
    """
    not_found = f"{src.describe()} not found on {src.base_url}"
    found: dict[str, str] = {}
    seen: set[str] = set()
    offset = 0
    while True:
        rows = _call(lambda: client.search_for_instances(
            study_instance_uid=src.study_uid, series_instance_uid=src.series_uid,
            fields=["SeriesInstanceUID", "SOPInstanceUID"], limit=_QIDO_PAGE, offset=offset),
            client=client, what=f"listing the instances of {src.describe()}", attempts=attempts,
            backoff_s=backoff_s, not_found=f"{not_found} (HTTP 404: check the UID, and that {src.base_url} is the "
                                           "server's DICOMweb root, e.g. http://host:8042/dicom-web)")
        new = 0
        for row in rows:
            sop = _first(row, "00080018")
            series = _first(row, "0020000E") or src.series_uid
            if sop is None or series is None:
                raise DicomWebError(f"the server {src.host} listed an instance of {src.describe()} without "
                                    "SOPInstanceUID/SeriesInstanceUID")
            if sop in seen:
                continue
            seen.add(sop)
            new += 1
            if src.series_uid and series != src.series_uid:  # a server that ignored the series in the path
                continue
            check_uid(sop, "SOPInstanceUID", f"the server's answer for {src.describe()}")
            check_uid(series, "SeriesInstanceUID", f"the server's answer for {src.describe()}")
            found[sop] = series
        if not rows or not new:
            break
        offset += len(rows)
    if not found:
        raise DicomWebError(not_found)
    return [(series, sop) for sop, series in found.items()]


def _fetch_instance(client: Any, src: DicomWebSource, series: str, sop: str, dest: Path) -> Path:
    ds = client.retrieve_instance(src.study_uid, series, sop)
    got = str(getattr(ds, "SOPInstanceUID", ""))
    if got != sop:
        raise DicomWebError(f"asked {src.host} for instance {sop} and received {got or 'no SOPInstanceUID'}")
    path = dest / series / f"{sop}.dcm"
    with atomic_path(path) as tmp:
        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
    return path


def retrieve(url: str | DicomWebSource, dest: str | Path, *, client: Any = None,
             timeout: float | tuple[float, float] | None = None, attempts: int = 3, backoff_s: float = 1.0,
             env: Mapping[str, str] | None = None, progress: bool = False) -> list[Path]:
    """Download every instance of a study or series into ``dest``, one instance at a time.

    Files are written atomically as ``<dest>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``, as the server
    stored them (any transfer syntax). Instances that fail are retried in up to ``attempts`` rounds in all,
    with exponential backoff (``backoff_s``, then twice that, ...); when a round hits a connection-level
    failure it stops early, so a dead server costs ``attempts`` timeouts, not one per instance.

    Args:
        url: ``dicomweb:<base-url>/studies/<uid>[/series/<uid>]`` or a parsed :class:`DicomWebSource`.
        dest: Folder to write into (created).
        client: A ``DICOMwebClient`` to use (default: :func:`make_client` for the source's base URL).
        timeout: Seconds, ``read`` or ``(connect, read)``, for a new client.
        attempts: Rounds of tries per instance (>= 1), also the tries of the QIDO listing.
        backoff_s: Wait before the second round; doubled for each further round.
        env: Environment for credentials and TLS settings (default ``os.environ``).
        progress: Show a tqdm progress bar.

    Returns:
        The written files, in the server's listing order.

    Raises:
        DicomWebError: Bad address; server unreachable (host and timeout named); study/series not found;
            credentials refused (401/403); TLS failure; some instances still missing after ``attempts``
            rounds (``.missing`` holds their SOPInstanceUIDs; the others stay in ``dest``).
    """
    src = parse_dicomweb_url(url)
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    client = client if client is not None else make_client(src.base_url, timeout=timeout, env=env)
    dest = Path(dest)
    listing = _list_instances(client, src, attempts, backoff_s)
    logger.info("retrieving %d instance(s) of %s from %s", len(listing), src.describe(), src.host)
    host, tmo = src.host, _client_timeout(client)
    done: dict[str, Path] = {}
    pending = listing
    last: DicomWebError | None = None
    from tqdm.auto import tqdm

    bar = tqdm(total=len(listing), desc="DICOMweb", unit="instance", disable=not progress)
    try:
        for round_ in range(1, attempts + 1):
            if round_ > 1:
                delay = backoff_s * 2 ** (round_ - 2)
                logger.warning("%d instance(s) of %s failed (%s); retry round %d of %d in %.1f s", len(pending),
                               src.describe(), last, round_, attempts, delay)
                time.sleep(delay)
            failed: list[tuple[str, str]] = []
            for i, (series, sop) in enumerate(pending):
                try:
                    done[sop] = _fetch_instance(client, src, series, sop, dest)
                    bar.update(1)
                except Exception as exc:  # noqa: BLE001 - counted as missing, reported below
                    if isinstance(exc, OSError) and not isinstance(exc, requests.RequestException):
                        raise  # our disk (full, not writable), not the server: retrying cannot help
                    last = translate(exc, host=host, what=f"retrieving instance {sop}", timeout=tmo)
                    if not _retriable(last):
                        raise last from None
                    failed.append((series, sop))
                    if isinstance(last, Unreachable):  # the server is gone for now: wait, don't time out N times
                        failed.extend(pending[i + 1:])
                        break
            pending = failed
            if not pending:
                break
    finally:
        bar.close()
    if pending:
        missing = [sop for _, sop in pending]
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DicomWebError(
            f"incomplete retrieval of {src.describe()} from {src.base_url}: {len(missing)} of {len(listing)} "
            f"instance(s) could not be retrieved after {attempts} attempt(s): {shown}. Last error: {last}. "
            f"The {len(done)} retrieved instance(s) are in {dest}; run again to retry.", missing=missing)
    logger.info("retrieved %d instance(s) into %s", len(done), dest)
    return [done[sop] for _, sop in listing]


@contextlib.contextmanager
def retrieved(url: str | DicomWebSource, **kwargs: Any) -> Iterator[Path]:
    """:func:`retrieve` into a temporary folder that is deleted on exit; yields the folder.

    Example:
        >>> with retrieved("dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2.3") as folder:  # doctest: +SKIP
        ...     predict(folder)
    """
    with tempfile.TemporaryDirectory(prefix="medtasks-dicomweb-") as tmp:
        retrieve(url, tmp, **kwargs)
        yield Path(tmp)


# --------------------------------------------------------------------------------------------------- store

# DICOM PS3.18 / PS3.4 failure reasons a STOW-RS server reports, in words.
_FAILURE_REASONS = {
    0x0110: "processing failure", 0x0112: "no such object instance", 0x0119: "class-instance conflict",
    0x0122: "SOP class not supported", 0x0124: "not authorised", 0xA700: "out of resources",
    0xA770: "too large", 0xA900: "data set does not match SOP class", 0xC000: "cannot understand",
    0xC122: "transfer syntax not supported",
}


def _load(item: Dataset | str | Path) -> Dataset:
    if isinstance(item, Dataset):
        ds = item
    else:
        try:
            ds = pydicom.dcmread(item)
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise DicomWebError(f"cannot store {item}: not a readable DICOM file ({exc})") from None
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not ds.get(k)]
    if missing:
        what = item if not isinstance(item, Dataset) else "a dataset"
        raise DicomWebError(f"cannot store {what}: it has no {', '.join(missing)}")
    return ds


def _stow_result(result: Dataset | None, sent: list[str], host: str) -> list[str]:
    """The stored SOPInstanceUIDs; :class:`DicomWebError` naming the instances the server refused."""
    result = result if result is not None else Dataset()
    failed = []
    for item in getattr(result, "FailedSOPSequence", []) or []:
        code = int(getattr(item, "FailureReason", 0) or 0)
        failed.append(f"{getattr(item, 'ReferencedSOPInstanceUID', '?')} "
                      f"({_FAILURE_REASONS.get(code, 'failure')}, 0x{code:04X})")
    stored = [str(getattr(item, "ReferencedSOPInstanceUID", "")) for item in
              getattr(result, "ReferencedSOPSequence", []) or []]
    if failed:
        raise DicomWebError(f"the server {host} refused to store {len(failed)} of {len(sent)} instance(s): "
                            + "; ".join(failed))
    if "ReferencedSOPSequence" in result:
        unacknowledged = [uid for uid in sent if uid not in set(stored)]
        if unacknowledged:
            raise DicomWebError(f"the server {host} did not acknowledge {len(unacknowledged)} of {len(sent)} "
                                f"stored instance(s): {', '.join(unacknowledged[:10])}")
    return sent


def store(base_url: str, items: Sequence[Dataset | str | Path], *, client: Any = None,
          timeout: float | tuple[float, float] | None = None, attempts: int = 3, backoff_s: float = 1.0,
          batch_size: int = 16, env: Mapping[str, str] | None = None) -> list[str]:
    """Send DICOM objects to ``base_url`` with STOW-RS, ``batch_size`` per request.

    Storing is idempotent per SOPInstanceUID, so a batch that fails in transit is sent again (up to
    ``attempts`` tries with backoff).

    Args:
        base_url: The server's DICOMweb root (http or https; a ``dicomweb:`` prefix is accepted).
        items: ``pydicom`` datasets (e.g. a SEG or SR object) or paths of DICOM files (read one batch at a time).
        client: A ``DICOMwebClient`` to use (default: :func:`make_client`).
        timeout: Seconds, ``read`` or ``(connect, read)``, for a new client.
        attempts: Tries per batch.
        backoff_s: Wait before the second try; doubled after each further failure.
        batch_size: Instances per STOW-RS request.
        env: Environment for credentials and TLS settings (default ``os.environ``).

    Returns:
        The stored SOPInstanceUIDs, in the order given.

    Raises:
        DicomWebError: Bad address; server unreachable; credentials refused; the endpoint not found; an
            unreadable input file; instances the server refused (named with the reason).
    """
    if is_dicomweb_url(base_url):
        base_url = base_url[len(SCHEME):]
    base_url = check_base_url(base_url)
    if batch_size < 1 or attempts < 1:
        raise ValueError("batch_size and attempts must be >= 1")
    client = client if client is not None else make_client(base_url, timeout=timeout, env=env)
    host = urlsplit(base_url).netloc
    stored: list[str] = []
    for start in range(0, len(items), batch_size):
        batch = [_load(item) for item in items[start:start + batch_size]]
        uids = [str(ds.SOPInstanceUID) for ds in batch]
        what = f"storing {len(batch)} instance(s) on {host}"
        not_found = (f"{what}: {base_url}/studies was not found (HTTP 404); check that the address is the server's "
                     "DICOMweb root, e.g. http://host:8042/dicom-web")
        try:
            result = _call(lambda: client.store_instances(batch), client=client, what=what, attempts=attempts,
                           backoff_s=backoff_s, not_found=not_found)
            stored.extend(_stow_result(result, uids, host))
        except DicomWebError as err:
            # A 409 carries the per-instance failures; name them if the body says.
            err = _conflict_details(err, uids, host)
            if stored:
                err = DicomWebError(f"{err} (the {len(stored)} instance(s) of the batches before were stored)")
            raise err from None
    logger.info("stored %d instance(s) on %s", len(stored), host)
    return stored


def _conflict_details(err: DicomWebError, uids: list[str], host: str) -> DicomWebError:
    cause = err.__context__
    response = getattr(cause, "response", None)
    if response is None or response.status_code != 409:
        return err
    try:
        result = Dataset.from_json(response.json())
    except Exception:  # noqa: BLE001 - the body is optional; keep the status message
        return err
    try:
        _stow_result(result, uids, host)
    except DicomWebError as detailed:
        return detailed
    return err

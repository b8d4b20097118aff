"""sync_to_otlp: session files as OTLP logs, at least once, from a watermark of its own.

The engine (``_mirror/engine.py``) reads the files, parses, quarantines and
redacts exactly as for the mirrors; :class:`OtlpTarget` turns each batch into
requests, POSTs them, and moves the watermark only once the endpoint has
answered 2xx. The watermarks live in ``otlp_watermarks.db`` beside the
sessions folder, one row per endpoint, sessions folder and session
(docs/scale-out.md, "OTLP export").
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Final

from codex_logging._errors import DatabaseError, OtlpExportError, hide_secrets
from codex_logging._mirror.engine import run_sync
from codex_logging._mirror.target import (
    WATERMARK_FIELDS,
    Batch,
    BatchRefusedError,
    Progress,
    SettledRow,
    SyncReport,
    Watermark,
    WatermarkMovedError,
    source_id,
)
from codex_logging._otlp.mapping import (
    ExportLogsServiceResponse,
    Resource,
    build_request,
    to_json_line,
)
from codex_logging._otlp.transport import (
    RefusedError,
    Settings,
    file_settings,
    post,
    settings,
)
from codex_logging._settings import BUSY_TIMEOUT, sessions_dir_path

#: The file, beside the sessions folder, that holds the export's watermarks.
STATE_FILE: Final = "otlp_watermarks.db"
#: Records per request, and bytes of lines per request: an engine batch (up
#: to 5000 lines, 8 MiB) may go as several requests, well under the
#: Collector's default request size limit.
REQUEST_RECORDS: Final = 2000
REQUEST_BYTES: Final = 4 << 20

#: Where an engine's row (``_mirror/lines.py`` ``EventRow``) has the session
#: id, seq, line and record.
_EVENT_COLUMNS: Final = (0, 1, 8, 9)
#: The answers that blame the batch itself: that session's file stops, the others go on.
_BATCH_AT_FAULT: Final = frozenset({400, 413, 422})

_COLUMNS: Final = ", ".join(WATERMARK_FIELDS)
#: The placeholders of one row: endpoint, source, session, the fields, updated_at.
_PLACES: Final = ", ".join("?" * (len(WATERMARK_FIELDS) + 4))
_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS otlp_watermark ("
    " endpoint TEXT NOT NULL, source_id TEXT NOT NULL, session_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL, byte_offset INTEGER NOT NULL, head_len INTEGER,"
    " head_sha256 TEXT, file_dev INTEGER, file_ino INTEGER, scanned_to INTEGER,"
    " source_dir TEXT, scan_sha256 TEXT, tail_sha256 TEXT, updated_at REAL,"
    " PRIMARY KEY (endpoint, source_id, session_id))"
)


@dataclasses.dataclass
class Sent:
    """What the endpoint said of the batches: for the report and ``--json``."""

    requests: int = 0
    records: int = 0
    rejected: int = 0


class OtlpTarget:
    """An OTLP/HTTP endpoint as a sync target; watermarks in a SQLite file of its own.

    Pipelined: a batch is built and sent in the engine's worker thread while
    the next one is read, one batch in flight at a time, and its watermark
    moves once it is acknowledged; so a kill sends at most the batch in
    flight again on the next run. The watermark file is used from both
    threads, never at once (``check_same_thread=False``).
    """

    pipelined = True
    #: No parse worker: the rows' records are read, and a receiver on the
    #: same machine needs the other processor (no faster with one, measured).
    parse_worker = False

    def __init__(
        self,
        config: Settings,
        state_path: str,
        *,
        service_name: str | None = None,
        dry_run: bool = False,
        busy_timeout: float = BUSY_TIMEOUT,
        write: Callable[[str], object] | None = None,
        output: str | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Remember the settings; nothing is opened or sent yet.

        Args:
            config: Where and how requests go.
            state_path: The watermark file.
            service_name: ``service.name`` of the resource.
            dry_run: Build the requests, send none, move no watermark.
            busy_timeout: Seconds to wait for another export's lock on the file.
            write: Called with each request as an OTLP/JSON line (``--json``).
            output: Append each request to this file as an OTLP/JSON line
                instead of POSTing it (``--format otlp-json``).
            stop: Set to end the retries of the batch in flight (see
                :func:`sync_to_otlp`); :meth:`cancel` sets it.
        """
        self.config = config
        self.name = config.shown
        self.state_path = state_path
        self.service_name = service_name
        self.dry_run = dry_run
        self.busy_timeout = busy_timeout
        self.write = write
        self.output = output
        self._out_fd = -1
        self.sent = Sent()
        self.warnings: list[str] = []
        self.source = ""
        self._resource: Resource | None = None
        self._conn: sqlite3.Connection | None = None
        self._opened = False
        self._stop = threading.Event() if stop is None else stop

    # -- the watermark file ----------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection | None:
        """The watermark file, created ``0600`` on first use (a dry run creates nothing)."""
        if not self._opened:
            self._opened = True
            self._conn = self._connect()
        return self._conn

    def _connect(self) -> sqlite3.Connection | None:
        path = self.state_path
        try:
            if self.dry_run:
                if not os.path.exists(path):
                    return None
                return sqlite3.connect(
                    f"file:{path}?mode=ro",
                    uri=True,
                    timeout=self.busy_timeout,
                    check_same_thread=False,
                )
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
            conn = sqlite3.connect(
                path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            msg = f"cannot open the OTLP export's watermarks {path}: {exc}"
            raise DatabaseError(msg) from exc
        return conn

    def _rows(self, sql: str, params: tuple[object, ...]) -> list[tuple[object, ...]]:
        conn = self.conn
        if conn is None:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            msg = f"cannot read the OTLP export's watermarks {self.state_path}: {exc}"
            raise DatabaseError(msg) from exc

    def settled_files(self, source_id: str) -> dict[str, SettledRow]:
        """Return this endpoint's settled watermarks of folder ``source_id`` (see ``Target``)."""
        rows = self._rows(
            "SELECT session_id, byte_offset, coalesce(file_dev, 0), coalesce(file_ino, 0),"
            " coalesce(updated_at, 0.0) FROM otlp_watermark"
            " WHERE endpoint = ? AND source_id = ? AND scanned_to <= byte_offset",
            (self.config.key, source_id),
        )
        return {str(row[0]): row for row in rows}  # type: ignore[misc]

    def open_source(self, folder: str) -> str:
        """Return the folder's id (see ``Target.open_source``); start the resource."""

        def earlier(path: str) -> str | None:
            rows = self._rows(
                "SELECT source_id FROM otlp_watermark WHERE source_dir = ?"
                " ORDER BY updated_at DESC LIMIT 1",
                (path,),
            )
            return str(rows[0][0]) if rows else None

        self.source = source_id(folder, earlier)
        self._resource = Resource(self.source, self.service_name)
        return self.source

    def read_watermark(self, session_id: str) -> Watermark | None:
        """Return where this endpoint's export of the session stands."""
        rows = self._rows(
            f"SELECT {_COLUMNS} FROM otlp_watermark"  # noqa: S608 - constants only
            " WHERE endpoint = ? AND source_id = ? AND session_id = ?",
            (self.config.key, self.source, session_id),
        )
        return Watermark.from_row(rows[0]) if rows else None

    def same_file(
        self, source_id: str, file_dev: int, file_ino: int
    ) -> list[tuple[str, Watermark]]:
        """Return this endpoint's watermarks of the file ``(dev, ino)`` (see ``Target``)."""
        rows = self._rows(
            f"SELECT session_id, {_COLUMNS} FROM otlp_watermark"  # noqa: S608 - constants only
            " WHERE endpoint = ? AND source_id = ? AND file_dev = ? AND file_ino = ?",
            (self.config.key, source_id, file_dev, file_ino),
        )
        return [(str(row[0]), Watermark.from_row(row[1:])) for row in rows]

    # -- a batch ------------------------------------------------------------

    def commit(self, batch: Batch) -> int:
        """Send a batch, then move the watermark (see ``Target.commit``).

        The watermark moves only after every request of the batch was
        answered 2xx; a kill before that sends the batch again next time
        (at least once). Quarantined lines are not sent: they are counted
        in the report, as for the mirrors.

        Raises:
            WatermarkMovedError: Another export moved the watermark meanwhile.
            BatchRefusedError: The endpoint refused a request (a 4xx).
            OtlpExportError: The endpoint could not be reached after the retries.
        """
        # Quarantined lines (batch.errors) are counted by the engine.
        session_id, expected_seq, events = batch.session_id, batch.expected_seq, batch.events
        if not self.dry_run:
            current = self.read_watermark(session_id)
            if (current.seq if current else 0) != expected_seq:
                raise WatermarkMovedError
        resource = self._resource
        assert resource is not None  # open_source ran first
        start = 0
        while start < len(events):
            end, size = start, 0
            while end < len(events) and end - start < REQUEST_RECORDS and size < REQUEST_BYTES:
                size += len(events[end][8])
                end += 1
            request = build_request(resource, events[start:end], columns=_EVENT_COLUMNS)
            self._send(session_id, request, end - start)
            start = end
        if not self.dry_run:
            if self._out_fd >= 0:
                self._synced()  # the lines are on disk before the watermark says so
            self._store(session_id, expected_seq, batch.mark)
        return len(events)

    def _append(self, line: str) -> None:
        """Append one OTLP/JSON line to the output file, in one write."""
        assert self.output is not None
        data = (line + "\n").encode()
        try:
            if self._out_fd < 0:
                self._out_fd = os.open(
                    self.output,
                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                )
            while data:
                data = data[os.write(self._out_fd, data) :]
        except OSError as exc:
            msg = f"cannot write the OTLP/JSON file {self.output}: {exc.strerror or exc}"
            raise OtlpExportError(msg) from exc

    def _synced(self) -> None:
        try:
            os.fsync(self._out_fd)
        except OSError as exc:
            msg = f"cannot write the OTLP/JSON file {self.output}: {exc.strerror or exc}"
            raise OtlpExportError(msg) from exc

    def _send(self, session_id: str, request: object, count: int) -> None:
        if self.write is not None:
            self.write(to_json_line(request))  # type: ignore[arg-type]
        self.sent.requests += 1
        self.sent.records += count
        if self.dry_run:
            return
        if self.output is not None:
            self._append(to_json_line(request))  # type: ignore[arg-type]
            return
        try:
            _status, body = post(self.config, request.SerializeToString(), self._stop)  # type: ignore[attr-defined]
        except RefusedError as exc:
            self.sent.requests -= 1
            self.sent.records -= count
            text = hide_secrets(str(exc), self.config.endpoint)
            if exc.status in _BATCH_AT_FAULT:
                msg = f"the OTLP endpoint {self.name} refused a batch of {count} records ({text})"
                raise BatchRefusedError(msg) from None
            # 401, 403, 404...: every batch would be refused alike.
            msg = f"the OTLP endpoint {self.name} refused the export ({text})"
            raise OtlpExportError(msg) from None
        answer = ExportLogsServiceResponse()
        with contextlib.suppress(Exception):  # an empty or non-protobuf 2xx body is success
            answer.ParseFromString(body)
        partial = answer.partial_success
        if partial.rejected_log_records or partial.error_message:
            self.sent.rejected += partial.rejected_log_records
            why = " ".join(partial.error_message.split())[:300]
            self.warnings.append(
                f"{session_id}: the OTLP endpoint rejected {partial.rejected_log_records}"
                f" of {count} records" + (f": {why}" if why else "")
            )

    def _store(self, session_id: str, expected_seq: int, mark: Watermark) -> None:
        conn = self.conn
        assert conn is not None
        values = tuple(getattr(mark, name) for name in WATERMARK_FIELDS)
        key = (self.config.key, self.source, session_id)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _check_seq(conn, key, expected_seq)
                conn.execute(
                    f"INSERT OR REPLACE INTO otlp_watermark (endpoint, source_id, session_id,"  # noqa: S608 - constants only
                    f" {_COLUMNS}, updated_at) VALUES ({_PLACES})",
                    (*key, *values, time.time()),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            msg = f"cannot write the OTLP export's watermarks {self.state_path}: {exc}"
            raise DatabaseError(msg) from exc

    def cancel(self) -> None:
        """Stop retrying the batch in flight (interrupted): it fails, its watermark unmoved."""
        self._stop.set()

    def close(self) -> None:
        """Close the watermark file and the output file if they were opened."""
        if self._out_fd >= 0:
            os.close(self._out_fd)
            self._out_fd = -1
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _check_seq(conn: sqlite3.Connection, key: tuple[str, str, str], expected: int) -> None:
    """Compare and set: raise :class:`WatermarkMovedError` if the stored seq moved."""
    row = conn.execute(
        "SELECT seq FROM otlp_watermark WHERE endpoint = ? AND source_id = ? AND session_id = ?",
        key,
    ).fetchone()
    if (row[0] if row else 0) != expected:
        raise WatermarkMovedError


def state_path_for(sessions_dir: str) -> str:
    """Return the watermark file of a sessions folder: ``otlp_watermarks.db`` beside it."""
    return os.path.join(os.path.dirname(sessions_dir), STATE_FILE)


def sync_to_otlp(
    endpoint: str | None = None,
    sessions_dir: str | os.PathLike[str] | None = None,
    *,
    session_id: str | None = None,
    service_name: str | None = None,
    dry_run: bool = False,
    busy_timeout: float = BUSY_TIMEOUT,
    progress: Progress | None = None,
    write: Callable[[str], object] | None = None,
    output: str | os.PathLike[str] | None = None,
    stop: threading.Event | None = None,
) -> SyncReport:
    """Send every session file's new lines (or one session's) to an OTLP/HTTP endpoint.

    At least once: a batch's watermark moves only after the endpoint answered
    2xx, so a kill sends at most the batch in flight again; each record
    carries ``log.record.uid`` for a backend to drop such a repeat. The
    lines are read, checked and redacted as for the mirrors
    (docs/scale-out.md, "OTLP export").

    Example::

        report = sync_to_otlp("http://collector:4318/v1/logs")
        print(report.rows_inserted, "records sent", report.warnings)

    Args:
        endpoint: The URL to POST to, used as is; by default
            ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, else
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/logs``, else
            ``http://localhost:4318/v1/logs``.
        sessions_dir: The folder of session files; by default
            ``CODEX_SESSIONS_DIR`` or ``.codex/sessions``.
        session_id: Send only this session.
        service_name: The resource's ``service.name`` (default:
            ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``unknown_service``).
        dry_run: Build every request, send none, move no watermark.
        busy_timeout: Seconds to wait for a file lock held by another sync.
        progress: Called after each acknowledged batch.
        write: Called with each request as one OTLP/JSON line.
        output: Instead of an endpoint, append each request to this file as
            one line of OTLP/JSON ``LogsData`` (JSON Lines, as the Collector's
            ``otlpjsonfile`` receiver reads), with a watermark of its own.
        stop: Set it (from another thread, or a signal handler) to end the
            tries and waits of a batch the endpoint does not take: the export
            then raises :class:`OtlpExportError`, that batch's watermark
            unmoved. A batch already sent is not affected.

    Returns:
        A :class:`SyncReport`: ``rows_inserted`` counts the records sent
        (acknowledged), ``warnings`` also holds each partial success.

    Raises:
        OtlpNotInstalledError: The ``otlp`` extra is not installed.
        OtlpConfigError: The endpoint or an ``OTEL_EXPORTER_OTLP_*`` setting is not valid.
        OtlpExportError: The endpoint could not be reached after the retries.
        InvalidSessionId: ``session_id`` is not a valid id.
        UnknownSessionError: ``session_id`` has no session file.
        DatabaseError: The watermark file cannot be used.
    """
    out = None if output is None else os.path.abspath(os.fspath(output))
    config = settings(endpoint) if out is None else file_settings(out)
    folder = sessions_dir_path(sessions_dir)
    target = OtlpTarget(
        config,
        state_path_for(folder),
        service_name=service_name,
        dry_run=dry_run,
        busy_timeout=busy_timeout,
        write=write,
        output=out,
        stop=stop,
    )
    with contextlib.closing(target):
        report = run_sync(
            target, folder, session_id=session_id, busy_timeout=busy_timeout, progress=progress
        )
    report.warnings.extend(target.warnings)
    return report

"""CodexHandler: fields, routing, dictConfig, and failures that never raise."""

from __future__ import annotations

import contextlib
import inspect
import logging
import logging.config
import os
import time
from pathlib import Path

import pytest

import codex_logging._record
import codex_logging._write.handler
import codex_logging._write.sink
from codex_logging import CodexHandler, session_scope
from codex_logging._redaction.redactor import Redactor
from tests.conftest import read_lines, session_file


def dict_config(**handler_keys: object) -> None:
    """Configure logging exactly as a user would."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"codex": {"class": "codex_logging.CodexHandler", **handler_keys}},
            "root": {"handlers": ["codex"], "level": "DEBUG"},
        }
    )


class TestFields:
    def test_every_field_from_dictconfig(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A record from dictConfig carries every record field with exact values."""
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        dict_config()
        before = time.time()
        logging.getLogger("app.sub").warning(
            "step %s of %d", "A", 3, extra={"role": "assistant", "step": {"n": 1}, "tags": ["x"]}
        )
        (rec,) = read_lines(session_file("s1"))
        assert before <= rec.pop("ts") <= time.time()
        assert rec == {
            "session_id": "s1",
            "kind": "message",
            "level": "WARNING",
            "logger": "app.sub",
            "message": "step A of 3",
            "pid": os.getpid(),
            "role": "assistant",
            "step": {"n": 1},
            "tags": ["x"],
        }
        assert list(read_lines(session_file("s1"))[0])[:7] == [
            "ts", "session_id", "kind", "level", "logger", "message", "pid",
        ]  # fmt: skip

    def test_exception_and_stack(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """exc_info and stack_info become the exc field."""
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        dict_config()
        try:
            raise KeyError("missing")  # noqa: TRY301
        except KeyError:
            logging.getLogger("app").exception("failed")
        logging.getLogger("app").info("here", stack_info=True)
        failed, here = read_lines(session_file("s1"))
        assert failed["level"] == "ERROR"
        assert failed["exc"].startswith("Traceback (most recent call last):")
        assert failed["exc"].endswith("KeyError: 'missing'")
        assert here["exc"].startswith("Stack (most recent call last):")

    def test_kind_from_extra_and_unserialisable_values(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """extra kind sets the kind; values JSON cannot hold are written with str()."""
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        dict_config()

        class Thing:
            def __str__(self) -> str:
                return "a thing"

        logging.getLogger("app").info(
            "go", extra={"kind": "start", "obj": Thing(), "p": Path("/x")}
        )
        (rec,) = read_lines(session_file("s1"))
        assert (rec["kind"], rec["obj"], rec["p"]) == ("start", "a thing", "/x")

    def test_extra_cannot_overwrite_core_fields(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An extra named like a core field is kept beside it, not over it."""
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        dict_config()
        logging.getLogger("app").info("go", extra={"ts": "yesterday", "pid": -1})
        (rec,) = read_lines(session_file("s1"))
        assert rec["pid"] == os.getpid()
        assert (rec["extra.ts"], rec["extra.pid"]) == ("yesterday", -1)

    def test_extra_from_records_made_other_ways(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Extra fields are found on records from makeLogRecord and from a custom factory.

        Including one that sets its own attribute before LogRecord.__init__ runs,
        and without the attributes a formatter adds (``message``, ``asctime``).
        """
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        handler = CodexHandler()

        class EarlyRecord(logging.LogRecord):
            def __init__(self, *args: object, **kwargs: object) -> None:
                self.early = "set first"
                super().__init__(*args, **kwargs)  # type: ignore[arg-type]

        made = logging.makeLogRecord({"msg": "made", "ticket": 7})
        early = EarlyRecord("app", logging.INFO, __file__, 1, "early", (), None)
        early.late = "set after"
        formatted = logging.makeLogRecord({"msg": "formatted", "n": 1})
        logging.Formatter("%(asctime)s %(message)s").format(formatted)
        for record in (made, early, formatted):
            handler.handle(record)
        recs = read_lines(session_file("s1"))
        assert recs[0]["ticket"] == 7
        assert (recs[1]["early"], recs[1]["late"]) == ("set first", "set after")
        assert recs[2]["n"] == 1
        assert not {"asctime", "msg", "args", "created"} & {k for r in recs for k in r}
        handler.close()

    def test_close_releases_the_files_and_may_be_repeated(self, tmp_path: Path) -> None:
        """close() closes the handler's session files, twice is fine, and a later record reopens."""

        def open_here() -> set[str]:
            targets = set()
            for fd in os.listdir("/proc/self/fd"):
                with contextlib.suppress(FileNotFoundError):  # the listing's own descriptor
                    targets.add(os.readlink(f"/proc/self/fd/{fd}"))
            return {t for t in targets if t.startswith(str(tmp_path))}

        handler = CodexHandler(tmp_path / "a", "s")
        other = CodexHandler(tmp_path / "b", "s")
        for h in (handler, other):
            h.handle(logging.makeLogRecord({"msg": "one"}))
        assert open_here() == {str(tmp_path / "a" / "s.ndjson"), str(tmp_path / "b" / "s.ndjson")}
        handler.close()
        handler.close()
        assert open_here() == {str(tmp_path / "b" / "s.ndjson")}  # the other folder's stays
        handler.handle(logging.makeLogRecord({"msg": "two"}))
        assert [r["message"] for r in read_lines(tmp_path / "a" / "s.ndjson")] == ["one", "two"]
        other.close()

    def test_handler_filters_apply(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Filters on the handler drop records and may change the ones they pass."""
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        handler = CodexHandler()

        def tag(record: logging.LogRecord) -> bool:
            record.tagged = True
            return record.name != "noisy"

        handler.addFilter(tag)
        assert handler.handle(logging.makeLogRecord({"name": "noisy", "msg": "dropped"})) is False
        assert handler.handle(logging.makeLogRecord({"name": "app", "msg": "kept"})) is True
        assert [
            (r["logger"], r["message"], r["tagged"]) for r in read_lines(session_file("s1"))
        ] == [("app", "kept", True)]
        handler.close()

    def test_newlines_never_raw(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Newlines and U+2028 in the message stay inside one line."""
        monkeypatch.setenv("CODEX_SESSION_ID", "s1")
        dict_config()
        logging.getLogger("app").info("a\nb\r\nc\u2028d")
        data = session_file("s1").read_bytes()
        assert data.count(b"\n") == 1
        assert read_lines(session_file("s1"))[0]["message"] == "a\nb\r\nc\u2028d"

    def test_dictconfig_keys_are_constructor_keywords(self, tmp_path: Path) -> None:
        """sessions_dir, session_id, fsync, redact and level are dictConfig keys."""
        dict_config(
            sessions_dir="custom", session_id="fixed", fsync="always", redact=False, level="INFO"
        )
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, CodexHandler)
        assert handler.sessions_dir == str(tmp_path / "custom")
        assert handler.session_id == "fixed"
        assert (handler.sink.fsync, handler.sink.redactor, handler.level) == (
            "always",
            None,
            logging.INFO,
        )
        logging.getLogger("app").debug("dropped")
        logging.getLogger("app").info("kept", extra={"password": "p"})
        (rec,) = read_lines(tmp_path / "custom" / "fixed.ndjson")
        assert (rec["message"], rec["password"]) == ("kept", "p")

    def test_bad_fsync_is_a_value_error(self) -> None:
        """An unknown fsync policy fails at configuration, with its name."""
        with pytest.raises(ValueError, match="fsync must be one of"):
            CodexHandler(fsync="sometimes")  # type: ignore[arg-type]

    def test_relative_dir_is_fixed_at_construction(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A later chdir does not move where records go."""
        handler = CodexHandler(session_id="s1")
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")
        logging.getLogger("t").addHandler(handler)
        logging.getLogger("t").warning("x")
        assert read_lines(tmp_path / ".codex" / "sessions" / "s1.ndjson")[0]["message"] == "x"
        assert not (tmp_path / "elsewhere" / ".codex").exists()
        assert "CodexHandler" in repr(handler)
        handler.close()
        handler.close()


class TestExtraFields:
    def test_extras_in_order_after_another_handler_formatted(self, tmp_path: Path) -> None:
        """Extras keep their order; a Formatter's message/asctime added after them are left out."""
        logger = logging.getLogger("extras-order")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        console = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115 - closed below
        console.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.handlers[:] = [console, CodexHandler(tmp_path, "s")]
        try:
            for n in range(2):  # the second record runs on warm caches
                logger.info("n=%d", n, extra={"zeta": n, "alpha": "a", "mid": [n]})
                logger.info("one", extra={"only": n})
        finally:
            console.stream.close()
            logger.handlers[:] = []
        lines = read_lines(tmp_path / "s.ndjson")
        extras = [{k: v for k, v in rec.items() if k not in _CORE} for rec in lines]
        assert [list(rec) for rec in extras] == [["zeta", "alpha", "mid"], ["only"]] * 2
        assert extras[2] == {"zeta": 1, "alpha": "a", "mid": [1]}
        assert [rec["message"] for rec in lines] == ["n=0", "one", "n=1", "one"]

    def test_a_secret_name_is_redacted_every_time(self, tmp_path: Path) -> None:
        """A field under a secret name is redacted on every record, not only the first."""
        logger = logging.getLogger("extras-secret")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.handlers[:] = [CodexHandler(tmp_path, "s")]
        try:
            for value in ("hunter2", 12345, "hunter3"):
                logger.info("login", extra={"password": value, "user": "ann"})
        finally:
            logger.handlers[:] = []
        lines = read_lines(tmp_path / "s.ndjson")
        assert [rec["password"] for rec in lines] == ["[REDACTED]"] * 3
        assert [rec["user"] for rec in lines] == ["ann"] * 3
        assert [rec["redacted"] for rec in lines] == [1] * 3

    def test_a_record_built_by_hand_is_read_in_full(self, tmp_path: Path) -> None:
        """A LogRecord subclass that sets attributes before LogRecord.__init__ still has its extras."""

        class Early(logging.LogRecord):
            def __init__(self, *args: object, **kwargs: object) -> None:
                self.request_id = "r-1"
                super().__init__(*args, **kwargs)  # type: ignore[arg-type]

        record = Early("app", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        handler = CodexHandler(tmp_path, "s")
        handler.handle(record)
        (rec,) = read_lines(tmp_path / "s.ndjson")
        assert rec["request_id"] == "r-1"
        assert rec["message"] == "hello you"

    def test_a_replaced_get_message_is_used(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A program that replaces LogRecord.getMessage (brace style) gets its messages."""

        def brace(record: logging.LogRecord) -> str:
            return str(record.msg).format(*record.args) if record.args else str(record.msg)

        monkeypatch.setattr(logging.LogRecord, "getMessage", brace)
        handler = CodexHandler(tmp_path, "s")
        record = logging.LogRecord("app", logging.INFO, __file__, 1, "hello {}", ("world",), None)
        handler.handle(record)
        assert [rec["message"] for rec in read_lines(tmp_path / "s.ndjson")] == ["hello world"]
        assert handler.dropped == 0

    def test_a_secret_name_that_is_not_text(self, tmp_path: Path) -> None:
        """An extra key given as bytes is judged by the name it is written under."""
        handler = CodexHandler(tmp_path, "s")
        for _ in range(2):
            record = logging.makeLogRecord({"msg": "login", b"api_key": "hunter4", 7: "x"})
            handler.handle(record)
        lines = read_lines(tmp_path / "s.ndjson")
        assert [(rec["api_key"], rec["7"]) for rec in lines] == [("[REDACTED]", "x")] * 2

    @pytest.mark.parametrize("encoder", ["orjson", "json"])
    def test_numbers_json_cannot_hold(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, encoder: str
    ) -> None:
        """NaN and infinities are written as str(), with either encoder, at any depth."""
        if encoder == "json":
            monkeypatch.setattr(codex_logging._record, "_fast_dumps", None)
        handler = CodexHandler(tmp_path, "s")
        logger = logging.getLogger("numbers")
        logger.handlers[:] = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
        try:
            for _ in range(2):
                logger.info("n", extra={"nan": float("nan"), "inf": float("-inf"), "ok": 0.5,
                                        "deep": {"x": [float("inf")]}})  # fmt: skip
        finally:
            logger.handlers[:] = []
        lines = read_lines(tmp_path / "s.ndjson")
        assert [(r["nan"], r["inf"], r["ok"], r["deep"]) for r in lines] == [
            ("nan", "-inf", 0.5, {"x": ["inf"]})
        ] * 2


_CORE = {"ts", "session_id", "kind", "level", "logger", "message", "pid"}


class _Loud(int):
    def __str__(self) -> str:
        return "ghp_" + "b" * 36


class TestFormattedMessages:
    """A template filled with ints skips the scan only when nothing could hide there."""

    @pytest.mark.parametrize(
        ("template", "args", "secret"),
        [
            # The template holds a gate ("="): the assignment rule must run.
            ("password=%d", (12345678,), "12345678"),
            # %c writes any character: A, K, I, A make an AWS key id of the digits.
            ("%c%c%c%c%d", (65, 75, 73, 65, 1234567890123456), "AKIA1234567890123456"),
            # A text argument is scanned as always.
            ("token %s", ("ghp_" + "a" * 36,), "ghp_" + "a" * 36),
            # A negative int writes "-": "sk" and it make an OpenAI key.
            ("sk%d", (-1234567890123456789012,), "sk-1234567890123456789012"),
            # An int subclass may print anything.
            ("key %s", (_Loud(1),), "ghp_" + "b" * 36),
        ],
    )
    def test_secrets_still_redacted(
        self, tmp_path: Path, template: str, args: tuple[object, ...], secret: str
    ) -> None:
        logger = logging.getLogger("formatted-secret")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.handlers[:] = [CodexHandler(tmp_path, "s")]
        try:
            for _ in range(2):  # the second record meets the template's cached verdict
                logger.info(template, *args)
                logger.info("step %d", 7)
        finally:
            logger.handlers[:] = []
        lines = read_lines(tmp_path / "s.ndjson")
        assert [secret in rec["message"] for rec in lines] == [False] * 4
        assert [rec.get("redacted", 0) > 0 for rec in lines] == [True, False] * 2
        assert lines[1]["message"] == "step 7"

    def test_a_users_pattern_sees_the_digits(self, tmp_path: Path) -> None:
        """With redact_patterns, a digits-only message is scanned: the pattern may match digits."""
        logger = logging.getLogger("formatted-pattern")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.handlers[:] = [CodexHandler(tmp_path, "s", redact_patterns=[r"\b\d{6}\b"])]
        try:
            logger.info("order %d shipped", 123456)
            logger.info("order %d shipped", 123456)
        finally:
            logger.handlers[:] = []
        lines = read_lines(tmp_path / "s.ndjson")
        assert [rec["message"] for rec in lines] == ["order [REDACTED] shipped"] * 2

    def test_which_templates_stay_clean(self) -> None:
        """Only gate-free templates whose conversions write ints as digits qualify."""
        redactor = Redactor()
        verdicts = {
            template: redactor.digits_stay_clean(template)
            for template in (
                "processing step %d",
                "%5d items in %s%% of %r runs, %i, %u",
                "step %x",  # hex digits: a-f
                "step %X",
                "step %e",
                "%(step)d",  # a mapping key
                "step %ld",
                "key=%d",  # a gate character
                "user_%d",
                "x" * 300 + "%d",  # past the cache's length
            )
        }
        assert [t for t, stays in verdicts.items() if stays] == [
            "processing step %d",
            "%5d items in %s%% of %r runs, %i, %u",
        ]
        assert redactor.digit_templates == {t: v for t, v in verdicts.items() if len(t) <= 256}
        assert not Redactor(extra_patterns=["x"]).digits_stay_clean("processing step %d")


class TestRouting:
    def test_first_match_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """record extra > session_scope > handler's session_id > env > generated."""
        monkeypatch.setenv("CODEX_SESSION_ID", "env")
        dict_config(session_id="own")
        log = logging.getLogger("app")
        log.info("1")
        with session_scope("scoped"):
            log.info("2")
            log.info("3", extra={"session_id": "explicit"})
        assert [r["message"] for r in read_lines(session_file("own"))] == ["1"]
        assert [r["message"] for r in read_lines(session_file("explicit"))] == ["3"]
        scoped = read_lines(session_file("scoped"))
        assert [(r["kind"], r["message"]) for r in scoped] == [
            ("start", "session start"), ("message", "2"), ("end", "session end"),
        ]  # fmt: skip

    def test_env_then_generated(self) -> None:
        """Without handler id or scope, the environment's, else a fresh exported one."""
        dict_config()
        logging.getLogger("app").info("x")
        sid = os.environ["CODEX_SESSION_ID"]
        assert read_lines(session_file(sid))[0]["session_id"] == sid


class TestFailures:
    @pytest.mark.parametrize("bad", ["../x", "a/b", "", "x" * 129, "a\x00b"])
    def test_invalid_id_writes_nothing(self, bad: str, tmp_path: Path) -> None:
        """An invalid routed id goes to handleError and no file appears anywhere."""
        errors: list[logging.LogRecord] = []
        handler = CodexHandler()
        handler.handleError = errors.append  # type: ignore[method-assign]
        logger = logging.getLogger("bad")
        logger.addHandler(handler)
        logger.error("x", extra={"session_id": bad})
        assert len(errors) == 1
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
        handler.close()

    def test_unwritable_folder_does_not_raise(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A folder that cannot be created is one stderr line per cause, never a traceback."""
        (tmp_path / "file").write_text("not a folder")
        handler = CodexHandler(sessions_dir=tmp_path / "file" / "sessions", session_id="s")
        logger = logging.getLogger("unwritable")
        logger.addHandler(handler)
        logger.error("lost")
        logger.error("lost again")
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(f"codex_logging: dropped a record for {handler.sessions_dir}: ")
        assert "Traceback" not in err[0]
        assert handler.dropped == 2
        handler.close()

    @pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
    def test_read_only_folder_does_not_raise(
        self, tmp_path: Path
    ) -> None:  # pragma: no cover - root here
        """A read-only folder is reported by handleError, not raised."""
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        errors: list[logging.LogRecord] = []
        handler = CodexHandler(sessions_dir=folder, session_id="s")
        handler.handleError = errors.append  # type: ignore[method-assign]
        handler.handle(logging.makeLogRecord({"msg": "x"}))
        assert len(errors) == 1

    def test_recursion_error_propagates(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """RecursionError is re-raised, as CPython's handlers do."""
        handler = CodexHandler(session_id="s")

        def exploding(_record: object) -> bytes:
            raise RecursionError

        monkeypatch.setattr(codex_logging._record, "_fast_dumps", None)
        monkeypatch.setattr(codex_logging._write.sink, "encode", exploding)
        with pytest.raises(RecursionError):
            handler.emit(logging.makeLogRecord({"msg": "x"}))
        assert handler.dropped == 0


class TestSignature:
    def test_the_settings_are_the_other_entry_points(self) -> None:
        """CodexHandler writes out SinkOwner's keywords (for type checkers) plus level: kept equal."""
        from codex_logging import CodexProcessor, LoguruSink
        from codex_logging._write.sink import SinkOwner

        def params(cls: type) -> list[tuple[str, object, object, object]]:
            signature = inspect.signature(cls.__init__)  # type: ignore[misc]
            return [
                (p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()
            ]

        shared = params(SinkOwner)
        assert params(CodexHandler) == [*shared, params(CodexHandler)[-1]]
        assert params(CodexHandler)[-1][:3] == ("level", inspect.Parameter.KEYWORD_ONLY, 0)
        assert params(CodexProcessor) == params(LoguruSink) == shared

"""The sync engine's folder identity (source_id) and its checks of the folder."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from codex_logging._ingest import SOURCE_ID_FILE, source_id

if TYPE_CHECKING:
    import pytest


class TestSourceId:
    def test_created_once_private_and_read_back(self, tmp_path: Path) -> None:
        """The id is a UUID kept in the folder (0600), the same on every call."""
        first = source_id(str(tmp_path))
        assert len(first) == 36
        assert first.count("-") == 4
        assert source_id(str(tmp_path)) == first
        path = tmp_path / SOURCE_ID_FILE
        assert path.read_text() == first + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_environment_overrides(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """CODEX_SOURCE_ID is used as it is, and no file is created."""
        monkeypatch.setenv("CODEX_SOURCE_ID", "build-host-1")
        assert source_id(str(tmp_path)) == "build-host-1"
        assert not (tmp_path / SOURCE_ID_FILE).exists()

    def test_racing_callers_agree(self, tmp_path: Path) -> None:
        """Eight threads asking at once for a new folder's id all get the same one."""
        got: list[str] = []
        start = threading.Barrier(8)

        def ask() -> None:
            start.wait()
            got.append(source_id(str(tmp_path)))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(got) == 8
        assert len(set(got)) == 1

    def test_unwritable_folder_falls_back_to_its_identity(self, tmp_path: Path) -> None:
        """A folder where the id file cannot be created is identified by (dev, ino)."""
        folder = tmp_path / "ro"
        folder.mkdir()
        (folder / SOURCE_ID_FILE).mkdir()  # occupied by a folder: cannot be read or created
        info = os.stat(folder)
        assert source_id(str(folder)) == f"dev-{info.st_dev}-ino-{info.st_ino}"


class TestFolderChecks:
    def test_empty_id_file_falls_back_to_identity(self, tmp_path: Path) -> None:
        """An empty .codex-source-id (written by hand) is not an id: the folder's identity is used."""
        (tmp_path / SOURCE_ID_FILE).write_text("")
        info = os.stat(tmp_path)
        assert source_id(str(tmp_path)) == f"dev-{info.st_dev}-ino-{info.st_ino}"

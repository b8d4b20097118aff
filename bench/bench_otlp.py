"""OTLP export beside the SQLite sync: the same file, lines/s (target: export >= 0.8x SQLite).

The receiver runs in its own process (http.server) and decodes every request
with opentelemetry-proto, as a Collector would parse it, so the exporter's
cost is measured without the receiver sharing its GIL.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_sync import make_file

from codex_logging import sync_to_otlp, sync_to_sqlite

LINES = int(os.environ.get("BENCH_OTLP_LINES", "200000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ExportLogsServiceRequest().ParseFromString(body)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def main() -> str:
    folder = Path(tempfile.mkdtemp(prefix="codex-bench-otlp-"))
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}/v1/logs"
        lite, otlp = [], []
        for r in range(REPEATS):
            sessions = folder / f"r{r}" / "sessions"
            sessions.mkdir(parents=True)
            make_file(sessions / "bench.ndjson", LINES)
            os.sync()  # no timed run pays for an earlier one's writes
            start = time.perf_counter()
            report = sync_to_sqlite(folder / f"r{r}" / "x.db", sessions)
            lite.append(LINES / (time.perf_counter() - start))
            assert report.rows_inserted == LINES
            os.sync()
            start = time.perf_counter()
            report = sync_to_otlp(url, sessions)
            otlp.append(LINES / (time.perf_counter() - start))
            assert report.rows_inserted == LINES, report
    finally:
        receiver.kill()
        receiver.wait()
        shutil.rmtree(folder, ignore_errors=True)
    lite_rate, otlp_rate = statistics.median(lite), statistics.median(otlp)
    return "\n".join(
        [
            f"## OTLP export beside the SQLite sync ({LINES:,} lines, median of {REPEATS})",
            "",
            "| target | lines/s | vs SQLite |",
            "| --- | ---: | ---: |",
            f"| sync_to_sqlite | {lite_rate:,.0f} | 1.00x |",
            f"| sync_to_otlp (protobuf over HTTP, receiver decoding) | {otlp_rate:,.0f} | {otlp_rate / lite_rate:.2f}x |",
        ]
    )


if __name__ == "__main__":
    print(main())

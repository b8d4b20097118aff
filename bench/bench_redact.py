"""Redaction: the cost on ordinary records, and linear time on hostile input for every rule."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from codex_logging._redaction.redactor import Redactor
from codex_logging._redaction.secrets import RULES

REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
SIZES = (64 * 1024, 256 * 1024, 1024 * 1024)
# One adversarial input a rule: repetitions of its own prefix, the worst found
# by tests/test_redact.py's table (ADVERSARIAL), and the old JWT rule's case.
HOSTILE = {
    "private_key": "-----BEGIN A PRIVATE KEY-----\n-----END ",
    "bearer": "bearer a",
    "basic": "Basic /basic ",
    "jwt": "eyJ-",
    "openai": "-sk-",
    "stripe": "rk_test_a",
    "github": "-ghp_a",
    "gitlab": "glpat-a.",
    "aws": "ASIAA",
    "google": "AIza",
    "npm": "npm_a",
    "slack": "-xox",
    "slack_webhook": "hooks.slack.com/services/",
    "jwt_spaced": "eyAaaaa.eyaaaa.",
    "google_oauth": "-ya29.a",
    "huggingface": "api_org_a",
    "sendgrid": "SG.aaaaaaaaaaaaaaaaaaaa.",
    "providers": "shpat_a",
    "mysql": "mysql -pa ",
    "curl_user": "curl -u a:",
    "login_flag": "login -p a ",
    "netrc": "login a password ",
    "url": "a://b:c@@",
    "assignment": "a=key",
    "encoded_url": "https%3a%2f%2fu%3Ap%40",
    "flag": " --password ",
    "openssl_pass": "-passin pass:",
    "telegram": "123456789:AA",
    "argv_list": "['mysql', ",
}
NORMAL = {
    "short clean message": "processing step 1",
    "clean 200-char message": "user 42 asked for the report of " + "items and totals " * 10,
    "message with a URL, no password": "GET https://api.example.com/v1/items?page=2 returned 200 in 12 ms",
    "message with a Bearer token": "calling with Authorization: Bearer abcdefghijklmnop0123",
    "logfmt message, no secret name": "step=3 total=10 user=bob elapsed_ms=12",
    "colons after words, one secret-ish word": "session 42: step 5: ran alpha on file_5.py, status: ok",
}
# The sync's check of flat lines (docs/performance.md): joined, "session" in each.
FLAT_LINE = (
    '{"ts":1780000000.012346,"session_id":"9b2f4c1e-0d7a-4f53-8a61-2c3e4b5d6f70","kind":"message",'
    '"level":"INFO","logger":"agent.tools","message":"step 5: ran alpha on file_5.py","pid":40000,'
    '"role":"tool","tool":"charlie","step":5,"ms":1.85}'
)


def best(run: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def hostile_rows() -> list[str]:
    assert set(HOSTILE) == {name for name, _, _ in RULES} | {
        "url",
        "assignment",
        "encoded_url",
        "flag",
        "argv_list",
    }
    redactor = Redactor()
    rows = []
    for name, prefix in HOSTILE.items():
        cells = []
        for size in SIZES:
            text = (prefix * (size // len(prefix) + 1))[:size]
            cells.append(best(lambda text=text: redactor.text(text, [0]), 3))
        ratio = cells[-1] / cells[0]
        rows.append(f"| {name} | `{prefix!r}` | " + " | ".join(f"{c * 1000:.1f}" for c in cells)
                    + f" | {ratio:.1f} |")  # fmt: skip
    return rows


def normal_rows() -> list[str]:
    n = 20000
    rows = []
    for label, text in NORMAL.items():
        # A fresh string each call, so the clean-string cache does not answer.
        texts = [f"{text} #{i}" for i in range(n)]
        redactor = Redactor()

        def fresh(texts: list[str] = texts, redactor: Redactor = redactor) -> None:
            counter = [0]
            for t in texts:
                redactor.text(t, counter)

        def cached(text: str = text, redactor: Redactor = redactor) -> None:
            counter = [0]
            for _ in range(n):
                redactor.text(text, counter)

        rows.append(f"| {label} | {best(fresh) / n * 1e6:.2f} | {best(cached) / n * 1e6:.2f} |")
    record = {"user": "bob", "password": "x", "headers": [["Authorization", "y"], ["host", "h"]],
              "items": [1, 2, 3], "note": "fine", "nested": {"a": {"b": "c"}}}  # fmt: skip
    redactor = Redactor()
    per_record = best(lambda: [redactor.value(record, [0]) for _ in range(n)]) / n
    rows.append(f"| a 6-field nested record (value) | {per_record * 1e6:.2f} | |")
    flat = Redactor(flat_json=True)
    batch = "\n".join([FLAT_LINE] * 5000)
    per_line = best(lambda: flat.text(batch, [0])) / 5000
    rows.append(f"| 5,000 flat lines joined (the sync's check), a line | {per_line * 1e6:.2f} | |")
    return rows


def main() -> str:
    sizes = " | ".join(f"{s // 1024} KB ms" for s in SIZES)
    return "\n".join([
        "Redaction, hostile input: repetitions of each rule's prefix, best of 3 (linear: 1 MB / 64 KB is about 16)", "",
        f"| rule | repeated | {sizes} | 1 MB / 64 KB |", "| --- | --- | ---: | ---: | ---: | ---: |",
        *hostile_rows(), "",
        f"Redaction, ordinary strings: microseconds a call, best of {REPEATS}", "",
        "| input | new string each call | same string (clean cache) |", "| --- | ---: | ---: |",
        *normal_rows(),
    ])  # fmt: skip


if __name__ == "__main__":
    print(main())

"""What counts as a secret: key names, credential shapes, and their quick checks.

The :class:`~codex_logging._redaction.redactor.Redactor` applies these; this module only
says what to look for and where (docs/redaction.md). Every built-in rule runs in
time linear in the string's length. Each regular expression starts with a
literal that must not follow a character of its own body (a look-behind), so a
run of repeated prefixes is tried from one place only, and none has two
unbounded quantifiers that can match the same characters. The URL and
assignment rules find a literal mark, read a bounded window around it, and
consume each value once. ``tests/test_redact.py`` feeds each rule a megabyte of
its own prefix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final

REDACTED: Final = "[REDACTED]"
#: How far past ``scheme://user:`` a URL password is looked for.
MAX_URL_PASSWORD: Final = 256

# A key is secret when its normalised name (see _norm) is one of these ...
SECRET_NAMES: Final = frozenset(
    {
        "apikey",
        "accesskey",
        "secretkey",
        "privatekey",
        "accesstoken",
        "refreshtoken",
        "pgpassword",
        "sessionid",
        "csrftoken",
        "xsrftoken",
    }
)
# ... or its last ``_``-separated part is one of these ("db_pass",
# "x_api_key", "session_cookie"); "key" alone, "tokens" and "token_count" are
# not secret.
SECRET_LAST_PARTS: Final = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pass",
        "passphrase",
        "secret",
        "token",
        "apikey",
        "auth",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "creds",
        "sessionid",
        "csrftoken",
    }
)
#: Every secret name above contains one of these, in any case: a string with
#: none of them cannot assign to a secret name (see redact_assignments).
NAME_HINTS: Final = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "cookie",
    "cred",
    "session",
    "csrf",
)
_KEY_PART: Final = "key"  # secret as a last part after another part: "api_key", not "key"

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s\-.]+|_{2,}")


def norm(key: str) -> str:
    """Normalise a key name: camelCase to snake, lower case, separators to ``_``."""
    key = _CAMEL.sub("_", key.strip())
    return _SEPARATORS.sub("_", key.lower()).strip("_")


def key_is_secret(norm: str) -> bool:
    """Return whether a normalised key name (see ``_norm``) is a secret key."""
    if norm in SECRET_NAMES:
        return True
    head, _, last = norm.rpartition("_")
    return last in SECRET_LAST_PARTS or (last == _KEY_PART and head != "")


# Characters of the bodies below, for the look-behinds.
_B64URL = "A-Za-z0-9_-"
_ALNUM = "A-Za-z0-9"

# Each rule: its name; literals of which a string must contain at least one
# before the expression runs; the expression. A group named "keep" stays
# readable ("Bearer [REDACTED]"). Shapes follow the public rules of gitleaks
# (github.com/gitleaks/gitleaks, cmd/generate/config/rules/<file>.go) where
# noted; the expressions are our own, written for linear time.
RULES: Final[tuple[tuple[str, tuple[str, ...], str], ...]] = (
    (  # privatekey.go: PEM and PGP ("PRIVATE KEY BLOCK"); an unended block is cut to the end
        "private_key",
        ("PRIVATE KEY",),
        (
            r"-----BEGIN [A-Z0-9 ]{0,64}PRIVATE KEY(?: BLOCK)?-----.*?"
            r"(?:-----END [A-Z0-9 ]{0,64}PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
    ),
    (
        "bearer",
        ("earer", "EARER"),
        rf"(?P<keep>(?<![{_ALNUM}_])(?i:bearer)\s+)[A-Za-z0-9\-._~+/]{{8,}}=*",
    ),
    ("basic", ("asic", "ASIC"), r"(?P<keep>\b(?:[Bb]asic|BASIC)\s+)[A-Za-z0-9+/]{8,}={0,2}"),
    (  # jwt.go; JWE (RFC 7516) has five parts, the second may be empty
        "jwt",
        ("eyJ",),
        (
            rf"(?<![{_B64URL}])eyJ[{_B64URL}]{{4,}}\."
            rf"(?:eyJ[{_B64URL}]{{4,}}\.[{_B64URL}]*"
            rf"|[{_B64URL}]*\.[{_B64URL}]+\.[{_B64URL}]+\.[{_B64URL}]*)"
        ),
    ),
    ("openai", ("sk-",), rf"(?<![{_B64URL}])sk-[{_B64URL}]{{16,}}"),
    (  # stripe.go: secret and restricted keys, live and test
        "stripe",
        ("k_live_", "k_test_", "k_prod_"),
        rf"(?<![{_ALNUM}_])[sr]k_(?:live|test|prod)_[{_ALNUM}]{{10,}}",
    ),
    (  # github.go
        "github",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        rf"(?<![{_ALNUM}_])(?:gh[pousr]_[{_ALNUM}]{{20,}}|github_pat_[{_ALNUM}_]{{20,}})",
    ),
    (  # gitlab.go: glpat- and the longer routable form with a ".xx" tail
        "gitlab",
        ("glpat-",),
        rf"(?<![{_B64URL}])glpat-[{_B64URL}]{{20,}}(?:\.[{_ALNUM}]{{2,}})?",
    ),
    ("aws", ("AKIA", "ASIA"), r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ("google", ("AIza",), rf"(?<![{_B64URL}])AIza[{_B64URL}]{{35,}}"),  # gcp.go
    ("npm", ("npm_",), rf"(?<![{_ALNUM}_])npm_[{_ALNUM}]{{36,}}"),  # npm.go
    (  # slack.go: bot/user tokens and app-level tokens
        "slack",
        ("xox", "xapp-"),
        rf"(?<![{_ALNUM}-])(?:xox[abposr]-[{_ALNUM}-]{{10,}}|xapp-[0-9]-[{_ALNUM}-]{{10,}})",
    ),
    (  # slack.go: incoming webhooks; the path after the kind is the secret
        "slack_webhook",
        ("hooks.slack.com/",),
        r"(?P<keep>hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9+/_-]{8,}",
    ),
)
SECRET_PATTERNS: Final = tuple(source for _, _, source in RULES)
# A first, cheaper test: every match of a rule contains one of its gates, so a
# string with no gate at all (most messages) costs a dozen substring tests,
# each at memory speed. A rule may run twice ("earer" and "EARER"): harmless.
GATES: Final = (
    ("-", ("private_key", "openai", "gitlab", "slack")),
    ("_", ("stripe", "github", "npm")),
    ("earer", ("bearer",)),
    ("EARER", ("bearer",)),
    ("asic", ("basic",)),
    ("ASIC", ("basic",)),
    ("eyJ", ("jwt",)),
    ("AKIA", ("aws",)),
    ("ASIA", ("aws",)),
    ("AIza", ("google",)),
    ("hooks.slack.com/", ("slack_webhook",)),
    ("://", ("url",)),
    ("=", ("assignment",)),
    ('":', ("assignment",)),
    ("':", ("assignment",)),
)
#: Each gate holds one of these characters; a text without a gate's
#: character cannot hold the gate. Seven one-character tests (at memory
#: speed) pick the gates worth testing, in their order: a text none of whose
#: characters is here (``processing step 12``) is clean after seven tests.
#: A replacement adds only ``[REDACTED]`` (no gate in it, none across its
#: brackets), so a gate absent from the text stays absent as rules run.
GATE_KEYS: Final = "-_AJa:="


def gate_key(gate: str) -> int:
    """Return the bit of the first key character in ``gate``."""
    for bit, key in enumerate(GATE_KEYS):
        if key in gate:
            return 1 << bit
    msg = f"gate {gate!r} holds none of {GATE_KEYS!r}"  # pragma: no cover - checked at import
    raise AssertionError(msg)  # pragma: no cover


GATE_BITS: Final = {gate: gate_key(gate) for gate, _ in GATES}
Rule = Callable[[str], tuple[str, int]]

# ``scheme://user:`` (or ``scheme://:``); the password after it is found by
# _url_password. The look-behind starts a scheme where a run of scheme
# characters starts, so each "://" is tried from one place.
_URL_START = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s/:@]*:")
# A password with spaces: two to four words, none with "/" or "@", not a port.
_SPACED_PASSWORD = re.compile(r"(?!\d+ )[^\s/@]+(?: [^\s/@]+){1,3}(?=@)")
_NETLOC_END = re.compile(r"[/?#]")
# Before the first "@": "443/path" is a port and a path, "?" or "#" a query.
_NOT_PASSWORD = re.compile(r"\d+/|[^?#]*[?#]")


# ``name=`` (query strings, logfmt, environment, ``--flag=``) and ``"name":``
# or ``'name':`` (JSON, and a dict's repr in a %-formatted message): the value
# after it is secret when the name is a secret key. The marks are found by a
# literal scan; the name is read backwards from the mark, as one anchored
# match on the reversed string, at most 64 characters; a value is consumed
# once (see redact_assignments).
_NAME_REVERSED = re.compile(r"[A-Za-z0-9_.\-]{1,64}(?![A-Za-z0-9_.\-])")
_QUOTED_NAME_REVERSED = {q: re.compile(rf"[A-Za-z0-9_.\- ]{{1,64}}{q}") for q in "\"'"}
_QUOTED = {'"': re.compile(r'(?:[^"\\\n]|\\.)*"'), "'": re.compile(r"(?:[^'\\\n]|\\.)*'")}
_BARE_VALUE = re.compile(r"[^\s&#;,'\"}\]]+")


def _assignment_marks(value: str, json_keys: bool = True) -> list[tuple[int, int, str | None]]:
    """Return ``(mark, value start, quote)`` for each ``=`` (not ``==``), ``":`` and ``':``.

    ``json_keys=False`` leaves out ``":``.
    """
    marks: list[tuple[int, int, str | None]] = []
    find = value.find
    mark = find("=")
    while mark >= 0:
        if value[mark + 1 : mark + 2] != "=":
            marks.append((mark, mark + 1, None))
        mark = find("=", mark + 2 if value[mark + 1 : mark + 2] == "=" else mark + 1)
    for quote in ('"', "'") if json_keys else ("'",):
        mark = find(quote + ":")
        while mark >= 0:
            after = mark + 2
            while value[after : after + 1] == " " and after - mark < 10:
                after += 1
            marks.append((mark, after, quote))
            mark = find(quote + ":", mark + 2)
    marks.sort()
    return marks


def _assignment_value(value: str, start: int) -> tuple[int, int]:
    """Return the span of the value starting at ``start``: quoted (without its quotes) or bare."""
    quote = value[start : start + 1]
    if quote in _QUOTED:
        start += 1
        closing = _QUOTED[quote].match(value, start)
        if closing is not None:
            return start, closing.end() - 1
        # Unterminated: the rest of the token after the quote.
    bare = _BARE_VALUE.match(value, start)
    return (start, bare.end()) if bare is not None else (start, start)


def _url_password(value: str, start: int) -> int:
    """Return where the password starting at ``start`` ends (at its ``@``), or -1.

    Without spaces, the password runs to the last ``@`` of the host part: the
    first ``@`` may be in the password ("p@ss@host"), and so may ``/``
    ("ab/cd@host"), unless what comes before the first ``@`` is a port and a
    path ("443/a@b") or holds a query. With spaces, see ``_SPACED_PASSWORD``.
    """
    window = value[start : start + MAX_URL_PASSWORD + 1]
    token = window.split(maxsplit=1)[0] if window[:1].strip() else ""
    first = token.find("@")
    if first > 0:
        if _NOT_PASSWORD.match(token, 0, first):  # a port and a path, or a query
            return -1
        netloc = _NETLOC_END.search(token, first)
        return start + token.rfind("@", first, netloc.start() if netloc else len(token))
    if first < 0:
        spaced = _SPACED_PASSWORD.match(window)
        if spaced is not None:
            return start + spaced.end()
    return -1


def redact_url_passwords(value: str) -> tuple[str, int]:
    """Replace the password of every ``scheme://user:password@host`` in ``value``."""
    if "@" not in value:
        return value, 0
    parts: list[str] = []
    done = 0
    for match in _URL_START.finditer(value):
        start = match.end()
        if start <= done:  # inside a password already replaced
            continue
        end = _url_password(value, start)
        if end > start:
            parts += (value[done:start], REDACTED)
            done = end
    if not parts:
        return value, 0
    parts.append(value[done:])
    return "".join(parts), len(parts) // 2


def redact_assignments(
    value: str,
    secret_keys: Mapping[object, bool],
    hints: tuple[str, ...],
    json_keys: bool = True,
) -> tuple[str, int]:
    """Replace the value of every ``secret_name=value`` and ``"secret_name": "value"``.

    Args:
        value: Any string.
        secret_keys: ``secret_keys[name]`` is whether ``name`` is secret.
        hints: Words every secret name holds (empty: look at every assignment).
        json_keys: Whether to read ``"name": value`` too (False: only
            ``name=value`` and ``'name': value``).

    Returns:
        The text and the number of values replaced.

    """
    parts: list[str] = []
    done = 0
    if hints and not any(hint in value.lower() for hint in hints):
        return value, 0
    marks = _assignment_marks(value, json_keys)
    if not marks:
        return value, 0
    reverse = value[::-1]
    size = len(value)
    for mark, after, quote in marks:
        if mark < done:  # inside a value already replaced
            continue
        if quote is None:
            found = _NAME_REVERSED.match(reverse, size - mark)
            name = "" if found is None else found.group()[::-1].lstrip("-_.0123456789")
        else:
            found = _QUOTED_NAME_REVERSED[quote].match(reverse, size - mark)
            name = "" if found is None else found.group()[-2::-1]
        if not name or not secret_keys[name]:
            continue
        start, end = _assignment_value(value, after)
        if end > start:
            parts += (value[done:start], REDACTED)
            done = end
    if not parts:
        return value, 0
    parts.append(value[done:])
    return "".join(parts), len(parts) // 2

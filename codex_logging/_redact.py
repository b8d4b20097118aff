"""Redaction of secrets before a record is serialised (SPEC "Redaction").

Two rules, applied at any depth of dicts and lists:

* by key: the value under a secret-looking key becomes ``"[REDACTED]"``; a
  list item ``[name, value]`` is read as a key and its value;
* by shape: a credential-shaped substring of any string, dict keys included,
  becomes ``"[REDACTED]"``; so does the value after a secret name in text
  (``access_token=...``, ``"password": "..."``).

Every built-in rule runs in time linear in the string's length. Each regular
expression starts with a literal that must not follow a character of its own
body (a look-behind), so a run of repeated prefixes is tried from one place
only, and none has two unbounded quantifiers that can match the same
characters. The URL and assignment rules find a literal mark, read a bounded
window around it, and consume each value once. ``tests/test_redact.py`` feeds
each rule a megabyte of its own prefix.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

REDACTED: Final = "[REDACTED]"
#: Values nested deeper than this cannot be checked and are redacted whole.
MAX_DEPTH: Final = 64
#: Strings up to this length that held no secret are remembered, so a message
#: logged again and again (a structlog event, a message without arguments) is
#: scanned once. Longer ones would cost more to hash than to scan.
CLEAN_CACHE_LENGTH: Final = 256
CLEAN_CACHE_SIZE: Final = 1024
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
#: none of them cannot assign to a secret name (see Redactor._assignments).
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


def _norm(key: str) -> str:
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
_GATES: Final = (
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
_GATE_KEYS: Final = "-_AJa:="


def _gate_key(gate: str) -> int:
    """Return the bit of the first key character in ``gate``."""
    for bit, key in enumerate(_GATE_KEYS):
        if key in gate:
            return 1 << bit
    msg = f"gate {gate!r} holds none of {_GATE_KEYS!r}"  # pragma: no cover - checked at import
    raise AssertionError(msg)  # pragma: no cover


_GATE_BITS: Final = {gate: _gate_key(gate) for gate, _ in _GATES}
_Rule = Callable[[str], tuple[str, int]]

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
# once (see Redactor._assignments).
_NAME_REVERSED = re.compile(r"[A-Za-z0-9_.\-]{1,64}(?![A-Za-z0-9_.\-])")
_QUOTED_NAME_REVERSED = {q: re.compile(rf"[A-Za-z0-9_.\- ]{{1,64}}{q}") for q in "\"'"}
_QUOTED = {'"': re.compile(r'(?:[^"\\\n]|\\.)*"'), "'": re.compile(r"(?:[^'\\\n]|\\.)*'")}
_BARE_VALUE = re.compile(r"[^\s&#;,'\"}\]]+")


def _has_hint(lower: str, hints: tuple[str, ...]) -> bool:
    return any(hint in lower for hint in hints)


def _assignment_marks(value: str) -> list[tuple[int, int, str | None]]:
    """Return ``(mark, value start, quote)`` for each ``=`` (not ``==``), ``":`` and ``':``."""
    marks: list[tuple[int, int, str | None]] = []
    find = value.find
    mark = find("=")
    while mark >= 0:
        if value[mark + 1 : mark + 2] != "=":
            marks.append((mark, mark + 1, None))
        mark = find("=", mark + 2 if value[mark + 1 : mark + 2] == "=" else mark + 1)
    for quote in ('"', "'"):
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


class _SecretKeys(dict[object, bool]):
    """``keys[key]``: whether values under ``key`` are secret, decided once per key.

    A dict lookup on the per-record path; ``__missing__`` decides a new key.
    """

    __slots__ = ("_extra",)

    def __init__(self, extra: frozenset[str]) -> None:
        super().__init__()
        self._extra = extra

    def __missing__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        norm = _norm(key)
        found = norm in self._extra or key_is_secret(norm)
        if len(self) < 4096:  # bounded: keys may be made up at run time
            self[key] = found
        return found


def _compile_user(source: object) -> re.Pattern[str]:
    """Compile one ``redact_patterns`` entry on its own, so its inline flags are its own."""
    if not isinstance(source, str):
        msg = f"redact_patterns: {source!r} is not a string"
        raise TypeError(msg)
    try:
        pattern = re.compile(source)
    except re.error as exc:
        msg = f"redact_patterns: invalid regular expression {source!r}: {exc}"
        raise ValueError(msg) from None
    if pattern.fullmatch("") is not None:
        msg = f"redact_patterns: {source!r} matches the empty string"
        raise ValueError(msg)
    return pattern


def _items(values: Iterable[str] | str) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


class Redactor:
    """Replace secrets in record values; one instance per handler or processor.

    Args:
        extra_keys: More key names to treat as secret, compared after the same
            normalisation as the built-in names.
        extra_patterns: More regular expressions whose matches are secret; each
            is compiled on its own and tried on every string.

    Raises:
        ValueError: A pattern does not compile or matches the empty string.

    """

    __slots__ = ("_clean", "_hints", "_plans", "_user", "secret_keys")

    def __init__(
        self,
        extra_keys: Iterable[str] | str = (),
        extra_patterns: Iterable[str] | str = (),
        *,
        assignments: bool = True,
    ) -> None:
        """Compile the key set and one expression per rule.

        ``assignments=False`` leaves out the rule for a secret name's value in
        text (``password=...``, ``"token": "..."``): the mirror's quick check
        over whole JSON lines, whose keys the key rules already cover, would
        otherwise look at every ``":`` of every line.
        """
        #: ``secret_keys[key]`` is whether values under ``key`` are secret.
        extra = frozenset(_norm(k) for k in _items(extra_keys))
        self.secret_keys = _SecretKeys(extra)
        # Configured names can be any word: then every assignment is looked at.
        self._hints = () if extra else NAME_HINTS
        self._clean: set[str] = set()
        self._user = [_compile_user(source) for source in _items(extra_patterns)]
        rules: dict[str, tuple[tuple[str, ...], _Rule]] = {
            "url": (("://",), _redact_url_passwords),
        }
        if assignments:
            rules["assignment"] = (("=", '":', "':"), self._assignments)
        for name, literals, source in RULES:
            pattern = re.compile(source, re.DOTALL)
            template = ("\\g<keep>" if "(?P<keep>" in source else "") + REDACTED
            rules[name] = (literals, _bind(pattern, template))
        gated = [(gate, [rules[name] for name in names if name in rules]) for gate, names in _GATES]
        # The gates to test, in order, for each set of key characters present.
        self._plans = [
            [(gate, found) for gate, found in gated if mask & _GATE_BITS[gate] and found]
            for mask in range(1 << len(_GATE_KEYS))
        ]

    def is_secret_key(self, key: object) -> bool:
        """Return whether values under ``key`` are secret.

        Args:
            key: A mapping key; only strings can be secret.

        Returns:
            True for a secret-looking key.

        """
        return self.secret_keys[key]

    def text(self, value: str, counter: list[int]) -> str:  # noqa: C901, PLR0912 - hot (bench/)
        """Return ``value`` with credential-shaped substrings replaced.

        Args:
            value: Any string.
            counter: A one-item list; its item is increased per replacement.

        Returns:
            The redacted string (``value`` itself when nothing matched).

        """
        short = len(value) <= CLEAN_CACHE_LENGTH
        if short and value in self._clean:
            return value
        out = value
        mask = 0
        if "-" in value:
            mask = 1
        if "_" in value:
            mask |= 2
        if "A" in value:
            mask |= 4
        if "J" in value:
            mask |= 8
        if "a" in value:
            mask |= 16
        if ":" in value:
            mask |= 32
        if "=" in value:
            mask |= 64
        for gate, rules in self._plans[mask]:
            if gate in out:
                for literals, rule in rules:
                    for literal in literals:
                        if literal in out:
                            out, found = rule(out)
                            counter[0] += found
                            break
        for pattern in self._user:
            out, found = pattern.subn(REDACTED, out)
            counter[0] += found
        if out is value or out == value:
            if short:
                self._remember_clean(value)
            return value
        return out

    def _assignments(self, value: str) -> tuple[str, int]:
        """Replace the value of every ``secret_name=value`` and ``"secret_name": "value"``."""
        parts: list[str] = []
        done = 0
        secret_keys = self.secret_keys
        if self._hints and not _has_hint(value.lower(), self._hints):
            return value, 0
        marks = _assignment_marks(value)
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

    def _remember_clean(self, value: str) -> None:
        clean = self._clean
        if len(clean) >= CLEAN_CACHE_SIZE:  # bounded; the frequent ones come back
            clean.clear()
        clean.add(value)

    def value(self, value: Any, counter: list[int], _seen: frozenset[int] = frozenset()) -> Any:
        """Return a redacted copy of ``value`` (strings, mappings and sequences).

        A list item that is a ``[name, value]`` pair with a secret-looking
        name (HTTP or ASGI headers) has its value redacted.

        Args:
            value: Any object; other types are returned as they are.
            counter: A one-item list counting the replacements.

        Returns:
            The value with secrets replaced; the original is never mutated.

        """
        if isinstance(value, str):
            return self.text(value, counter)
        if isinstance(value, Mapping | list | tuple):
            if id(value) in _seen:  # self-referencing: the encoder reports it
                return "<circular reference>"
            if len(_seen) >= MAX_DEPTH:
                counter[0] += 1
                return REDACTED
            seen = _seen | {id(value)}
            if isinstance(value, Mapping):
                return self.mapping(value, counter, seen)
            out = []
            for item in value:
                if (
                    isinstance(item, list | tuple)
                    and len(item) == 2  # a (name, value) pair
                    and isinstance(item[0], str)
                    and self.secret_keys[item[0]]
                ):
                    counter[0] += 1
                    out.append([self.text(item[0], counter), REDACTED])
                else:
                    out.append(self.value(item, counter, seen))
            return out
        return value

    def mapping(
        self, value: Mapping[Any, Any], counter: list[int], _seen: frozenset[int] = frozenset()
    ) -> dict[Any, Any]:
        """Return a redacted copy of a mapping; its keys are scanned too.

        A key holding a secret is replaced by its redacted text; should that
        collide with another key, ``#2``, ``#3``... is appended.

        Args:
            value: The mapping.
            counter: A one-item list counting the replacements.

        Returns:
            A new dict.

        """
        out: dict[Any, Any] = {}
        clean = self._clean  # most keys were seen before: skip the call
        for key, item in value.items():
            name = key
            if key.__class__ is str and key not in clean:
                name = self.text(key, counter)
                if name is not key:
                    name = _unique(name, out, value)
            if self.secret_keys[key]:
                counter[0] += 1
                out[name] = REDACTED
            else:
                out[name] = self.value(item, counter, _seen)
        return out


def _bind(pattern: re.Pattern[str], template: str) -> Callable[[str], tuple[str, int]]:
    def rule(value: str) -> tuple[str, int]:
        return pattern.subn(template, value)

    return rule


def _redact_url_passwords(value: str) -> tuple[str, int]:
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


def _unique(name: str, out: Mapping[Any, Any], original: Mapping[Any, Any]) -> str:
    if name not in out and name not in original:
        return name
    n = 2
    while f"{name}#{n}" in out or f"{name}#{n}" in original:
        n += 1
    return f"{name}#{n}"

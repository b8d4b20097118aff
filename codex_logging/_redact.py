"""Redaction of secrets before a record is serialised (SPEC "Redaction").

Two rules, applied at any depth of dicts, lists and tuples:

* by key: the value under a secret-looking key becomes ``"[REDACTED]"``;
* by value: a credential-shaped substring of any string becomes ``"[REDACTED]"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

REDACTED: Final = "[REDACTED]"
#: Values nested deeper than this cannot be checked and are redacted whole.
MAX_DEPTH: Final = 64
#: Strings up to this length that held no secret are remembered, so a message
#: logged again and again (a structlog event, a message without arguments) is
#: scanned once. Longer ones would cost more to hash than to scan.
CLEAN_CACHE_LENGTH: Final = 256
CLEAN_CACHE_SIZE: Final = 1024

# Compared after lower-casing and mapping "-" to "_", so "Set-Cookie" and
# "X-Api-Key" are caught too.
SECRET_KEYS: Final = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "private_key",
        "access_key",
        "client_secret",
        "credentials",
    }
)
SECRET_SUFFIXES: Final = ("_token", "_secret", "_password", "_key")

# Each rule: a pattern that matches a credential; literals of which the match
# must contain at least one; and one more literal it must also contain (or
# None). Where a group named "keep" exists, that prefix stays readable
# ("Bearer [REDACTED]", "https://user:[REDACTED]@host").
_RULES: Final[tuple[tuple[str, tuple[str, ...], str | None], ...]] = (
    (
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
        ("PRIVATE KEY",),
        None,
    ),
    (r"(?P<keep>\b[Bb]earer\s+)[A-Za-z0-9\-._~+/]{8,}=*", ("earer",), None),
    (r"(?P<keep>\b[Bb]asic\s+)[A-Za-z0-9+/]{8,}={0,2}", ("asic",), None),
    (r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_\-]*", ("eyJ",), None),
    (r"\bsk-[A-Za-z0-9_\-]{16,}", ("sk-",), None),
    (r"\bgh[pousr]_[A-Za-z0-9]{20,}", ("gh",), "_"),
    (r"\bgithub_pat_[A-Za-z0-9_]{20,}", ("github_pat_",), None),
    (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", ("AKIA", "ASIA"), None),
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", ("xox",), None),
    (r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^/\s:@]*:)[^/\s@]+(?=@)", ("://",), "@"),
)
SECRET_PATTERNS: Final = tuple(source for source, _, _ in _RULES)
# Every built-in match contains one of these. Substring tests run at memory
# speed, so a string with none of them skips the regular expressions altogether.
_TRIGGERS: Final = tuple(dict.fromkeys(t for _, any_of, _ in _RULES for t in any_of))


class _SecretKeys(dict[object, bool]):
    """``keys[key]``: whether values under ``key`` are secret, decided once per key.

    A dict lookup on the per-record path; ``__missing__`` decides a new key.
    """

    __slots__ = ("_names",)

    def __init__(self, names: frozenset[str]) -> None:
        super().__init__()
        self._names = names

    def __missing__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        norm = _norm(key)
        found = norm in self._names or norm.endswith(SECRET_SUFFIXES)
        if len(self) < 4096:  # bounded: keys may be made up at run time
            self[key] = found
        return found


class Redactor:
    """Replace secrets in record values; one instance per handler or processor.

    Args:
        extra_keys: More key names to treat as secret (case-insensitive).
        extra_patterns: More regular expressions whose matches are secret.

    """

    __slots__ = ("_checks", "_clean", "_keep", "_pattern", "_triggers", "secret_keys")

    def __init__(self, extra_keys: Iterable[str] = (), extra_patterns: Iterable[str] = ()) -> None:
        """Compile the key set, one check per pattern, and one pattern for replacing."""
        #: ``secret_keys[key]`` is whether values under ``key`` are secret.
        self.secret_keys = _SecretKeys(SECRET_KEYS | {_norm(k) for k in extra_keys})
        self._clean: set[str] = set()
        extra_patterns = list(extra_patterns)
        sources = [*SECRET_PATTERNS, *extra_patterns]
        # Extra patterns have no known literal: then always run the expression.
        self._triggers = None if extra_patterns else _TRIGGERS
        # One check per pattern, run only when its literals are present: the
        # alternation of all of them costs microseconds on any string that
        # merely contains "://" or "gh", and URLs and words like "high" are common.
        self._checks = [
            (any_of, also, re.compile(source, re.DOTALL).search) for source, any_of, also in _RULES
        ] + [((), None, re.compile(source, re.DOTALL).search) for source in extra_patterns]
        # One alternation to replace every match in one pass.
        parts = []
        self._keep: dict[str, str | None] = {}
        for index, source in enumerate(sources):
            renamed = source.replace("(?P<keep>", f"(?P<keep{index}>")
            parts.append(f"(?P<p{index}>{renamed})")
            self._keep[f"p{index}"] = f"keep{index}" if renamed != source else None
        self._pattern = re.compile("|".join(parts), re.DOTALL)

    def is_secret_key(self, key: object) -> bool:
        """Return whether values under ``key`` are secret.

        Args:
            key: A mapping key; only strings can be secret.

        Returns:
            True for a secret-looking key.

        """
        return self.secret_keys[key]

    def text(self, value: str, counter: list[int]) -> str:
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
        triggers = self._triggers
        if triggers is not None:
            for trigger in triggers:
                if trigger in value:
                    break
            else:
                if short:
                    self._remember_clean(value)
                return value
        if not self._has_secret(value):
            if short:
                self._remember_clean(value)
            return value

        def replace(match: re.Match[str]) -> str:
            counter[0] += 1
            keep = self._keep.get(match.lastgroup or "")
            return (match.group(keep) if keep else "") + REDACTED

        return self._pattern.sub(replace, value)

    def _has_secret(self, value: str) -> bool:
        for any_of, also, search in self._checks:
            if any_of:
                for literal in any_of:
                    if literal in value:
                        break
                else:
                    continue
                if also is not None and also not in value:
                    continue
            if search(value) is not None:
                return True
        return False

    def _remember_clean(self, value: str) -> None:
        clean = self._clean
        if len(clean) >= CLEAN_CACHE_SIZE:  # bounded; the frequent ones come back
            clean.clear()
        clean.add(value)

    def value(self, value: Any, counter: list[int], _seen: frozenset[int] = frozenset()) -> Any:
        """Return a redacted copy of ``value`` (strings, mappings and sequences).

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
            return [self.value(item, counter, seen) for item in value]
        return value

    def mapping(
        self, value: Mapping[Any, Any], counter: list[int], _seen: frozenset[int] = frozenset()
    ) -> dict[Any, Any]:
        """Return a redacted copy of a mapping.

        Args:
            value: The mapping.
            counter: A one-item list counting the replacements.

        Returns:
            A new dict.

        """
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if self.secret_keys[key]:
                counter[0] += 1
                out[key] = REDACTED
            else:
                out[key] = self.value(item, counter, _seen)
        return out


def _norm(key: str) -> str:
    return key.lower().replace("-", "_")

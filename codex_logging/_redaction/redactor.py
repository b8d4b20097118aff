"""Redaction of secrets before a record is serialised (docs/redaction.md).

Two rules, applied at any depth of dicts and lists:

* by key: the value under a secret-looking key becomes ``"[REDACTED]"``; a
  list item ``[name, value]`` is read as a key and its value;
* by shape: a credential-shaped substring of any string, dict keys included,
  becomes ``"[REDACTED]"``; so does the value after a secret name in text
  (``access_token=...``, ``"password": "..."``).

What counts as a secret (names, shapes, gates) is :mod:`codex_logging._redaction.secrets`;
this module applies it, with its caches.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from codex_logging._record import key_text
from codex_logging._redaction.names import (
    NOT_SECRET,
    STRONG,
    name_strength,
    norm,
    plainly_not_secret,
)
from codex_logging._redaction.secrets import (
    ARGV_COMMANDS,
    ARGV_RULES,
    CHECKS,
    GATE_BITS,
    GATES,
    PROVIDER_LITERALS,
    REDACTED,
    RULES,
    Rule,
    hinted_marks,
    redact_argv,
    redact_argv_lists,
    redact_assignments,
    redact_encoded_urls,
    redact_flags,
    redact_url_passwords,
    spliced,
)
from codex_logging._settings import CACHE_SIZE

__all__ = ["REDACTED", "Redactor"]

#: Values nested deeper than this cannot be checked and are redacted whole.
MAX_DEPTH: Final = 64
#: Strings up to this length that held no secret are remembered, so a message
#: logged again and again (a structlog event, a message without arguments) is
#: scanned once. Longer ones would cost more to hash than to scan.
CLEAN_CACHE_LENGTH: Final = 256
CLEAN_CACHE_SIZE: Final = 1024
#: The gate keys a ``%d`` template must not hold to stay clean with ints; "."
#: and "," are allowed, as long as it holds none of the literals of the rules
#: gated by them alone (no such literal can be made by inserting digits: a
#: digit in one, "sq0", needs a "-" for its rule to match).
DIGIT_SAFE_KEYS: Final = "-_AJa:="
DIGIT_SAFE_LITERALS: Final = (
    *(
        literal
        for name, literals, _ in RULES
        if name in {"sendgrid", "google_oauth", "providers"}
        for literal in literals
    ),
    "', ",
    '", ',
)
#: Texts longer than this find the keywords they hold (the gates and rule
#: literals of the plans) in one search per anchor character they hold
#: (:class:`_Keywords`), not one pass a keyword; shorter ones test each
#: keyword as a substring, cheaper below it (docs/performance.md).
ONE_PASS_LENGTH: Final = 1024
#: The characters of ordinary log text, the most frequent first (flat JSON
#: lines, English words, numbers): each keyword is looked for by its
#: character latest in this list, or by one not in it, so the search
#: stops at few places.
_COMMON: Final = '"e 0sa:,otli1nrd4852376.-_9cfmhpgbukyvwxjqz'
#: Where the search for one anchor's keywords stopped this often (a
#: keyword on every line, or hostile input), its keywords are tested as
#: substrings instead: never much more than the tests would cost.
_MAX_STOPS: Final = 16
#: The conversion letter of each ``%`` in a template; ``%(name)s`` gives
#: ``(`` and ``%ld`` the ``l``, so both count as unknown.
_CONVERSION: Final = re.compile(r"%[^a-zA-Z%(]*([a-zA-Z%(])")
#: An argv item naming a flag whose value is the next item: ``--password``.
_ARGV_FLAG: Final = re.compile(r"--([A-Za-z][A-Za-z0-9_-]{0,40})")


class _SecretKeys(dict[object, int]):
    """``keys[key]``: how secret values under ``key`` are (0, WEAK or STRONG), decided once.

    A dict lookup on the per-record path; ``__missing__`` decides a new key.
    """

    __slots__ = ("_extra",)

    def __init__(self, extra: frozenset[str]) -> None:
        super().__init__()
        self._extra = extra

    def __missing__(self, key: object) -> int:
        found = self.judge(key)
        if len(self) < CACHE_SIZE:  # bounded: keys may be made up at run time
            self[key] = found
        return found

    def judge(self, key: object) -> int:
        """Decide ``key`` without remembering it (a name that is data, not a field)."""
        # A key that is not text (b"api_key") is judged by the text it is
        # written under, as the record's field names are.
        normal = norm(key if isinstance(key, str) else key_text(key))
        return STRONG if normal in self._extra else name_strength(normal)


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

    __slots__ = (
        "_argv_rules",
        "_hinted",
        "_json_keys",
        "_keywords",
        "_plans",
        "_user",
        "clean",
        "digit_templates",
        "secret_keys",
    )

    def __init__(
        self,
        extra_keys: Iterable[str] | str = (),
        extra_patterns: Iterable[str] | str = (),
        *,
        flat_json: bool = False,
    ) -> None:
        """Compile the key set and one expression per rule.

        ``flat_json=True`` is for texts that are flat JSON objects written
        without escapes (the mirror's check over a batch of lines), whose keys
        the key rules judge already: the rule for a secret name's value in
        text then skips ``"name":`` (every ``":`` there ends a key; looking at
        each would double the sync's cost) and still reads ``name=value`` and
        ``'name': value`` inside the string values, so every rule reaches
        every string field.
        """
        #: ``secret_keys[key]`` is whether values under ``key`` are secret.
        extra = frozenset(norm(k) for k in _items(extra_keys))
        self.secret_keys = _SecretKeys(extra)
        self._json_keys = not flat_json
        # Only a name holding a fragment of a secret name can be secret, so
        # only the marks after one are looked at (see hinted_marks);
        # configured names can be any word: then every assignment is.
        self._hinted = None if extra else hinted_marks(self._json_keys)
        #: Short texts found clean by :meth:`text` (bounded): a hot path may
        #: test a text here before calling it.
        self.clean: set[str] = set()
        #: ``%``-templates judged by :meth:`digits_stay_clean` (bounded): the
        #: handler's hot path looks a template up here first.
        self.digit_templates: dict[str, bool] = {}
        self._user = [_compile_user(source) for source in _items(extra_patterns)]
        rules: dict[str, tuple[tuple[str, ...], Rule]] = {
            "url": (("://",), redact_url_passwords),
            "encoded_url": (("%3A", "%3a"), self._encoded_urls),
            "assignment": (("=", ":", "', ", '", '), self._assignments),
            "flag": (("--",), self._flags),
            "argv_list": (ARGV_COMMANDS, self._argv_lists),
        }
        for name, literals, source in RULES:
            pattern = re.compile(source, re.DOTALL)
            template = ("\\g<keep>" if "(?P<keep>" in source else "") + REDACTED
            check = CHECKS.get(name)
            bound = _bind(pattern, template) if check is None else _bind_checked(pattern, check)
            rules[name] = (literals, bound)
            if name == "providers":  # one expression, its keywords split by separator
                for part, part_literals in PROVIDER_LITERALS.items():
                    rules[name + part] = (part_literals, bound)
        #: The command-line rules an argv list is read with (redact_argv).
        self._argv_rules = [rules[name][1] for name in ARGV_RULES]
        # A rule under several gates is grouped once with all of them, so it
        # runs at most once a scan; rules under the same gates share a group.
        gates_of: dict[str, list[str]] = {}
        for gate, names in GATES:
            for name in names:
                gates_of.setdefault(name, []).append(gate)
        groups: dict[tuple[str, ...], list[tuple[tuple[str, ...], Rule]]] = {}
        for name, gates in gates_of.items():
            if name in rules:
                groups.setdefault(tuple(gates), []).append(rules[name])
        # The groups to test, in order, with the gates their key characters
        # allow: one plan a set of key characters, made when first met (all
        # 512 at once cost 18 ms a Redactor, and a sync makes two).
        self._plans = _Plans(list(groups.items()))
        self._keywords = _Keywords(
            {
                word
                for gates, found in groups.items()
                for word in (*gates, *(literal for literals, _ in found for literal in literals))
            }
        )

    def enables_no_rule(self, value: str) -> bool:
        """Return whether ``value`` holds no keyword of a rule longer than one character.

        In a longer text such a value lets no rule run that the rest of the
        text does not let run for a match in the rest: every match holds a
        gate and keyword that let its rule run (a one-character gate, ``-``
        ``_`` ``.`` ``:`` ``=``, is in the match itself).

        Args:
            value: Any string.

        Returns:
            True when no rule keyword of two or more characters is in it.
        """
        return all(len(word) == 1 for word in self._keywords.present(value))

    def is_secret_key(self, key: object) -> bool:
        """Return whether values under ``key`` are secret.

        Args:
            key: A mapping key; only strings can be secret.

        Returns:
            True for a secret-looking key.

        """
        return bool(self.secret_keys[key])

    def text(self, value: str, counter: list[int]) -> str:
        """Return ``value`` with credential-shaped substrings replaced.

        A short text found clean is remembered, so a text logged again and
        again (a structlog event, a message without arguments) is scanned once.

        Args:
            value: Any string.
            counter: A one-item list; its item is increased per replacement.

        Returns:
            The redacted string (``value`` itself when nothing matched).

        """
        if len(value) > CLEAN_CACHE_LENGTH:
            return self.scan(value, counter)
        clean = self.clean
        if value in clean:
            return value
        out = self.scan(value, counter)
        if out is value:
            if len(clean) >= CLEAN_CACHE_SIZE:  # bounded; the frequent ones come back
                clean.clear()
            clean.add(value)
        return out

    def scan(self, value: str, counter: list[int]) -> str:  # noqa: C901, PLR0912 - hot (bench/)
        """Return ``value`` with credential-shaped substrings replaced, not remembering it.

        For a text that will not come again (a message formatted from its
        arguments), where remembering it would only cost time: :meth:`text`
        otherwise.

        Args:
            value: Any string.
            counter: A one-item list; its item is increased per replacement.

        Returns:
            The redacted string (``value`` itself when nothing matched).

        """
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
        if "." in value:
            mask |= 128
        if "," in value:
            mask |= 256
        # What the keywords are tested in: the text, or for a long one the
        # set of keywords it holds, found at once; once a rule changed the
        # text, the new text.
        probe: str | frozenset[str] = out
        if len(value) > ONE_PASS_LENGTH and mask:
            probe = self._keywords.present(value)
        for gates, rules in self._plans[mask]:
            for gate in gates:
                if gate in probe:
                    for literals, rule in rules:
                        for literal in literals:
                            if literal in probe:
                                out, found = rule(out)
                                counter[0] += found
                                if out is not value:
                                    probe = out
                                break
                    break
        for pattern in self._user:
            out, found = pattern.subn(REDACTED, out)
            counter[0] += found
        if out is value or out == value:
            return value
        return out

    def digits_stay_clean(self, template: str) -> bool:
        """Return whether ``template % ints`` is clean for any non-negative ints.

        True when the template holds none of the gates' characters but "."
        and "," (``DIGIT_SAFE_KEYS``) and none of the literals of the rules
        gated by those two (``DIGIT_SAFE_LITERALS``), each conversion is one
        that writes an int as decimal digits (``%d``, ``%i``, ``%u``, ``%s``,
        ``%r``) and no pattern of the user's could match digits: the
        formatted text then holds no gate a rule could match from, so
        :meth:`scan` would find nothing. The handler skips the scan
        of ``"processing step %d" % (12,)`` this way (docs/performance.md). The
        answer is remembered in ``digit_templates``.

        Args:
            template: A ``logging`` message template.

        Returns:
            Whether formatting it with non-negative ints gives a clean text.
        """
        if len(template) > CLEAN_CACHE_LENGTH:
            return False  # not remembered: the cache holds short texts only
        stays = (
            not self._user
            and not any(key in template for key in DIGIT_SAFE_KEYS)
            and not any(literal in template for literal in DIGIT_SAFE_LITERALS)
            and all(conversion in "diusr%" for conversion in _CONVERSION.findall(template))
        )
        cache = self.digit_templates
        if len(cache) >= CLEAN_CACHE_SIZE:
            cache.clear()
        cache[template] = stays
        return stays

    def _assignments(self, value: str) -> tuple[str, int]:
        return redact_assignments(
            value, self.secret_keys.__getitem__, self._hinted, self._json_keys
        )

    def _flags(self, value: str) -> tuple[str, int]:
        return redact_flags(value, self.secret_keys.__getitem__)

    def _argv_lists(self, value: str) -> tuple[str, int]:
        return redact_argv_lists(value, self._argv_rules)

    def _encoded_urls(self, value: str) -> tuple[str, int]:
        return redact_encoded_urls(value, self._decoded_url)

    def _decoded_url(self, value: str) -> tuple[str, int]:
        out, found = redact_url_passwords(value)
        out, more = self._assignments(out)
        return out, found + more

    def template_args(self, args: Mapping[Any, Any], counter: list[int]) -> Mapping[Any, Any]:
        """Return the dict a ``%(name)s`` template is filled from, its secret names' values hidden.

        The text it gives is scanned as any message; this catches a secret
        whose name is only in the dict (``"login %(user)s with %(pw)s"``).

        Args:
            args: The record's ``args`` mapping.
            counter: A one-item list counting the replacements.

        Returns:
            ``args`` itself when no name is secret, else a copy.
        """
        keys = self.secret_keys
        if not any(keys[key] for key in args):
            return args
        return {key: self.keyed(keys[key], value, counter) for key, value in args.items()}

    def keyed(
        self, level: int, value: Any, counter: list[int], _seen: frozenset[int] = frozenset()
    ) -> Any:
        """Return ``value`` as written under a key of secrecy ``level`` (see ``secret_keys``).

        Under a strong name every value is replaced but a placeholder (``None``,
        a bool, ``"none"``, ``"${VAR}"``...); under a weak one a string only
        if it looks random (names.py), other values are scanned as usual.

        Args:
            level: ``secret_keys[key]``.
            value: The value, JSON data.
            counter: A one-item list counting the replacements.

        Returns:
            The value to write.
        """
        if level == NOT_SECRET or value is None or value.__class__ is bool:
            return self.value(value, counter, _seen)
        if value.__class__ is str:
            if plainly_not_secret(value, level):
                return self.text(value, counter)
        elif level < STRONG:
            return self.value(value, counter, _seen)
        counter[0] += 1
        return REDACTED

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
            return self._sequence(value, counter, seen)
        return value

    def _sequence(
        self, value: list[Any] | tuple[Any, ...], counter: list[int], seen: frozenset[int]
    ) -> list[Any]:
        # A list or tuple's items: [name, value] pairs by name, and an argv
        # list's item after a secret flag ("--password") as that flag's value.
        if _holds_pem_lines(value):
            value = _pem_lines_redacted(value, counter)
        out: list[Any] = []
        text = self.text
        flag_level = NOT_SECRET  # the item before was "--password" (an argv list)
        dashed = False  # an item is a flag ("-p", "--user"): maybe an argv list
        mixed = False  # an item is not a string: not an argv list
        for item in value:
            if item.__class__ is str:  # most items: straight to text
                if item[:1] == "-":
                    dashed = True
                    if item[:2] == "--":
                        # A flag after "--password" is a flag, not its value
                        # ("--password --host db").
                        flag_level = self._flag_level(item)
                        out.append(text(item, counter))
                        continue
                if flag_level:
                    out.append(self.keyed(flag_level, item, counter, seen))
                    flag_level = NOT_SECRET
                    continue
                out.append(text(item, counter))
                continue
            flag_level = NOT_SECRET
            mixed = True
            if (
                isinstance(item, list | tuple)
                and len(item) == 2  # a (name, value) pair
                and isinstance(item[0], str)
                and self.secret_keys[item[0]]
            ):
                out.append(
                    [
                        self.text(item[0], counter),
                        self.keyed(self.secret_keys[item[0]], item[1], counter, seen),
                    ]
                )
            else:
                out.append(self.value(item, counter, seen))
        if dashed and not mixed:  # an argv list: ["mysql", "-pX"] is "mysql -pX"
            out, found = redact_argv(out, self._argv_rules)
            counter[0] += found
        return out

    def _flag_level(self, item: str) -> int:
        # The secrecy of the name in an argv item "--password" (NOT_SECRET for
        # any other flag): the item after it is its value.
        flag = _ARGV_FLAG.fullmatch(item)
        return NOT_SECRET if flag is None else self.secret_keys[flag.group(1)]

    def _named_level(self, value: Mapping[Any, Any]) -> int:
        # How secret the name a mapping gives its "value" is: "DB_PASSWORD",
        # or a parameter path's last part ("/prod/db/password").
        for field in _NAME_FIELDS:
            name = value.get(field)
            if name.__class__ is str and len(name) <= 128:
                # Names are data here: judged, not remembered among the keys.
                name = name.rpartition("/")[2]
                known = self.secret_keys.get(name)
                return self.secret_keys.judge(name) if known is None else known
        return NOT_SECRET

    def mapping(
        self, value: Mapping[Any, Any], counter: list[int], _seen: frozenset[int] = frozenset()
    ) -> dict[Any, Any]:
        """Return a redacted copy of a mapping; its keys are scanned too.

        A key holding a secret is replaced by its redacted text; should that
        collide with another key, ``#2``, ``#3``... is appended. The next
        number to try is remembered per redacted text, so ``n`` keys that
        redact alike cost ``O(n)``, not one probe per earlier key.

        Args:
            value: The mapping.
            counter: A one-item list counting the replacements.

        Returns:
            A new dict.

        """
        out: dict[Any, Any] = {}
        clean = self.clean  # most keys were seen before: skip the call
        # {"name": "DB_PASSWORD", "value": "x"} (a container's environment,
        # a parameter store's answer, a tag): the value is the name's.
        paired = "value" if "value" in value else "Value" if "Value" in value else None
        if paired is not None:
            paired_level = self._named_level(value)
            if not paired_level:
                paired = None
        suffixes: dict[str, int] | None = None  # the next #n to try, per redacted text
        for key, item in value.items():
            name = key
            if key.__class__ is str and key not in clean:
                name = self.text(key, counter)
                if name is not key:
                    if suffixes is None:
                        suffixes = {}
                    name = _unique(name, out, value, suffixes)
            level = self.secret_keys[key]
            if paired is not None and key == paired:
                level = max(level, paired_level)
            if level:
                out[name] = self.keyed(level, item, counter, _seen)
            else:
                out[name] = self.value(item, counter, _seen)
        return out


#: The keys of a mapping that names its own value ({"name": ..., "value": ...}),
#: beside "value" or "Value".
_NAME_FIELDS: Final = ("name", "Name", "key", "Key")


def _bind(pattern: re.Pattern[str], template: str) -> Callable[[str], tuple[str, int]]:
    def rule(value: str) -> tuple[str, int]:
        return pattern.subn(template, value)

    return rule


class _Plans(dict[int, list[tuple[tuple[str, ...], list[tuple[tuple[str, ...], Rule]]]]]):
    """``plans[mask]``: the gate groups to test for texts holding the key characters of ``mask``."""

    __slots__ = ("_groups",)

    def __init__(
        self, groups: list[tuple[tuple[str, ...], list[tuple[tuple[str, ...], Rule]]]]
    ) -> None:
        super().__init__()
        self._groups = groups

    def __missing__(
        self, mask: int
    ) -> list[tuple[tuple[str, ...], list[tuple[tuple[str, ...], Rule]]]]:
        plan = [
            (allowed, found)
            for gates, found in self._groups
            if (allowed := tuple(g for g in gates if mask & GATE_BITS[g]))
        ]
        self[mask] = plan
        return plan


class _Keywords:
    """The keywords a long text holds, found in a few fast passes instead of one a keyword.

    Each keyword of more than one character is looked for by its rarest
    character (see ``_COMMON``), its anchor. Per anchor the text holds (a
    one-character test, at memory speed), one expression finds, in C, the
    places where the anchor is part of one of its keywords
    (``k(?:-(?<=sk-)|_test_(?<=k_test_))``); there every keyword of that
    anchor is compared in place, so none is missed where two share a place.
    One-character keywords are tested as substrings. :meth:`present`
    answers exactly what testing each keyword with ``in`` answers.
    """

    __slots__ = ("_anchors", "_chars", "_words", "stops")

    def __init__(self, words: set[str]) -> None:
        self._chars = tuple(sorted(word for word in words if len(word) == 1))
        self._words = tuple(sorted(word for word in words if len(word) > 1))
        by_anchor: dict[str, list[tuple[str, int]]] = {}
        for word in self._words:
            at = max(range(len(word)), key=lambda i: _rarity(word, i))
            by_anchor.setdefault(word[at], []).append((word, at))
        #: Each anchor, the search for its keywords, and each keyword with its anchor's offset.
        self._anchors = tuple(
            (
                anchor,
                re.compile(
                    re.escape(anchor)
                    + "(?:"
                    + "|".join(
                        f"{re.escape(word[at + 1 :])}(?<={re.escape(word)})"
                        for word, at in words_at
                    )
                    + ")"
                ).search,
                tuple(words_at),
            )
            for anchor, words_at in sorted(by_anchor.items())
        )
        #: How many places the last :meth:`present` stopped at (tests read it).
        self.stops = 0

    def present(self, value: str) -> frozenset[str]:
        """Return the keywords that are substrings of ``value``."""
        found = {char for char in self._chars if char in value}
        stops = 0
        for anchor, search, words_at in self._anchors:
            if anchor not in value:
                continue
            at = 0
            left = _MAX_STOPS
            while (match := search(value, at)) is not None:
                place = match.start()
                for word, offset in words_at:
                    start = place - offset
                    if start >= 0 and value.startswith(word, start):
                        found.add(word)
                at = place + 1
                stops += 1
                left -= 1
                if not left:  # a keyword on every line: its others tested as substrings
                    found.update(word for word, _ in words_at if word in value)
                    break
        self.stops = stops
        return frozenset(found)


def _rarity(word: str, at: int) -> int:
    """Return how good an anchor ``word[at]`` is: rarer is better, the last character worse.

    At an anchor that ends its keyword the expression must look behind at
    every place it stops; after one, it compares the next character first.
    """
    rank = _COMMON.find(word[at]) % (len(_COMMON) + 1)  # not in _COMMON: the rarest
    return rank - 8 if at == len(word) - 1 else rank


def _bind_checked(
    pattern: re.Pattern[str], check: Callable[[str, str], bool]
) -> Callable[[str], tuple[str, int]]:
    """Return a rule replacing only the matches where ``check(match, character before)`` holds."""

    def rule(value: str) -> tuple[str, int]:
        parts: list[str] = []
        done = 0
        for match in pattern.finditer(value):
            start = match.start()
            if not check(match.group(), value[start - 1 : start]):
                continue
            keep = match.groupdict().get("keep")
            parts += (value[done:start], (keep or "") + REDACTED)
            done = match.end()
        return spliced(value, parts, done, len(parts) // 2)

    return rule


def _holds_pem_lines(items: list[Any] | tuple[Any, ...]) -> bool:
    """Return whether a list holds a private key written as a list of lines."""
    return any(
        item.__class__ is str and item.startswith("-----BEGIN") and "PRIVATE KEY" in item
        for item in items
    )


def _pem_lines_redacted(items: list[Any] | tuple[Any, ...], counter: list[int]) -> list[Any]:
    """Replace the lines from each ``-----BEGIN ... PRIVATE KEY`` to its ``-----END`` line."""
    out: list[Any] = []
    inside = False
    for item in items:
        text = item if item.__class__ is str else None
        if text is not None and text.startswith("-----BEGIN") and "PRIVATE KEY" in text:
            inside = True
            counter[0] += 1
        if inside:
            out.append(REDACTED)
            if text is not None and text.startswith("-----END"):
                inside = False
        else:
            out.append(item)
    return out


def _unique(
    name: str, out: Mapping[Any, Any], original: Mapping[Any, Any], suffixes: dict[str, int]
) -> str:
    """Return ``name``, or ``name#n`` with the first ``n`` from 2 that is free.

    ``suffixes[name]`` is where the last search for ``name`` stopped: every
    ``n`` below it is taken already, so each ``name#n`` is probed at most
    once per mapping (linear in its keys, however many redact alike).
    """
    if name not in out and name not in original:
        return name
    n = suffixes.get(name, 2)
    while f"{name}#{n}" in out or f"{name}#{n}" in original:
        n += 1
    suffixes[name] = n + 1
    return f"{name}#{n}"

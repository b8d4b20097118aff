"""``Redactor.scan`` on long texts: the keywords found in one search, the same output.

A text longer than ``ONE_PASS_LENGTH`` (the mirror's check of a joined batch)
no longer tests each rule keyword as a substring, a pass over the text each;
``_Keywords.present`` finds the ones it holds (docs/performance.md, "Redaction
cost: the rule keywords of a long text"). These tests compare it with testing
each keyword, and ``scan`` with the plain algorithm, on the corpus and on
generated texts dense with keywords and their fragments.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable

import pytest

from codex_logging._redaction import redactor as redactor_module
from codex_logging._redaction.redactor import _MAX_STOPS, ONE_PASS_LENGTH, Redactor
from codex_logging._redaction.secrets import GATE_BITS, GATE_KEYS, REDACTED
from tests.redaction_corpus import ordinary_fields, ordinary_lines, secret_cases


def _reference_scan(redactor: Redactor, value: str) -> tuple[str, int]:
    """Scan ``value`` as plainly as possible: each keyword tested in the text as it stands.

    The plan of the text's key characters, in order; a group runs when one
    of its gates is in the text, each of its rules when one of its
    literals is; then the user's patterns.
    """
    mask = 0
    for bit, key in enumerate(GATE_KEYS):
        if key in value:
            mask |= 1 << bit
    out = value
    count = 0
    for gates, rules in redactor._plans._groups:
        if not any(gate in out for gate in gates if mask & GATE_BITS[gate]):
            continue
        for literals, rule in rules:
            if any(literal in out for literal in literals):
                out, found = rule(out)
                count += found
    for pattern in redactor._user:
        out, found = pattern.subn(REDACTED, out)
        count += found
    return out, count


def _keywords(redactor: Redactor) -> list[str]:
    keywords = redactor._keywords
    return [*keywords._chars, *keywords._words]


def _corpus_texts() -> list[str]:
    texts: list[str] = list(ordinary_lines())
    texts += [json.dumps(fields, default=repr) for fields in ordinary_fields()]
    for case in secret_cases():
        if case.text is not None:
            texts.append(case.text)
        if case.fields:
            texts.append(json.dumps(case.fields, default=repr))
            texts.append(repr(case.fields))
        if case.template is not None:
            texts.append(case.template[0] % case.template[1])
    return texts


def _long_texts(texts: list[str], rng: random.Random) -> list[str]:
    """Each text padded past ONE_PASS_LENGTH with others, and batches joined as the sync does."""
    out = []
    for text in texts:
        before = "\n".join(rng.sample(texts, 8))
        after = "\n".join(rng.sample(texts, 8))
        padded = f"{before}\n{text}\n{after}"
        while len(padded) <= ONE_PASS_LENGTH:
            padded += "\n" + rng.choice(texts)
        out.append(padded)
    shuffled = texts[:]
    rng.shuffle(shuffled)
    out += ["\n".join(shuffled[i : i + 40]) for i in range(0, len(shuffled), 40)]
    return [text for text in out if len(text) > ONE_PASS_LENGTH]


def _generated(redactor: Redactor, rng: random.Random, count: int) -> list[str]:
    """Texts of keywords, their pieces, case flips and noise, run into each other."""
    words = _keywords(redactor)
    noise = " abcxyz019-_.:=,\"'/%\n@AKJ"
    texts = []
    for _ in range(count):
        parts = []
        size = rng.randrange(ONE_PASS_LENGTH - 200, 3 * ONE_PASS_LENGTH)
        while sum(map(len, parts)) < size:
            word = rng.choice(words)
            pick = rng.random()
            if pick < 0.3:
                parts.append(word)
            elif pick < 0.5:  # a piece: a prefix or suffix of a keyword
                cut = rng.randrange(1, len(word) + 1)
                parts.append(word[:cut] if rng.random() < 0.5 else word[-cut:])
            elif pick < 0.6:
                parts.append(word.swapcase())
            elif pick < 0.7:  # two keywords overlapping where they can
                other = rng.choice(words)
                shared = max(
                    (k for k in range(1, len(word)) if other.startswith(word[-k:])), default=0
                )
                parts.append(word + other[shared:])
            else:
                parts.append("".join(rng.choice(noise) for _ in range(rng.randrange(1, 12))))
        texts.append("".join(parts))
    return texts


REDACTORS: dict[str, Callable[[], Redactor]] = {
    "default": Redactor,
    "flat_json": lambda: Redactor(flat_json=True),
    "extra": lambda: Redactor(extra_keys=["sk"], extra_patterns=[r"zz\d+"]),
}


@pytest.mark.parametrize("make", REDACTORS.values(), ids=REDACTORS.keys())
class TestSameAsEachKeywordTested:
    @pytest.mark.parametrize("cap", [_MAX_STOPS, 1, 10**9])
    def test_present_is_each_keyword_in_the_text(
        self, make: Callable[[], Redactor], cap: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The keywords found in one search are those ``in`` finds, on every kind of text.

        With the stops per anchor bounded as shipped, at once (every anchor
        falls back to the substring tests), and never (the search alone).
        """
        monkeypatch.setattr(redactor_module, "_MAX_STOPS", cap)
        redactor = make()
        rng = random.Random(61)
        corpus = _corpus_texts()
        texts = corpus + _long_texts(corpus, rng) + _generated(redactor, rng, 400)
        words = _keywords(redactor)
        for text in texts:
            expected = {word for word in words if word in text}
            assert redactor._keywords.present(text) == expected, text[:200]

    def test_scan_of_long_texts(self, make: Callable[[], Redactor]) -> None:
        """Corpus texts padded past ONE_PASS_LENGTH, and generated ones: the same output and count."""
        redactor = make()
        rng = random.Random(62)
        corpus = _corpus_texts()
        texts = _long_texts(corpus, rng) + _generated(redactor, rng, 300)
        changed = 0
        for text in texts:
            counter = [0]
            out = redactor.scan(text, counter)
            assert (out, counter[0]) == _reference_scan(redactor, text), text[:200]
            changed += out != text
        assert changed > len(texts) // 4  # the rules did run, and changed texts

    def test_scan_of_short_texts(self, make: Callable[[], Redactor]) -> None:
        """Below ONE_PASS_LENGTH the keywords are tested as before: the same output."""
        redactor = make()
        for text in _corpus_texts():
            counter = [0]
            assert (redactor.scan(text, counter), counter[0]) == _reference_scan(redactor, text)


def _flat_batch(lines: int) -> str:
    """A batch of flat JSON lines joined, as the mirror's sync checks it."""
    session = str(uuid.UUID(int=7))
    return "\n".join(
        json.dumps(
            {
                "ts": 1780000000.012346 + i,
                "session_id": session,
                "kind": "message",
                "level": "INFO",
                "logger": "agent.tools",
                "message": f"ran alpha on file_{i % 10}.py (step {i % 10})",
                "pid": 40000,
                "role": "tool",
                "tool": "charlie",
                "step": i % 10,
                "ms": 1.85,
            },
            separators=(",", ":"),
        )
        for i in range(lines)
    )


class _Counted(str):
    """A string counting the substring tests of more than one character made on it."""

    __slots__ = ()
    tests: list[str] = []  # noqa: RUF012 - one list, reset by the test

    def __contains__(self, sub: object) -> bool:
        if isinstance(sub, str) and len(sub) > 1:
            _Counted.tests.append(sub)
        return super().__contains__(sub)  # type: ignore[operator]


class TestOnePass:
    def test_long_text_is_not_searched_once_a_keyword(self) -> None:
        """A batch of ordinary lines: no keyword tested as a substring of the whole text.

        Before, each of some 50 keywords (``sk-``, ``ghp_``, ``AKIA``...) was,
        each a pass over the batch.
        """
        batch = _Counted(_flat_batch(2000))
        redactor = Redactor(flat_json=True)
        _Counted.tests = []
        assert redactor.scan(batch, [0]) is batch
        assert _Counted.tests == []
        assert redactor._keywords.stops == 0  # no place of the batch holds a keyword

    def test_short_text_keeps_the_substring_tests(self) -> None:
        """A short message is tested keyword by keyword, cheaper there than a search."""
        text = _Counted('{"message":"ran alpha on file_5.py (step 5)","session_id":"x-y"}')
        _Counted.tests = []
        Redactor(flat_json=True).scan(text, [0])
        assert _Counted.tests  # the plain tests, as before

    def test_keyword_dense_text_is_bounded(self) -> None:
        """A text stopping an anchor's search at every place: its keywords tested as substrings."""
        redactor = Redactor()
        text = "xsk-" * 100_000  # ("-sk-" would also stop the search for "--")
        present = redactor._keywords.present(text)
        assert redactor._keywords.stops == _MAX_STOPS  # at "k" of "sk-", then "in"
        assert present == {word for word in _keywords(redactor) if word in text}
        assert redactor.scan(text, [0]) == _reference_scan(redactor, text)[0]

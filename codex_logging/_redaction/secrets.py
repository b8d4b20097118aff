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

import base64
import functools
import re
import zlib
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import quote, unquote

from codex_logging._redaction.names import (
    JOINED_PARTS,
    NOT_SECRET,
    name_strength,
    plainly_not_secret,
)

REDACTED: Final = "[REDACTED]"
#: How far past ``scheme://user:`` a URL password is looked for.
MAX_URL_PASSWORD: Final = 256
#: How far a list or tuple given to a secret name (``password=['a', 'b']``)
#: is read for its closing bracket; unclosed by then, the line's rest goes.
MAX_BRACKETED: Final = 1024

#: Every secret name (strong or weak, see names.py) contains one of these,
#: in any case, or is two parts that join into one of JOINED_PARTS
#: (``p_w``, ``to-ken``; see SPLIT_HINTS): a text without one is not looked
#: at for assignments, and in one that has, only the assignments to such a
#: name are (see redact_assignments).
NAME_HINTS: Final = (
    "pass",
    "pw",
    "secret",
    "token",
    "key",
    "auth",
    "cookie",
    "cred",
    "session",
    "csrf",
    "sig",
    "hmac",
    "salt",
    "private",
    "jwt",
)

#: Each way of splitting a word of JOINED_PARTS in two parts, neither of
#: which holds a NAME_HINTS fragment (``("p", "w")``, ``("to", "ken")``).
SPLIT_HINTS: Final = tuple(
    (word[:i], word[i:])
    for word in sorted(JOINED_PARTS)
    for i in range(1, len(word))
    if not any(hint in word[:i] or hint in word[i:] for hint in NAME_HINTS)
)


def key_is_secret(norm: str) -> bool:
    """Return whether a normalised key name (see ``norm``) is a secret key, strong or weak."""
    return name_strength(norm) != NOT_SECRET


# Characters of the bodies below, for the look-behinds.
_B64URL = "A-Za-z0-9_-"
_ALNUM = "A-Za-z0-9"

# Each rule: its name; literals of which a string must contain at least one
# before the expression runs (the keyword prefilter); the expression. A group
# named "keep" stays readable ("Bearer [REDACTED]"). Where a rule has a check
# in CHECKS, a match is replaced only if the check passes on it. Shapes follow
# the public rules of gitleaks (github.com/gitleaks/gitleaks, MIT,
# cmd/generate/config/rules/<file>.go; notice in docs/redaction.md) where
# noted; the expressions are our own, written for linear time.
#: Between a command's words: blanks, or a backslash line continuation.
_SEP: Final = r"(?:[ \t]|\\\r?\n)+"
#: A word of the same command.
_WORD: Final = r"[^\s;&|\\]+"
_LOGIN_FLAG: Final = (
    rf"(?P<keep>(?:\b(?:docker|podman|nerdctl|buildah|skopeo|oras|helm|crane|az|oc|cf|argocd)"
    rf"(?:{_SEP}{_WORD}){{0,6}}?{_SEP}login|\bsshpass)(?:{_SEP}{_WORD}){{0,16}}?{_SEP}(?:-p|--password)"
    rf"(?:=|{_SEP})|\bredis-cli(?:{_SEP}{_WORD}){{0,16}}?{_SEP}(?:-a|--pass)(?:=|{_SEP}))"
    r"(?=[^\s-])[^\s'\"]+"
)


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
    (  # a JWT whose header was written '{ "alg"...' (base64 "eyAi..."), payload "ey" or "ew"
        "jwt_spaced",
        ("eyA",),
        rf"(?<![{_B64URL}])eyA[{_B64URL}]{{4,}}\.e[wy][{_B64URL}]{{4,}}\.[{_B64URL}]*",
    ),
    (  # openai.go, anthropic.go: sk-, sk-proj-, sk-ant-api03-...
        "openai",
        ("sk-",),
        rf"(?<![{_B64URL}])sk-[{_B64URL}]{{16,}}",
    ),
    (  # stripe.go: secret and restricted keys, live and test; webhook signing secrets
        "stripe",
        ("k_live_", "k_test_", "k_prod_", "whsec_"),
        rf"(?<![{_ALNUM}_])(?:[sr]k_(?:live|test|prod)_[{_ALNUM}]{{10,}}|whsec_[{_ALNUM}]{{24,}})",
    ),
    (  # github.go; CHECKS accepts a 36-character token glued to a word if its checksum holds
        "github",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        rf"(?:gh[pousr]_[{_ALNUM}]{{20,}}|github_pat_[{_ALNUM}_]{{20,}})",
    ),
    (  # gitlab.go: every token prefix GitLab issues, and the routable form's ".xx" tail
        "gitlab",
        ("gl",),
        (
            rf"(?<![{_B64URL}])gl(?:pat|rt|dt|ptt|cbt|ft|imt|agent|oas|soat|ffct)-"
            rf"[{_B64URL}]{{20,}}(?:\.[{_ALNUM}]{{2,}})?"
        ),
    ),
    (
        "aws",
        ("AKIA", "ASIA", "ABIA", "ACCA"),
        r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])",
    ),
    ("google", ("AIza",), rf"(?<![{_B64URL}])AIza[{_B64URL}]{{35,}}"),  # gcp.go
    (  # Google OAuth access tokens and client secrets (no gitleaks rule)
        "google_oauth",
        ("ya29.", "GOCSPX-"),
        rf"(?<![.{_B64URL}])(?:ya29\.[{_B64URL}]{{20,}}|GOCSPX-[{_B64URL}]{{24,}})",
    ),
    (  # huggingface.go: user and organisation tokens
        "huggingface",
        ("hf_", "api_org_"),
        rf"(?<![{_ALNUM}_])(?:hf|api_org)_[{_ALNUM}]{{30,}}",
    ),
    (  # sendgrid.go: SG.<22>.<43>
        "sendgrid",
        ("SG.",),
        rf"(?<![.{_B64URL}])SG\.[{_B64URL}]{{16,}}\.[{_B64URL}]{{30,}}",
    ),
    ("npm", ("npm_",), rf"(?<![{_ALNUM}_])npm_[{_ALNUM}]{{36,}}"),  # npm.go
    (  # slack.go: bot, user, app, config tokens; CHECKS wants a digit ("xoxo-party" is a word)
        "slack",
        ("xox", "xapp-"),
        rf"(?<![{_ALNUM}-])(?:xox[abposre]-[{_ALNUM}-]{{10,}}|xoxe\.xox[bp]-[{_ALNUM}-]{{10,}}|xapp-[0-9]-[{_ALNUM}-]{{10,}})",
    ),
    (  # slack.go: incoming webhooks; the path after the kind is the secret
        "slack_webhook",
        ("hooks.slack.com/",),
        r"(?P<keep>hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9+/_-]{8,}",
    ),
    (  # digitalocean.go, shopify.go, linear.go, sentry.go, grafana.go, databricks.go,
        # postman.go, age.go, hashicorp_vault.go, square.go, heroku.go, newrelic.go,
        # atlassian.go, doppler.go, flyio.go, mailgun.go, pulumi.go, pypi.go, planetscale.go
        "providers",
        (
            "_v1_",
            "shp",
            "lin_api_",
            "sntry",
            "glsa_",
            "glc_",
            "sbp_",
            "dapi",
            "PMAK-",
            "AGE-SECRET-KEY-",
            "hvs.",
            "hvb.",
            "sq0",
            "HRKU-",
            "NRAK-",
            "ATATT3",
            "dp.pt.",
            "fo1_",
            "key-",
            "pul-",
            "pypi-",
            "pscale_",
        ),
        (
            r"(?<![A-Za-z0-9_])(?:do[opr]_v1_[a-f0-9]{64}|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}"
            r"|lin_api_[A-Za-z0-9]{40}|sntry[us]_[A-Za-z0-9_=+/]{40,}|glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}"
            r"|glc_[A-Za-z0-9+/]{32,}={0,2}|sbp_[a-f0-9]{40}|dapi[a-f0-9]{32}(?:-\d)?"
            r"|PMAK-[a-f0-9]{24}-[a-f0-9]{34}|AGE-SECRET-KEY-1[0-9A-Z]{58}|hv[sb]\.[A-Za-z0-9_-]{24,}"
            r"|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}|HRKU-AA[A-Za-z0-9_-]{58}|NRAK-[A-Z0-9]{27}"
            r"|ATATT3[A-Za-z0-9_=-]{50,}|dp\.pt\.[A-Za-z0-9]{40,}|fo1_[A-Za-z0-9_-]{40,}"
            r"|key-[a-f0-9]{32}|pul-[a-f0-9]{40}|pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,}"
            r"|pscale_(?:tkn|oauth|pw)_[A-Za-z0-9_=.-]{32,64})(?![A-Za-z0-9])"
        ),
    ),
    (  # a password on a MySQL or MariaDB command line: -pSECRET, -p'SECRET' (no space)
        "mysql",
        ("mysql", "mariadb"),
        r"(?P<keep>\s-p)(?:'[^'\n]+'|\"[^\"\n]+\"|(?=[^\s'\"-])[^\s'\"]+)",
    ),
    (  # curl.go: curl -u user:password, --user user:password
        "curl_user",
        ("curl",),
        r"(?P<keep>\s(?:-u|--user)[ =]?['\"]?[^\s:'\"]{1,128}:)[^\s'\"]+",
    ),
    (  # the password flag of the command it belongs to: docker (podman, helm
        # registry, az, oc, cf...) login -p x, sshpass -p x, redis-cli -a x (its
        # -p is a port). The words between are the same command's: blanks and
        # line continuations between them, no ; & | (_LOGIN_FLAG below).
        "login_flag",
        ("login", "sshpass", "redis-cli"),
        _LOGIN_FLAG,
    ),
    (  # openssl's pass phrase arguments: -passin pass:x, -passout pass:x
        "openssl_pass",
        ("pass:",),
        r"(?P<keep>(?<![\w-])-pass(?:in|out)?[ \t]+pass:)[^\s'\"]+",
    ),
    (  # telegram.go: a bot's token, <bot id>:AA<33>, also in a URL (/bot<token>/)
        "telegram",
        (":AA",),
        r"(?<![0-9])[0-9]{8,10}:AA[A-Za-z0-9_-]{33}(?![A-Za-z0-9_-])",
    ),
    (  # .netrc: machine host login user password secret
        "netrc",
        ("login",),
        r"(?P<keep>\blogin[ \t]+\S{1,128}[ \t]+password[ \t]+)[^\s'\"]+",
    ),
)
SECRET_PATTERNS: Final = tuple(source for _, _, source in RULES)
#: The "providers" rule's keywords by the gate they follow: the rule runs
#: under the gate of each part, testing only that part's keywords.
PROVIDER_LITERALS: Final = {
    "-": ("PMAK-", "AGE-SECRET-KEY-", "sq0", "HRKU-", "NRAK-", "key-", "pul-", "pypi-"),
    "_": ("_v1_", "shp", "lin_api_", "sntry", "glsa_", "glc_", "sbp_", "fo1_", "pscale_"),
    ".": ("hvs.", "hvb.", "dp.pt."),
    "dapi": ("dapi",),
    "ATATT3": ("ATATT3",),
}
# A first, cheaper test: every match of a rule contains one of its gates, so a
# string with no gate at all (most messages) costs a dozen substring tests,
# each at memory speed. A rule may run twice ("earer" and "EARER"): harmless.
GATES: Final = (
    ("-", ("private_key", "openai", "gitlab", "slack", "providers-", "login_flag")),
    ("_", ("stripe", "github", "npm", "huggingface", "providers_")),
    (".", ("providers.",)),
    ("SG.", ("sendgrid",)),
    ("ya29.", ("google_oauth",)),
    ("GOCSPX-", ("google_oauth",)),
    (" -", ("mysql", "curl_user")),
    ("', ", ("argv_list",)),  # a list's repr: "Command '['mysql', '-pX']' returned..."
    ('", ', ("argv_list",)),  # a list as json.dumps writes it
    ("earer", ("bearer",)),
    ("EARER", ("bearer",)),
    ("asic", ("basic",)),
    ("ASIC", ("basic",)),
    ("eyJ", ("jwt",)),
    ("eyA", ("jwt_spaced",)),
    ("AKIA", ("aws",)),
    ("ASIA", ("aws",)),
    ("ABIA", ("aws",)),
    ("ACCA", ("aws",)),
    ("AIza", ("google",)),
    ("dapi", ("providersdapi",)),
    ("ATATT3", ("providersATATT3",)),
    ("hooks.slack.com/", ("slack_webhook",)),
    ("://", ("url",)),
    ("%3A", ("encoded_url",)),
    ("%3a", ("encoded_url",)),
    ("password", ("netrc",)),
    ("pass:", ("openssl_pass",)),
    (":AA", ("telegram",)),
    ("=", ("assignment",)),
    (":", ("assignment",)),
    ("', ", ("assignment",)),
    ('", ', ("assignment",)),
    ("--", ("flag",)),  # after a blank or a quote, or first: "--password x"
)  # fmt: skip
#: Each gate holds one of these characters; a text without a gate's
#: character cannot hold the gate. One-character tests (at memory speed)
#: pick the gates worth testing, in their order: a text none of whose
#: characters is here (``processing step 12``) is clean after these tests.
#: A replacement adds only ``[REDACTED]`` (no gate in it, none across its
#: brackets), so a gate absent from the text stays absent as rules run.
GATE_KEYS: Final = "-_AJa:=.,"


def _has_digit(token: str, _before: str) -> bool:
    return any(c.isdigit() for c in token)


def _openai_ok(token: str, _before: str) -> bool:
    """``sk-`` keys are random: mixed case, or not a run of kebab-case words."""
    body = token[3:]
    return any(c.isupper() for c in body) or body.count("-") < 2


def _basic_ok(token: str, _before: str) -> bool:
    """Return whether ``Basic x`` is a credential: x decodes to ``user:password``, or is no word."""
    word = token.rsplit(None, 1)[-1]
    try:
        decoded = base64.b64decode(word + "=" * (-len(word) % 4), validate=True)
    except (ValueError, TypeError):
        decoded = b""
    return b":" in decoded or not word.isalpha()


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def github_checksum_ok(token: str) -> bool:
    """Return whether a ``gh?_`` token's last six characters are the base62 CRC32 of the rest."""
    body = token[4:]
    if len(body) != 36:
        return False
    crc = zlib.crc32(body[:30].encode())
    digits = ""
    for _ in range(6):
        crc, digit = divmod(crc, 62)
        digits = _BASE62[digit] + digits
    return digits == body[30:]


def _github_ok(token: str, before: str) -> bool:
    """Return whether a token starts a word, or is glued to one (``xghp_...``) with its checksum."""
    return not (before.isalnum() or before == "_") or github_checksum_ok(token[:40])


#: Checks a match must pass to be replaced (see RULES).
CHECKS: Final[dict[str, Callable[[str, str], bool]]] = {
    "basic": _basic_ok,
    "openai": _openai_ok,
    "slack": _has_digit,
    "github": _github_ok,
}


def gate_key(gate: str) -> int:
    """Return the bit of the first key character in ``gate``."""
    for bit, key in enumerate(GATE_KEYS):
        if key in gate:
            return 1 << bit
    msg = f"gate {gate!r} holds none of {GATE_KEYS!r}"  # pragma: no cover - checked at import
    raise AssertionError(msg)  # pragma: no cover


GATE_BITS: Final = {gate: gate_key(gate) for gate, _ in GATES}
Rule = Callable[[str], tuple[str, int]]

# ``scheme://user:`` (or ``scheme://:``), not an IPv6 host (``http://[::1]:80``);
# the password after it is found by _url_password. The look-behind starts a
# scheme where a run of scheme characters starts, so each "://" is tried from
# one place.
_URL_START = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s/:@\[]*:")
# A password with spaces: two to four words, none with "/" or "@", not a port.
_SPACED_PASSWORD = re.compile(r"(?!\d+ )[^\s/@]+(?: [^\s/@]+){1,3}(?=@)")
_NETLOC_END = re.compile(r"[/?#]")
# Before the first "@": "443/path" is a port and a path, "443?x" or "?x" a
# query; "p#ss" or "p?ss" is a password holding an unencoded "#" or "?".
_NOT_PASSWORD = re.compile(r"\d*[/?#]")


# ``name=value`` (query strings, logfmt, environment, ``--flag=``, ``key =
# value`` in INI, TOML and ~/.aws/credentials, ``name => value``), ``name:
# value`` (YAML, HTTP headers), ``"name": value`` and ``"name" : value``
# (JSON, pretty or not), ``'name': value`` (a dict's repr in a message) and
# ``('name', 'value')`` (header pairs as tuples, bytes included): the value
# after it is secret when the name is (see names.py), unless it is plainly
# not a secret. The marks are found by one scan; the name is read backwards
# from the mark, as one anchored match on the reversed string, at most 64
# characters; each value is read once (see redact_assignments).
_NAME_REVERSED = re.compile(r"[A-Za-z0-9_.\-]{1,64}(?![A-Za-z0-9_.\-])")
_QUOTED_NAME_REVERSED = {q: re.compile(rf"[A-Za-z0-9_.\- ]{{1,64}}{q}") for q in "\"'"}
_QUOTED = {'"': re.compile(r'(?:[^"\\\n]|\\.)*"'), "'": re.compile(r"(?:[^'\\\n]|\\.)*'")}
_BARE_VALUE = re.compile(r"[^\s&#;,'\"}\])]+")
_LINE_END = re.compile(r"[\r\n'\"]")
#: Header names whose whole value is the secret: it runs to the line's end.
HEADER_NAMES: Final = frozenset(
    {"authorization", "proxy_authorization", "cookie", "set_cookie", "www_authenticate"}
)
#: A first word that says the secret follows it ("Authorization: Token x").
AUTH_SCHEMES: Final = frozenset(
    {"token", "bearer", "basic", "digest", "apikey", "api_key", "key", "ssws", "negotiate",
     "jwt", "oauth", "sso", "splunk", "klaviyo-api-key", "dsn", "hmac"}
)  # fmt: skip
#: ``--name value`` on a command line (``--password hunter2``).
_FLAG = re.compile(r"(?<![^\s'\"])--([A-Za-z][A-Za-z0-9_-]{0,40})[ \t]+(?=[^\s-])")


#: The characters of a mark: a run of ``=`` (pairs in it are ``==``), ``:`` or ``,``.
_MARK_CHARS = re.compile(r"=+|[:,]")
#: What may stand between a fragment of a secret name (see hinted_marks) and its
#: mark, in lower case: the rest of the name, up to 64 characters (spaces in
#: a quoted one), and up to 16 spaces or tabs; at most 80 characters.
_NAME_RUN = r"[a-z0-9_.\- \t]"
#: How far before its mark a secret name's fragment can start: 64
#: characters of name, a quote and 16 blanks.
_NAME_REACH: Final = 81
_QUOTES: Final = frozenset("'\"")
#: What opens a list or tuple given as a value.
_BRACKETS: Final = frozenset("[(")
#: What the second item of a pair may open with.
_PAIR_VALUES: Final = _QUOTES | _BRACKETS
_SINGLE_QUOTE: Final = frozenset("'")
#: ASCII upper case to lower case, one character for one.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@functools.lru_cache(maxsize=2)
def hinted_marks(json_keys: bool) -> re.Pattern[str]:
    """Compile the search for the marks an assignment to a secret name can end at.

    It runs on the text lower-cased, each character at its place. A match is a fragment of
    a secret name (NAME_HINTS, or a SPLIT_HINTS pair with separators
    between), the longest run of name characters and blanks after it (at
    most 80), an optional closing quote with blanks, and the mark characters
    there (group 2). Every mark whose name is secret is one of these:
    the characters between the fragment and the mark are such a run (see
    ``_read_name`` and ``redact_assignments``), and a longest run leads to
    one place only. Names quoted with ``"`` are skipped when ``json_keys``
    is off, so that quote is left out then. The fragments are one tree of
    alternatives (``p(?:ass|w|rivate)``...), so each place is tried once;
    each try reads at most about 100 characters: linear, and in C, with no
    Python call for a ``:`` of ordinary text.
    """
    quotes = "'\"" if json_keys else "'"
    fragments = _alternatives([*NAME_HINTS, *(f"{a} {b}" for a, b in SPLIT_HINTS)])
    return re.compile(
        # (?=(x))\1 reads x once, never giving back: a run longer than 80
        # fails at once, not after trying each shorter one.
        rf"{fragments}(?=({_NAME_RUN}{{0,80}}))\1(?!{_NAME_RUN})"
        rf"(?:[{quotes}][ \t]{{0,16}})?(=+|[:,])"
    )


def _alternatives(words: list[str]) -> str:
    """Return an expression matching any of ``words`` (a space: a run of separators)."""
    tree: dict[str, dict[str, Any]] = {}
    for word in words:
        node = tree
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}

    def branch(node: dict[str, Any]) -> str:
        if "" in node:  # a word ends here: what it goes on with matches too
            return ""
        alternatives = [
            ("[-_. ]{1,64}" if char == " " else re.escape(char)) + branch(rest)
            for char, rest in sorted(node.items())
        ]
        return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"

    return branch(tree)


def _mark(  # noqa: PLR0911 - one answer a kind
    value: str, at: int, end: int, quotes: frozenset[str]
) -> tuple[int, int, str] | None:
    """Return ``(start, end, kind)`` of the mark ``value[at:end]`` makes, if it makes one.

    ``value[at:end]`` is a whole run of ``=``, or one ``:`` or ``,``. ``eq``:
    ``=`` (not ``==``, ``!=``, ``<=``, ``>=``; ``=>`` too); ``colon``: ``:``
    before a space or a tab, or after a quote (spaces between); ``pair``:
    ``', '`` or ``", "`` (a ``b`` prefix on the second quote too, or a list or
    tuple instead of it), the quote before the comma one of ``quotes``.
    """
    char = value[at]
    if char == "=":
        if (end - at) % 2 == 0:  # "==" pairs
            return None
        at = end - 1
        if value[at - 1 : at] in {"!", "<", ">"}:
            return None
        return at, at + 2 if value[at + 1 : at + 2] == ">" else at + 1, "eq"
    if char == ":":
        start = _spaces(value, at, -1)
        if value[at + 1 : at + 2] in {" ", "\t"} or value[start - 1 : start] in {"'", '"'}:
            return start, at + 1, "colon"
        return None
    if value[at - 1 : at] in quotes:
        after = at + 1
        if value[after : after + 1] == " ":
            after += 1
        if value[after : after + 1] == "b":
            after += 1
        if value[after : after + 1] in _PAIR_VALUES:  # ('password', ['a', 'b']) too
            return at, after, "pair"
    return None


def _spaces(value: str, at: int, step: int) -> int:
    """Return ``at`` moved over up to eight spaces or tabs (``step`` 1 forwards, -1 backwards)."""
    if value[at - (step < 0) : at + (step > 0)] not in {" ", "\t"} or at - (step < 0) < 0:
        return at  # no blank: the usual case, without the loop
    for _ in range(8):
        probe = at if step > 0 else at - 1
        if value[probe : probe + 1] not in {" ", "\t"} or probe < 0:
            break
        at += step
    return at


def _read_name(value: str, reverse: str, end: int) -> tuple[str, str | None]:
    """Return the name ending at ``end`` (exclusive) and its quote, if quoted."""
    size = len(value)
    quote = value[end - 1 : end] if end > 0 else ""
    if quote in _QUOTED:
        found = _QUOTED_NAME_REVERSED[quote].match(reverse, size - end + 1)
        return ("" if found is None else found.group()[-2::-1]), quote
    found = _NAME_REVERSED.match(reverse, size - end)
    return ("" if found is None else found.group()[::-1].lstrip("-_.0123456789")), None


def _opens_pair(value: str, quote_at: int) -> bool:
    """Return whether the name quoted at ``quote_at`` opens a pair: ``('name'``, ``[b'name'``."""
    before = quote_at - 1
    if value[before : before + 1] == "b":
        before -= 1
    return before >= 0 and value[before] in "(["


def _read_value(value: str, start: int, header: bool) -> tuple[int, int, int]:
    """Return ``(start, end, read)`` of the value at ``start``; ``read`` is how far was looked at.

    Quoted (``b``-prefixed too): without its quotes; a header's: to the line's
    end; else one bare word, two after an auth scheme ("Token x").
    """
    if value[start : start + 2] in {"b'", 'b"'}:
        start += 1
    quote = value[start : start + 1]
    if quote in _QUOTED:
        closing = _QUOTED[quote].match(value, start + 1)
        if closing is not None:
            return start + 1, closing.end() - 1, closing.end()
        start += 1  # unterminated: the rest of the word after the quote
    if header:
        line_end = _LINE_END.search(value, start)
        end = line_end.start() if line_end is not None else len(value)
        return start, len(value[start:end].rstrip()) + start, end
    if quote in _BRACKETS:
        # Every item of a list or tuple: none of them has a name of its own.
        end = _bracketed(value, start)
        if value[start + 1 : end - 1].strip():
            return start, end, end
        return start, start, end  # [] or (): nothing in it
    bare = _BARE_VALUE.match(value, start)
    if bare is None:
        return start, start, start
    end = bare.end()
    if value[start:end].lower() in AUTH_SCHEMES and value[end : end + 1] == " ":
        more = _BARE_VALUE.match(value, end + 1)
        if more is not None:
            end = more.end()
    return start, end, end


def _bracketed(value: str, start: int) -> int:
    """Return where the list or tuple opening at ``start`` ends (after its closing bracket).

    Items may be quoted (a bracket inside a quote does not count) or lists
    and tuples themselves, one level deep. Anything else (not closed within
    :data:`MAX_BRACKETED` characters, deeper, an unterminated quote): the
    end of its line. One regular expression, tried once: a line of many
    such values costs each at most what it reads.
    """
    closed = _BRACKETED[value[start]].match(value, start, start + MAX_BRACKETED)
    if closed is not None:
        return closed.end()
    line_end = value.find("\n", start)
    return len(value) if line_end < 0 else line_end


def _bracket_pattern(opening: str, closing: str) -> re.Pattern[str]:
    # A quoted item (backslash escapes honoured), any other character but a
    # bracket (a newline too: pretty JSON), or a list or tuple of those.
    quoted = r"'(?:[^'\\\n]|\\.)*'" + "|" + r'"(?:[^"\\\n]|\\.)*"'
    plain = r"[^\[\]()'" + '"' + "]"
    inner = rf"\[(?:{plain}|{quoted})*\]|\((?:{plain}|{quoted})*\)"
    return re.compile(rf"\{opening}(?:{plain}|{quoted}|{inner})*\{closing}")


#: A list or tuple, by its opening bracket (see _bracketed).
_BRACKETED: Final = {"[": _bracket_pattern("[", "]"), "(": _bracket_pattern("(", ")")}


def _plain(found: str, level: int) -> bool:
    """Return whether a value read after a secret name is plainly not a secret.

    A list may hold an item an earlier rule replaced already: the rest of
    it is judged (``['[REDACTED]', 'hunter2']`` is not "already redacted").
    """
    if found[:1] in _BRACKETS:
        found = found.replace(REDACTED, "")
    return plainly_not_secret(found, level)


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


def spliced(value: str, parts: list[str], done: int, count: int) -> tuple[str, int]:
    """Return a redacting loop's answer: ``(text, count)``, or ``(value, 0)`` if nothing was found.

    Args:
        value: The text the loop read.
        parts: The text before each replacement, each followed by it.
        done: Where in ``value`` the text after the last replacement starts.
        count: The number of values replaced.

    Returns:
        ``parts`` joined with the rest of ``value``, and ``count``.
    """
    if not parts:
        return value, 0
    parts.append(value[done:])
    return "".join(parts), count


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
    return spliced(value, parts, done, len(parts) // 2)


def redact_assignments(  # noqa: C901, PLR0912 - one pass over the marks
    value: str,
    strength: Callable[[str], int],
    hinted: re.Pattern[str] | None,
    json_keys: bool = True,
) -> tuple[str, int]:
    """Replace the value of every assignment to a secret name (see ``_mark``).

    The marks are looked for from left to right, and on from the end of
    each value read (less ``_NAME_REACH`` with ``hinted``: a name may end a
    value, ``password=a salt: x``); a mark inside a value is not looked at.

    Args:
        value: Any string.
        strength: ``strength(name)``: how secret a name is (names.py).
        hinted: ``hinted_marks(json_keys)`` when the secret names are the
            built-in ones: a text holding no NAME_HINTS fragment is left as
            it is, and only the marks the search finds are looked at; None:
            every assignment is.
        json_keys: Whether to read ``"name": value`` and ``("name", ...)``
            too (False for flat JSON lines, whose keys are judged already).

    Returns:
        The text and the number of values replaced.

    """
    if hinted is None:
        search, text, group, back = _MARK_CHARS.search, value, 0, 0
    else:
        text = value.lower()
        for hint in NAME_HINTS:  # the quick check: at memory speed
            if hint in text:
                break
        else:
            return value, 0
        if len(text) != len(value):  # "İ" lowers to two characters: keep each in its place
            text = value.translate(_ASCII_LOWER)
        search, group, back = hinted.search, 2, _NAME_REACH  # the mark is group 2
    quotes = _QUOTES if json_keys else _SINGLE_QUOTE
    parts: list[str] = []
    done = 0  # the text up to here is in parts
    read = 0  # marks before here were inside a value already read
    reverse = ""
    at = 0
    while (found := search(text, at)) is not None:
        at = found.end()
        mark = _mark(value, found.start(group), found.end(group), quotes)
        if mark is None or mark[0] < read:
            continue
        mark_start, mark_end, kind = mark
        name_end = _spaces(value, mark_start, -1) if kind != "pair" else mark_start
        reverse = reverse or value[::-1]
        name, quote = _read_name(value, reverse, name_end)
        if not name or (quote == '"' and not json_keys):
            continue
        # A pair: ('name', 'value') or an argv list's '--password', 'value'.
        flag = kind == "pair" and value[name_end - len(name) - 1 : name_end - len(name)] == "-"
        if (
            kind == "pair"
            and not flag
            and (quote is None or not _opens_pair(value, name_end - len(name) - 2))
        ):
            continue
        level = strength(name)
        if not level:
            continue
        header = kind == "colon" and name.lower().replace("-", "_") in HEADER_NAMES
        start, end, value_end = _read_value(value, _spaces(value, mark_end, 1), header)
        if kind == "pair" and not flag and value[value_end : value_end + 1] not in {")", "]"}:
            continue  # not a pair after all: the marks after this one are looked at
        read = value_end
        at = max(at, read - back) if read < len(value) else len(value)
        secret = value[start:end]
        if _names_itself(value, name_end - len(name), name, secret, value_end):
            continue
        if name == "PASS" and kind == "colon" and _test_result(value, name_end - len(name)):
            continue
        if end > start and secret != REDACTED and not _plain(secret, level):
            parts += (value[done:start], REDACTED)
            done = end
    return spliced(value, parts, done, len(parts) // 2)


def _names_itself(value: str, name_start: int, name: str, found: str, end: int) -> bool:
    """Return whether an assignment is source code passing a name on.

    ``self.token = token`` (an attribute of the object code works on, set
    from the variable of its name), or ``f(password=password)`` (a keyword
    argument, between ``(`` or ``,`` and ``)`` or ``,``); not
    ``password=password`` in a line of settings, nor a property file's
    ``db.password=password``.
    """
    if "." in name:
        receiver, _, attribute = name.rpartition(".")
        return receiver in {"self", "this", "cls"} and found == attribute
    if found != name:
        return False
    before = value[:name_start].rstrip(" ")[-1:]
    return before in {"(", ","} and value[end : end + 1] in {")", ","}


#: A test runner's result line: go test's ``--- PASS: TestLogin (0.01s)``,
#: automake's ``PASS: tests/unit.test``.
_TEST_RESULT: Final = re.compile(r"(?:--- |^)PASS: \S*(?:Test|test|/)", re.MULTILINE)


def _test_result(value: str, name_start: int) -> bool:
    """Return whether the ``PASS:`` at ``name_start`` starts a test runner's result."""
    start = value.rfind("\n", 0, name_start) + 1
    found = _TEST_RESULT.match(value, max(start, name_start - 4))
    return found is not None and found.start() in {start, name_start - 4}


def redact_flags(value: str, strength: Callable[[str], int]) -> tuple[str, int]:
    """Replace the value after ``--secret-name`` on a command line (``--password x``)."""
    parts: list[str] = []
    done = 0
    read = 0  # flags before here are inside a value already read
    for flag in _FLAG.finditer(value):
        if flag.start() < read:
            continue
        level = strength(flag.group(1))
        if not level:
            continue
        start, end, read = _read_value(value, flag.end(), header=False)
        found = value[start:end]
        if end > start and found != REDACTED and not _plain(found, level):
            parts += (value[done:start], REDACTED)
            done = end
    return spliced(value, parts, done, len(parts) // 2)


#: The commands whose password flags the command-line rules know ("mysql",
#: "curl_user", "login_flag"): an argv list naming none is left to the others.
ARGV_COMMANDS: Final = ("mysql", "mariadb", "curl", "login", "sshpass", "redis-cli")
_ARGV_COMMAND = re.compile("|".join(re.escape(command) for command in ARGV_COMMANDS))
#: The rules an argv list is read with, as the command line it stands for.
ARGV_RULES: Final = ("mysql", "curl_user", "login_flag")
#: A list of strings written in a text, as Python's repr or JSON writes one
#: (items without quotes or backslashes in them): ``['mysql', '-pX']``.
_ARGV_LIST = re.compile(
    r"""\[(?:'[^'\\\n]*'|"[^"\\\n]*")(?:, ?(?:'[^'\\\n]*'|"[^"\\\n]*")){1,255}\]"""
)
_ARGV_ITEM = re.compile(r"'([^'\\\n]*)'|\"([^\"\\\n]*)\"")


def redact_argv(items: list[str], rules: list[Rule]) -> tuple[list[str], int]:
    """Read a list of strings as the command line it stands for; return its items redacted.

    ``["mysql", "-pX"]`` is ``mysql -pX``: the command-line rules (``rules``)
    find its password, and each item is given back in its place. An item's
    own spaces (``"SELECT 1"``, ``"Accept: */*"``) stand as NUL meanwhile, so
    it stays one word; a list naming none of ARGV_COMMANDS, or holding a NUL,
    is given back as it is.
    """
    joined = " ".join(items)
    if _ARGV_COMMAND.search(joined) is None:
        return items, 0
    spaced = joined.count(" ") != len(items) - 1
    if spaced:
        if "\0" in joined:
            return items, 0
        joined = " ".join(item.replace(" ", "\0") for item in items)
    out, count = joined, 0
    for rule in rules:
        out, found = rule(out)
        count += found
    parts = out.split(" ")
    if not count or len(parts) != len(items):
        return items, 0
    if spaced:
        parts = [part.replace("\0", " ") for part in parts]
    return parts, count


def redact_argv_lists(value: str, rules: list[Rule]) -> tuple[str, int]:
    """Redact each list of strings in ``value`` (a repr, JSON) as :func:`redact_argv` does."""
    parts: list[str] = []
    done = 0
    count = 0
    for match in _ARGV_LIST.finditer(value):
        # Each item's quote group: 1 for '...', 2 for "...".
        items = [
            (m, 1 if m.group(1) is not None else 2) for m in _ARGV_ITEM.finditer(match.group())
        ]
        redacted, found = redact_argv([m.group(group) for m, group in items], rules)
        if not found:
            continue
        at = match.start()
        for (item, group), new in zip(items, redacted, strict=True):
            parts += (value[done : at + item.start(group)], new)
            done = at + item.end(group)
        count += found
    return spliced(value, parts, done, count)


# A URL percent-encoded as a whole (a redirect parameter): decoded, redacted
# by the URL and assignment rules, and encoded again if anything was found.
_ENCODED_URL = re.compile(
    r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}%3[Aa]%2[Ff]%2[Ff][^\s&\"'<>]*"
)


def redact_encoded_urls(value: str, inner: Callable[[str], tuple[str, int]]) -> tuple[str, int]:
    """Redact each percent-encoded URL in ``value`` as ``inner`` redacts its decoded text."""
    parts: list[str] = []
    done = 0
    count = 0
    for match in _ENCODED_URL.finditer(value):
        decoded = unquote(match.group())
        redacted, found = inner(decoded)
        if found:
            parts += (value[done : match.start()], quote(redacted, safe="[]"))
            done = match.end()
            count += found
    return spliced(value, parts, done, count)

"""Key names judged as a whole, and values that are plainly not secrets.

A name is *strong* (every value under it is secret but a placeholder), *weak*
(a value under it is secret when it looks random: long enough, not one word,
not a UUID, a path, a time or a hash) or not secret. The lists follow what
the scanners learned (docs/redaction.md): detect-secrets' keyword plugin and
heuristic filters, gitleaks' generic rule and its allowlists.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Final

NOT_SECRET: Final = 0
WEAK: Final = 1
STRONG: Final = 2
#: Strong, but an absolute path is the working directory, not a secret: the
#: shell's ``PWD`` in an environment dump (``PWD=/home/runner/work``).
WORKING_DIR: Final = 3

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[\s\-.]+|_{2,}")


def norm(key: str) -> str:
    """Normalise a key name: camelCase to snake, lower case, separators to ``_``."""
    key = _CAMEL.sub("_", key.strip())
    return _SEPARATORS.sub("_", key.lower()).strip("_")


#: Whole normalised names that are secret.
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
        "secret_key_base",
        "mysql_pwd",
    }
)
#: A last ``_``-separated part that makes a name secret ("db_pass", "x_api_key"
#: through "key" below, "session_cookie").
SECRET_LAST_PARTS: Final = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pw",
        "pass",
        "passphrase",
        "passcode",
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
        "xsrftoken",
    }
)
#: Two last parts that make a secret name when joined ("pass_word", "api_key").
JOINED_PARTS: Final = SECRET_LAST_PARTS | {"apikey", "authtoken", "accesstoken"}
#: Joined words (environment names, lower-cased camel case without a break):
#: a last part ending in one of these is secret ("authtoken", "dbpassword")
#: unless what comes before it says otherwise ("nextpagetoken").
JOINED_SUFFIXES: Final = ("password", "passwd", "passphrase", "passcode", "secret", "token")
#: What before ``key`` makes it a secret key ("api_key", "accountkey"); any
#: other word before ``key`` gives a weak name, and those in KEY_NOT_SECRET none.
KEY_QUALIFIERS: Final = frozenset(
    {
        "api", "secret", "private", "access", "signing", "sign", "encryption", "encrypt",
        "decryption", "master", "client", "service", "account", "auth", "app", "license",
        "licence", "webhook", "session", "shared", "sharedaccess", "consumer", "admin",
        "root", "deploy", "ssh", "pgp", "gpg", "hmac", "jwt", "crypto",
        "subscription", "rest", "live", "write", "sas", "stripe", "openai", "anthropic",
        "aws", "gcp", "azure", "google", "github", "gitlab", "slack", "sendgrid", "twilio",
        "mailgun", "mapbox", "algolia", "sentry", "datadog", "dd", "x_api", "aes", "kms",
        "cipher", "smtp", "mail", "push", "fcm",
    }
)  # fmt: skip
# Not among them: words that name a store's own keys as often as its secret
# (db, database, redis, storage, server: "redis_key=rl:ip:10.0.0.1",
# "storage_key=uploads/a.png"). Such a name is weak: a random-looking value
# (an Azure storage key, a Firebase server key) still goes.
KEY_NOT_SECRET: Final = frozenset(
    {
        "cache", "sort", "routing", "route", "partition", "primary", "foreign",
        "idempotency", "idempotence", "idem", "object", "public", "pub", "bucket", "hot",
        "idx", "index", "natural", "schema", "sequence", "dedup", "dedupe", "lock", "row",
        "hash", "range", "shard", "sharding", "group", "unique", "composite", "search",
        "lookup", "map", "cluster", "message", "event", "join", "field", "column", "table",
        "config", "registry", "translation", "i18n", "locale", "label", "metric", "job",
        "task", "queue", "topic", "entity", "record", "item", "node", "file", "s3", "dict",
        "json", "order", "surrogate", "business", "candidate", "compound", "alternate",
        "alt", "parent", "child", "legacy", "lru", "kv", "request", "correlation", "trace",
        "tenant", "user", "customer", "meta", "metadata", "state", "list", "dom", "keyboard",
        "hotkey", "shortcut", "press", "next", "prev", "previous", "last", "first", "start",
        "end", "min", "max", "cursor", "tag", "feature", "flag",
        "experiment", "variant", "rate", "ratelimit", "limit", "throttle", "prefix",
        "path", "image", "asset", "upload", "blob", "storage_object",
    }
)  # fmt: skip
#: What before ``token`` (or a joined "...token") makes it a count, a cursor or
#: a public value, not a secret ("page_token", "max_tokens" is not a token).
TOKEN_NOT_SECRET: Final = frozenset(
    {
        "page", "nextpage", "next_page", "next", "continuation", "pagination", "cursor",
        "sync", "resume", "public", "max", "num", "total", "input", "output", "prompt",
        "completion", "cached", "reasoning", "start", "end", "stop", "eos", "bos", "pad",
        "unk", "special", "cls", "sep", "mask", "prev", "previous", "last", "first",
        "marker", "more", "nextpagetoken", "continue", "scroll",
    }
)  # fmt: skip
#: A last part that names something about a secret, not the secret
#: ("password_length", "secret_name", "auth_method", "token_count").
REFERENCE_PARTS: Final = frozenset(
    {
        "id", "ids", "name", "names", "path", "file", "filename", "arn", "type", "length",
        "len", "size", "count", "method", "mode", "provider", "version", "ref", "alias",
        "kind", "format", "algorithm", "alg", "expiry", "expires", "expiration", "ttl",
        "created", "updated", "at", "uri", "endpoint", "prefix", "suffix", "hint", "policy",
        "scope", "scopes", "source", "env", "enabled", "required", "set", "status", "label",
        "rotation", "field", "url", "used", "remaining", "limit", "usage", "header",
        "location", "dir", "directory", "strength", "reset", "changed", "set_at", "manager",
        "store", "vault", "backend", "issuer", "audience", "lifetime", "timeout",
        "fingerprint", "info", "error", "errors", "valid", "invalid", "missing", "service",
        "file_path", "var", "variable", "option", "options", "flag", "style", "stdin",
    }
)  # fmt: skip
#: Plural last parts judged as their singular: a list or dict of passwords
#: is secret as one is. Not "tokens", a count (``generated_tokens: 512``);
#: "keys" only after a word that makes a key secret (``api_keys``, not
#: PyTorch's ``missing_keys``).
PLURALS: Final = {
    "passwords": "password",
    "passwds": "passwd",
    "passphrases": "passphrase",
    "passcodes": "passcode",
    "apikeys": "apikey",
}
#: Parts that make a name weak when nothing above decided it.
WEAK_PARTS: Final = frozenset(
    {"key", "sig", "signature", "hmac", "salt", "private", "apikey", "secret", "secrets",
     "token", "credential", "passwd", "password", "auth", "jwt"}
)  # fmt: skip


def name_strength(norm: str) -> int:  # noqa: C901, PLR0911, PLR0912 - one decision, read top down
    """Return how secret a normalised key name is: NOT_SECRET, WEAK, STRONG or WORKING_DIR."""
    if norm in SECRET_NAMES:
        return STRONG
    if norm == "pwd":
        return WORKING_DIR
    parts = norm.split("_")
    while len(parts) > 1 and parts[-1].isdigit():  # "api_key_2"
        parts.pop()
    last = parts[-1].rstrip("0123456789") or parts[-1]
    last = PLURALS.get(last, last)  # "passwords" ("tokens" is a count)
    head = parts[-2] if len(parts) > 1 else ""
    if last == "keys" and head in KEY_QUALIFIERS:  # "api_keys"; not "missing_keys"
        last = "key"
    if last in REFERENCE_PARTS:
        return NOT_SECRET
    if last == "token":
        if head in TOKEN_NOT_SECRET or "_".join(parts[-3:-1]) in TOKEN_NOT_SECRET:
            return NOT_SECRET
        return STRONG
    if last == "key":
        if not head:
            return NOT_SECRET  # "key" alone: a cache key, an object key
        if head in KEY_NOT_SECRET:
            return NOT_SECRET
        if head in KEY_QUALIFIERS or "secret" in parts or "private" in parts:
            return STRONG
        return WEAK
    if last in SECRET_LAST_PARTS:
        return STRONG
    if head and head + last in JOINED_PARTS:
        return STRONG  # "pass_phrase", "pass_word", "api_key"
    for suffix in JOINED_SUFFIXES:
        if last.endswith(suffix) and len(last) > len(suffix):
            before = last[: -len(suffix)]
            if before in TOKEN_NOT_SECRET or before.startswith(("max", "num", "total")):
                return NOT_SECRET
            return STRONG  # "authtoken", "dbpassword", "clientsecret"
    if last.endswith("key") and last[:-3] in KEY_QUALIFIERS:
        return STRONG  # "apikey", "accountkey", "sharedaccesskey"
    if ("secret" in parts or "private" in parts) and "key" in parts:
        return STRONG  # "secret_key_base", "private_key_pem"
    if any(part in WEAK_PARTS for part in parts):
        return WEAK
    return NOT_SECRET


#: Values that stand for no secret under any name.
PLACEHOLDERS: Final = frozenset(
    {
        "", "none", "null", "nil", "true", "false", "undefined", "n/a", "na", "-", "?",
        "redacted", "<redacted>", "(redacted)", "hidden", "masked", "unset", "empty",
        "not set", "notset", "%s", "%r", "%d", "required", "optional", "*",
        # A permission, as GitHub Actions prints a token's ("IdToken: write").
        "read", "write", "read-all", "write-all",
    }
)  # fmt: skip
_MASKED = re.compile(r"[*xX•#.]{3,}")
_TEMPLATED = re.compile(
    r"\$\{\{.*\}\}|\$\{[^}]*\}?|\{\{.*\}\}|<[^<>]*>|%\([^)]*\)[sdr]|\$[A-Z_][A-Z0-9_]*|:[a-z_]+"
)
#: Source code's names for a value, not a value (a listing an agent read):
#: an attribute of the object the code works on (``self.token``,
#: ``config.api_key``; not ``Welcome.Pass1``, which may be a password), an
#: environment read (``process.env.DB_PASSWORD``, ``os.environ["API_KEY"]``),
#: a type (``password: str``).
_IDENTIFIER = re.compile(
    r"(?:self|this|cls|config|cfg|conf|settings|options|opts|args|params|ctx|env)"
    r"(?:\.[A-Za-z_]\w*)*\.([A-Za-z_]\w*)",
    re.ASCII,
)
_ENVIRONMENT_READ = re.compile(
    r"(?:os\.environ(?:\.get)?|os\.getenv|process\.env|System\.getenv|ENV)(?:[\[.(].*)?"
)
_TYPE_NAMES: Final = frozenset(
    {"str", "bytes", "string", "secretstr", "secretbytes", "optional[str", "str | none"}
)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
)
_HEX_HASH = re.compile(r"(?:[0-9a-f]{7,12}|[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64})")
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*%?")
#: Words in any script, between blanks and punctuation ("Dr. Smith", "Jane
#: Doe, CFO", "José Martínez").
_WORDS = re.compile(r"[^\W\d_]+(?:[ _.:/,;'&()-]+[^\W\d_]+)*[.!?)]*")
_ABSOLUTE_PATH = re.compile(r"(?:/[\w.@%+~-]+)+/?")
_PATH = re.compile(r"(?:~|\.{1,2})?/[\w.@%+~-]*(?:/[\w.@%+~-]*)*|[\w.-]+/[\w./-]+\.\w{1,5}")
#: Entropy a weak name's value needs (bits a character, as gitleaks' generic rule).
WEAK_ENTROPY: Final = 3.0
WEAK_MIN_LENGTH: Final = 8


def entropy(text: str) -> float:
    """Return the Shannon entropy of ``text`` in bits per character."""
    size = len(text)
    if not size:
        return 0.0
    return -sum(n / size * math.log2(n / size) for n in Counter(text).values())


def plainly_not_secret(value: str, strength: int) -> bool:
    """Return whether ``value`` under a name of ``strength`` is plainly not a secret.

    Under any name: a placeholder (``none``, ``null``, ``***``, ``${VAR}``,
    ``${{ secrets.X }}``, ``%(x)s``, ``<password>``, ``write``), source code
    naming a value (``self.token``, ``process.env.DB_PASSWORD``, ``str``);
    under ``PWD`` an absolute path. Under a weak name also: anything short, one
    word or words, a number, a UUID, a path, an ISO time, a hex hash, or text
    of low entropy.
    """
    text = value.strip()
    lower = text.lower()
    if "[REDACTED]" in text and text != "[REDACTED]":
        return True  # replaced inside already ("Bearer [REDACTED]")
    if lower in PLACEHOLDERS or _MASKED.fullmatch(text) or _TEMPLATED.fullmatch(text):
        return True
    if lower in _TYPE_NAMES or _ENVIRONMENT_READ.fullmatch(text):
        return True
    identifier = _IDENTIFIER.fullmatch(text)
    # A variable named as a secret is its name, not its value.
    if identifier is not None and name_strength(norm(identifier.group(1))) != NOT_SECRET:
        return True
    if strength >= STRONG:
        return strength == WORKING_DIR and _ABSOLUTE_PATH.fullmatch(text) is not None
    return bool(
        len(text) < WEAK_MIN_LENGTH
        or _WORDS.fullmatch(text)
        or _NUMBER.fullmatch(text)
        or _UUID.fullmatch(text)
        or _ISO_TIME.fullmatch(text)
        or _HEX_HASH.fullmatch(text)
        or _PATH.fullmatch(text)
        or entropy(text) < WEAK_ENTROPY
    )

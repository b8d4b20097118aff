"""Two corpora for redaction: secrets in the shapes real logs hold, and ordinary lines.

Every secret is fake and built at run time from parts and a seeded random
source, so no scanner flags this repository. ``tests/test_redaction_corpus.py``
runs both through the handler and the processor; ``bench/bench_redact_corpus.py``
prints our rates beside detect-secrets' (docs/redaction.md).
"""

from __future__ import annotations

import base64
import json
import random
import string
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

_RNG = random.Random(20261206)
_ALNUM = string.ascii_letters + string.digits
_B64URL = _ALNUM + "_-"
_HEX = "0123456789abcdef"
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def _r(alphabet: str, n: int) -> str:
    return "".join(_RNG.choice(alphabet) for _ in range(n))


def _mixed(n: int) -> str:
    """A random token with upper, lower and digits (as real keys are)."""
    while True:
        token = _r(_ALNUM, n)
        if (
            any(c.isupper() for c in token)
            and any(c.islower() for c in token)
            and any(c.isdigit() for c in token)
        ):
            return token


def _github(kind: str) -> str:
    body = _r(_ALNUM, 30)
    crc = zlib.crc32(body.encode())
    digits = ""
    for _ in range(6):
        crc, d = divmod(crc, 62)
        digits = _BASE62[d] + digits
    return "gh" + kind + "_" + body + digits


def _jwt(spaced: bool = False) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b'{ "alg": "HS256", "typ": "JWT" }' if spaced else b'{"alg":"HS256","typ":"JWT"}'
    payload = json.dumps({"sub": _r(string.digits, 10), "name": "Bob", "iat": 1700000000}).encode()
    return f"{b64(header)}.{b64(payload)}.{b64(_RNG.randbytes(32))}"


def _pem() -> list[str]:
    body = base64.b64encode(_RNG.randbytes(180)).decode()
    return [
        "-----BEGIN RSA " + "PRIVATE KEY-----",
        *(body[i : i + 64] for i in range(0, len(body), 64)),
        "-----END RSA " + "PRIVATE KEY-----",
    ]


@dataclass(frozen=True)
class Case:
    """One secret: how it is logged, and the text that must not reach disk."""

    family: str
    secret: str
    text: str | None = None  # logged as the message
    fields: dict[str, Any] = field(default_factory=dict)  # logged as extra fields
    template: tuple[str, dict[str, Any]] | None = None  # handler: msg % dict


def secret_cases() -> list[Case]:
    """Return the secret corpus (fresh fakes on each call, same seed)."""
    _RNG.seed(20261206)
    cases: list[Case] = []

    def text(family: str, secret: str, line: str) -> None:
        cases.append(Case(family, secret, text=line))

    # Provider tokens in free text.
    for _ in range(3):
        s = "sk-" + _mixed(48)
        text("provider", s, f"openai client configured with key {s}")
    s = "sk-proj-" + _r(_B64URL, 56) + "T3Blbk" + "FJ" + _r(_B64URL, 56)
    text("provider", s, f"OPENAI key rotated: {s}")
    s = "sk-ant-api03-" + _r(_B64URL, 93) + "AA"
    text("provider", s, f"anthropic({s!r})")
    for kind in "pousr":
        s = _github(kind)
        text("provider", s, f"git push using {s} for org/repo")
    s = _github("p")
    text("provider", s, f"token{s}")  # glued to a word: the checksum tells
    s = "github_pat_" + _r(_ALNUM, 22) + "_" + _r(_ALNUM, 59)
    text("provider", s, f"export GH={s}")
    for prefix in ("glpat-", "glrt-", "gldt-", "glptt-", "gloas-", "glft-"):
        s = prefix + _r(_B64URL if prefix != "glptt-" else _HEX, 20 if prefix != "glptt-" else 40)
        text("provider", s, f"gitlab runner registered with {s}")
    for prefix in ("sk_live_", "rk_live_", "sk_test_"):
        s = prefix + _mixed(24)
        text("provider", s, f"stripe.api_key set to {s} for tenant 7")
    s = "whsec_" + _mixed(32)
    text("provider", s, f"verifying webhook signature with {s}")
    for prefix in ("AKIA", "ASIA"):
        s = prefix + _r(string.ascii_uppercase + "234567", 16)
        text("provider", s, f"botocore.credentials: found credentials {s} in environment")
    s = "AIza" + _r(_B64URL, 35)
    text(
        "provider",
        s,
        f"maps request https://maps.googleapis.com/maps/api/geocode/json?address=x&key={s}",
    )
    s = "ya29." + _r(_B64URL, 120)
    text("provider", s, f"google.auth refreshed access token {s} expires in 3599s")
    s = "ya29." + _r(_B64URL, 80)
    text("provider", s, f'{{"access_token":"{s}","expires_in":3599,"token_type":"Bearer"}}')
    s = "GOCSPX-" + _r(_B64URL, 28)
    text("provider", s, f"oauth client 1234-abc.apps.googleusercontent.com secret {s}")
    s = "hf_" + _r(string.ascii_letters, 34)
    text("provider", s, f"huggingface_hub login with {s}")
    s = "SG." + _r(_B64URL, 22) + "." + _r(_B64URL, 43)
    text("provider", s, f"sendgrid client init {s}")
    s = "npm_" + _r(_ALNUM, 36)
    text("provider", s, f"//registry.npmjs.org/:_authToken={s}")
    s = "xoxb-" + _r(string.digits, 12) + "-" + _r(string.digits, 13) + "-" + _r(_ALNUM, 24)
    text("provider", s, f"slack bolt app started with {s}")
    s = "xoxp-" + "-".join(_r(string.digits, 12) for _ in range(3)) + "-" + _r(_HEX, 32)
    text("provider", s, f"SLACK user token {s}")
    s = (
        "xapp-1-A"
        + _r(string.digits + string.ascii_uppercase, 10)
        + "-"
        + _r(string.digits, 13)
        + "-"
        + _r(_HEX, 64)
    )
    text("provider", s, f"socket mode {s}")
    s = (
        "T0"
        + _r(string.ascii_uppercase, 7)
        + "/B0"
        + _r(string.ascii_uppercase, 7)
        + "/"
        + _r(_ALNUM, 24)
    )
    text("provider", s, f"POST https://hooks.slack.com/services/{s}")
    sig = quote(base64.b64encode(_RNG.randbytes(32)).decode(), safe="")
    text(
        "provider",
        sig,
        f"GET https://acct.blob.core.windows.net/c/f.csv?sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-01-01T00:00:00Z&spr=https&sig={sig}",
    )
    s = base64.b64encode(_RNG.randbytes(64)).decode()
    text(
        "provider",
        s,
        f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={s};EndpointSuffix=core.windows.net",
    )
    s = _jwt()
    text("provider", s.rsplit(".", 1)[1], f"session established jwt={s}")
    s = _jwt()
    text("provider", s.rsplit(".", 1)[1], f"decoded claims for {s}")
    s = _jwt(spaced=True)
    text("provider", s.rsplit(".", 1)[1], f"id token {s}")
    for s in ("dop_v1_" + _r(_HEX, 64), "shpat_" + _r(_HEX, 32), "lin_api_" + _r(_ALNUM, 40),
              "PMAK-" + _r(_HEX, 24) + "-" + _r(_HEX, 34), "dapi" + _r(_HEX, 32),
              "hvs." + _r(_B64URL, 90), "AGE-SECRET-KEY-1" + _r(string.ascii_uppercase + string.digits, 58),
              "sntryu_" + _r(_HEX, 64), "glsa_" + _r(_ALNUM, 32) + "_" + _r(_HEX, 8),
              "dp.pt." + _r(_ALNUM, 43), "pypi-AgEIcHlwaS5vcmc" + _r(_B64URL, 70), "key-" + _r(_HEX, 32)):  # fmt: skip
        text("provider", s, f"provider client ready ({s})")
    pem = _pem()
    text("provider", pem[1], "loaded key:\n" + "\n".join(pem))

    # Config text.
    s = _mixed(40)
    text(
        "config",
        s,
        f"[default]\naws_access_key_id = AKIA{_r(string.ascii_uppercase, 16)}\naws_secret_access_key = {s}",
    )
    for name in (
        "DB_PASSWORD",
        "password",
        "api_key",
        "SECRET_KEY",
        "client_secret",
        "REDIS_PASS",
        "smtp_password",
    ):
        s = _mixed(18)
        text("config", s, f"config loaded:\n  host: db.internal\n  {name}: {s}\n  port: 5432")
    for name in ("password", "token", "secret"):
        s = _mixed(16)
        text("config", s, f'[database]\nuser = "app"\n{name} = "{s}"')
    s = _mixed(14)
    text("config", s, f"machine api.example.com login bob password {s}")
    s = _mixed(14)
    text("config", s, f"reading ~/.netrc: machine github.com login x-access-token password {s}")
    for name in (
        "NGROK_AUTHTOKEN",
        "SECRET_KEY_BASE",
        "GITHUB_TOKEN",
        "OPENAI_APIKEY",
        "SLACK_BOTTOKEN",
        "DJANGO_SECRET",
        "MYSQL_ROOT_PASSWORD",
        "TF_VAR_db_password",
    ):
        s = _mixed(32)
        text("config", s, f"env: {name}={s} HOME=/home/app")
    s = _mixed(50)
    text("config", s, f"SECRET_KEY = '{s}'")
    s = _mixed(24)
    text("config", s, f"export AWS_SECRET_ACCESS_KEY={s}")

    # Command lines.
    s = _mixed(12)
    text("command", s, f"$ curl -u admin:{s} https://api.example.com/v1/status")
    s = _mixed(12)
    text("command", s, f"exec: curl --user deploy:{s} -X POST https://ci.example.com/hook")
    s = _mixed(20)
    text("command", s, f'curl -H "Authorization: Token {s}" https://api.example.com/me')
    s = _mixed(20)
    text("command", s, f"curl -H 'X-Api-Key: {s}' https://api.example.com/v2/items")
    s = _mixed(12)
    text("command", s, f"running: mysql -h db -u root -p{s} app < dump.sql")
    s = _mixed(12)
    text("command", s, f"mysqldump -uroot -p{s} --all-databases")
    s = _mixed(16)
    text("command", s, f"docker login -u ci -p {s} registry.example.com")
    s = _mixed(16)
    text("command", s, f"subprocess: ['app', 'serve', '--password', '{s}']")
    s = _mixed(16)
    text("command", s, f"spawn: app serve --password {s} --port 8080")
    s = _mixed(16)
    text("command", s, f"cmd: deploy --api-key {s} --region eu-west-1")
    s = _mixed(16)
    text("command", s, f"sshpass -p {s} ssh deploy@10.0.0.4")
    s = _mixed(16)
    text("command", s, f"redis-cli -h cache -a {s} ping")
    s = _mixed(16)
    text("command", s, f"wget --user=bob --password={s} https://files.example.com/a.tgz")
    s = _mixed(16)
    text("command", s, f"git clone https://oauth2:{s}@gitlab.example.com/group/app.git")
    s = _mixed(16)
    text("command", s, f"psql postgresql://app:{s}@db.internal:5432/app -c 'select 1'")

    # HTTP: headers, cookies, bodies.
    s = _mixed(32)
    text("http", s, f"request headers: Cookie: sessionid={s}; theme=dark")
    s = _mixed(32)
    text("http", s, f"Set-Cookie: session={s}; Path=/; HttpOnly; Secure")
    s = _mixed(40)
    text("http", s, f"Authorization: Token {s}")
    s = _mixed(40)
    text("http", s, f"> Authorization: Bearer {s}")
    s = _mixed(30)
    text(
        "http",
        s,
        f"sending headers [('Host', 'api.example.com'), ('Authorization', 'Token {s}'), ('Accept', '*/*')]",
    )
    s = _mixed(30)
    text("http", s, f"asgi scope headers [(b'host', b'localhost'), (b'x-api-key', b'{s}')]")
    s = _mixed(30)
    text("http", s, f"headers={{'X-Api-Key': '{s}', 'Accept': 'application/json'}}")
    s = _mixed(16)
    text("http", s, f'request body {{\n  "username" : "bob",\n  "password" : "{s}"\n}}')
    s = _mixed(16)
    text("http", s, f'POST /login body={{"user": "bob", "pass": "{s}"}}')
    s = _mixed(24)
    text("http", s, f"response: {{'access_token': '{s}', 'expires_in': 3600}}")
    s = _mixed(24)
    text("http", s, f"proxy-authorization: Basic {base64.b64encode(f'bob:{s}'.encode()).decode()}")
    s = _mixed(20)
    text(
        "http",
        base64.b64encode(f"bob:{s}".encode()).decode(),
        f"Authorization: Basic {base64.b64encode(f'bob:{s}'.encode()).decode()}",
    )

    # URLs.
    s = "p#" + _mixed(10)
    text("url", s, f"connecting to postgresql://app:{s}@db.internal/app")
    s = "p?" + _mixed(10)
    text("url", s, f"broker amqp://guest:{s}@rabbit:5672/")
    s = _mixed(14)
    inner = f"https://bob:{s}@internal.example.com/cb"
    text("url", s, f"GET /login?next={quote(inner, safe='')} 302")
    s = _mixed(24)
    text("url", s, f"GET /oauth/callback?code=abc&access_token={s}&state=xyz 200")
    s = _mixed(14)
    text("url", s, f"redis://:{s}@cache:6379/0 connected")
    s = _mixed(24)
    text("url", s, f"GET /download?file=a.zip&apikey={s} 200 12ms")
    s = _mixed(24)
    inner = f"https://app.example.com/cb?access_token={s}"
    text("url", s, f"redirect_uri={quote(inner, safe='')}")

    # Keys in fields and dicts.
    for name in ("pw", "passPhrase", "SECRET_KEY_BASE", "passcode", "api_key", "auth_token", "session_token",
                 "private_key", "secret_key", "access_key", "X-Api-Key", "NGROK_AUTHTOKEN", "clientSecret",
                 "Authorization", "db_password", "refreshToken", "stripeSecretKey", "aws_secret_access_key",
                 "webhook_secret", "signing_key", "encryption_key", "license_key", "sig", "hmac_secret"):  # fmt: skip
        s = _mixed(24)
        cases.append(Case("keys", s, fields={name: s}))
        s2 = _mixed(24)
        cases.append(Case("keys", s2, fields={"config": {"service": "billing", name: s2}}))
    s = _mixed(20)
    cases.append(
        Case("keys", s, fields={"headers": [("Authorization", "Token " + s), ("Accept", "*/*")]})
    )
    s = _mixed(20)
    cases.append(Case("keys", s, fields={"headers": [(b"cookie", ("sid=" + s).encode())]}))

    # Structures.
    pem = _pem()
    cases.append(Case("structure", pem[2], fields={"key_lines": pem}))
    pem = _pem()
    cases.append(Case("structure", pem[1], text="key file lines: " + str(pem)))
    s = _mixed(16)
    cases.append(
        Case(
            "structure",
            s,
            template=("login %(user)s with %(password)s", {"user": "bob", "password": s}),
        )
    )
    s = _mixed(16)
    cases.append(
        Case(
            "structure",
            s,
            template=("connecting as %(user)s token=%(token)s", {"user": "bob", "token": s}),
        )
    )
    s = _mixed(20)
    text(
        "structure",
        s,
        f'Traceback (most recent call last):\n  File "app.py", line 3, in <module>\n    client = Client(api_key="{s}")\nValueError: bad key',
    )
    s = _mixed(20)
    text(
        "structure",
        s,
        f'  File "settings.py", line 12, in <module>\n    DB_PASSWORD = "{s}"\nNameError: x',
    )
    return cases


# Ordinary lines, in the shapes programs log; {n}, {ms}, {sha}, {short}, {uuid}, {ip}
# and {pod} are filled three times each.
_ORDINARY = [
    # HTTP access lines and clients
    '{ip} - - [06/Dec/2026:02:10:{n:02d} +0000] "GET /api/v1/items?page={n}&per_page=50&sort=created_at HTTP/1.1" 200 1532 "-" "Mozilla/5.0 (X11; Linux x86_64)"',
    '{ip} - - [06/Dec/2026:02:11:{n:02d} +0000] "POST /api/v1/sessions HTTP/1.1" 201 88 "https://app.example.com/login" "python-requests/2.31.0"',
    '{ip} - bob [06/Dec/2026:02:12:{n:02d} +0000] "GET /static/app.{short}.js HTTP/2.0" 304 0',
    'INFO:     {ip}:5{n:04d} - "GET /healthz HTTP/1.1" 200 OK',
    'urllib3.connectionpool DEBUG https://api.github.com:443 "GET /repos/org/app/pulls?state=open&page={n} HTTP/1.1" 200 None',
    'httpx INFO HTTP Request: POST https://api.openai.com/v1/chat/completions "HTTP/1.1 200 OK"',
    "GET https://example.com/api/v1/users/{n}/profile returned 200 in {ms} ms",
    "request_id={uuid} method=GET path=/v1/orders/{n} status=200 duration_ms={ms}",
    "GET /oauth/authorize?client_id=web&response_type=code&redirect_uri=https%3A%2F%2Fapp.example.com%2Fcb&state={short} 302",
    "upstream timed out (110: Connection timed out) while reading response header from upstream, client: {ip}",
    "GET /search?q=password+reset+email&page={n} 200 {ms}ms",
    "POST /api/auth/refresh 401 Unauthorized: token expired",
    "listing next page with next_page_token={short}{short} (page {n})",
    "response headers: Content-Type: application/json; charset=utf-8, X-Request-Id: {uuid}",
    "retrying GET https://pypi.org/simple/requests/ (attempt {n} of 5) after 0.{n}s",
    # SQL
    "SELECT id, email, password_hash FROM users WHERE email = %(email_1)s LIMIT {n}",
    "sqlalchemy.engine.Engine INFO UPDATE sessions SET last_seen=%(last_seen)s WHERE sessions.id = %(sessions_id)s",
    "INSERT INTO api_keys (id, name, prefix, created_at) VALUES ($1, $2, $3, now()) -- {ms} ms",
    "duration: {ms}.21 ms  statement: SELECT count(*) FROM orders WHERE tenant_id = {n}",
    "CREATE INDEX CONCURRENTLY idx_tokens_user_id ON tokens (user_id)",
    "ALTER TABLE users ADD COLUMN password_changed_at timestamptz",
    "migrating 0{n}_add_session_key_index... OK",
    "DELETE FROM password_resets WHERE created_at < now() - interval '1 day' ({n} rows)",
    "SELECT * FROM auth_user WHERE username = 'bob{n}'",
    "query plan: Index Scan using users_pkey on users (cost=0.29..8.31 rows=1 width={n})",
    # Kubernetes and containers
    "Successfully assigned default/web-{pod} to node-{n}",
    'Pulling image "ghcr.io/org/app:1.{n}.3"',
    "deployment.apps/sk-learn-worker-{pod} scaled to {n} replicas",
    "pod deploy/sk-learn-worker-7d9f8b6c4 restarted ({n} times)",
    'Readiness probe failed: Get "http://10.0.{n}.7:8080/ready": dial tcp: connection refused',
    "configmap/app-config configured; secret/app-secrets unchanged",
    "kubectl get secret db-credentials -o yaml (exit {n})",
    "Created container istio-proxy in pod api-{pod}",
    "Back-off restarting failed container worker in pod worker-{pod}_default({uuid})",
    "container oom-killed: memory limit 512Mi exceeded (rss {n}Mi)",
    "docker: Status: Downloaded newer image for python:3.12-slim ({n} layers)",
    "Step {n}/12 : RUN pip install --no-cache-dir -r requirements.txt",
    # git
    "commit {sha}",
    "HEAD is now at {short} Fix basic auth header parsing",
    "Merge branch 'feature/auth-token-refresh' into main ({n} commits)",
    "[main {short}] Rotate signing key docs; {n} files changed",
    "remote: Resolving deltas: 100% ({n}/{n}), done.",
    "To github.com:org/app.git\n   {short}..{short}  main -> main",
    "Switched to a new branch 'fix/password-length-{n}'",
    "git checkout {sha} -- src/auth/session_store.py",
    # CI
    "Run actions/checkout@v4 (attempt {n})",
    "##[group]Run npm ci --no-audit",
    "Job xoxo-party-planner succeeded in {n}m{ms}s",
    "job xoxo-party-planner #{n} queued on runner linux-x64",
    "Found {n} secrets scanning rules; 0 findings",
    "Cache restored from key: node-modules-{sha}",
    "Uploading artifact coverage-{n}.xml ({ms} KB)",
    "pipeline {n} passed: lint, test, build, deploy/staging",
    "running basic validation on {n} files",
    "step {n}: running basic validation",
    "Warning: The `set-output` command is deprecated (run {n})",
    # package managers
    "Collecting requests==2.31.{n}",
    "Downloading https://files.pythonhosted.org/packages/{short}/requests-2.31.0-py3-none-any.whl ({n} kB)",
    "npm WARN deprecated inflight@1.0.6: This module is not supported ({n})",
    "added {n} packages, and audited {ms} packages in 3s",
    "Resolving dependencies... ({n}.2s)",
    "Installing collected packages: urllib3, idna, charset-normalizer, certifi, requests ({n})",
    "cargo: Compiling serde_json v1.0.{n}",
    "go: downloading golang.org/x/crypto v0.{n}.0",
    "yarn install v1.22.{n} [1/4] Resolving packages...",
    "poetry: Updating dependencies: Resolving dependencies... (0.{n}s)",
    # cloud SDK debug lines
    "botocore.endpoint DEBUG Making request for OperationModel(name=GetObject) with params: {{'url_path': '/bucket/key-{n}.json', 'method': 'GET'}}",
    "botocore.credentials INFO Found credentials in shared credentials file: ~/.aws/credentials",
    "botocore.hooks DEBUG Event choose-signer.s3.GetObject: calling handler <function set_operation_specific_signer at 0x7f{short}>",
    "google.auth._default DEBUG Checking None for explicit credentials as part of auth process...",
    "google.auth.transport.requests DEBUG Making request: POST https://oauth2.googleapis.com/token (attempt {n})",
    "azure.core.pipeline.policies.http_logging_policy INFO Request URL: 'https://acct.blob.core.windows.net/c/f.csv?sv=REDACTED&sig=REDACTED'",
    "azure.identity INFO DefaultAzureCredential acquired a token from ManagedIdentityCredential ({n})",
    "s3transfer.futures DEBUG Submitting task UploadPartTask(part {n}) to executor",
    "aws_access_key_id loaded from profile default (region us-east-{n})",
    "Using AWS profile prod-{n}, role arn:aws:iam::{n}23456789012:role/deploy",
    # agent tool calls
    'tool_call name=read_file args={{"path": "src/auth/token_store.py", "line": {n}}}',
    'tool_call name=bash args={{"command": "pytest -q tests/test_auth.py -k basic", "timeout": {n}}}',
    'tool result: {{"exit_code": 0, "stdout": "{n} passed", "duration_s": 1.{n}}}',
    "assistant: I will update the session_key handling in middleware.py (step {n})",
    "tool_call grep pattern='api_key' path=src/ ({n} matches)",
    "Running: ruff check src/auth --select S105 (attempt {n})",
    "tokens used: prompt={n}, completion={ms}, total={ms}{n}",
    "model=gpt-4o max_tokens={n}00 temperature=0.2",
    "tool edit_file path=docs/auth.md lines {n}-{ms}",
    "plan: 1) read config 2) rotate token 3) rerun tests (iteration {n})",
    # ordinary settings and app lines
    "auth=none user=anonymous path=/public/{n}",
    "auth_method=oauth2 provider=google user_id={n}",
    "password reset email sent to user {n}",
    "password_length={n} policy=strong",
    "token_count={n} cache_hit=true",
    "cache_key=user:{n}:profile hit=true",
    "routing_key=orders.created delivery_tag={n}",
    "sort_key=created_at order=desc limit={n}",
    "partition_key=tenant-{n} rows={ms}",
    "primary_key=id foreign_key=user_id table=orders_{n}",
    "idempotency_key={uuid} status=replayed",
    "object_key=uploads/2026/12/{uuid}.png size={ms}",
    "public_key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{short}{short} bob@laptop",
    "page_token={short}{short} items={n}",
    "session_id={uuid} started by pid {n}",
    "user bob logged in from {ip} (session {n})",
    "Basic authentication is disabled for /api/v{n}",
    "secret scanning: {n} alerts closed",
    "The token bucket refilled: {n} tokens available",
    "key rotation scheduled for 2026-12-{n:02d}T03:00:00Z",
    "Saved {n} items in {ms} ms at 2026-12-06T02:{n:02d}:00Z",
    "processing step {n} of {ms}",
    "worker-{n} heartbeat ok (lag {ms} ms)",
    "connected to postgresql://db.internal:5432/app as app (pool size {n})",
    "redis://cache:6379/{n} connected",
    "timeout=30 retries={n} backoff=2.0",
    "error: could not open file /etc/app/{n}.conf: permission denied",
    "Traceback (most recent call last):\n  File \"app.py\", line {n}, in main\n    run(config)\nKeyError: 'password'",
    "warning: passphrase prompt skipped (non-interactive, attempt {n})",
    "feature flag enable_new_auth=true for {n}% of users",
    "loaded {n} translations for locale en-US",
]


def ordinary_lines() -> list[str]:
    """Return the ordinary corpus (three fillings of each shape)."""
    rng = random.Random(7)
    lines: list[str] = []
    for template in _ORDINARY:
        lines.extend(
            template.format(
                n=rng.randrange(1, 60),
                ms=rng.randrange(2, 900),
                sha="".join(rng.choice(_HEX) for _ in range(40)),
                short="".join(rng.choice(_HEX) for _ in range(7)),
                uuid="-".join(
                    "".join(rng.choice(_HEX) for _ in range(k)) for k in (8, 4, 4, 4, 12)
                ),
                ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                pod="".join(rng.choice(_HEX) for _ in range(9))
                + "-"
                + "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)),
            )
            for _ in range(3)
        )
    return lines


def ordinary_fields() -> list[dict[str, Any]]:
    """Return extra fields whose names hold key, token or auth but are not secret."""
    return [
        {"cache_key": "user:42:profile"},
        {"routing_key": "orders.created"},
        {"sort_key": "created_at"},
        {"partition_key": "tenant-17"},
        {"primary_key": "id", "foreign_key": "user_id"},
        {"idempotency_key": "5f0c6b1e-8d2a-4c3b-9e7f-1a2b3c4d5e6f"},
        {"object_key": "uploads/2026/12/avatar.png"},
        {"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx bob@laptop"},
        {"page_token": "CiAKGjBpNDd2Nmp2Zml2cXRwYjBpOXA0"},
        {"next_page_token": "eyJvZmZzZXQiOjEwMH0"},
        {"auth": "none"},
        {"auth_method": "oauth2"},
        {"max_tokens": 4096, "tokens_used": 1234},
        {"token_count": 17},
        {"password_length": 12},
        {"key": "k1", "key_id": "kid-2026"},
        {"secret_name": "prod/db/password"},
        {"commit": "3f2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a"},
        {"signing_key_id": "key-2026-12"},
    ]

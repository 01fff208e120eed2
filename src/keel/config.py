"""Project settings: read once from ``keel.yaml`` and the environment, validated, passed down.

The environment is an argument (a plain mapping) so tests pass a dict instead of patching
``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keel.errors import ConfigError
from keel.money import (
    DEFAULT_CURRENCY,
    DEFAULT_LOCALE,
    DEFAULT_MONEY,
    Money,
    currency_problem,
    locale_problem,
)
from keel.schema import Key, children

SETTINGS_FILE = "keel.yaml"
DEFAULT_DATABASE_URL = "sqlite:///keel.db"
DEFAULT_KEYS_DIR = ".keel/keys"
DEFAULT_LEDGER_MAX_BATCH = 512
DEFAULT_MODEL_TIMEOUT_MS = 1000
ENV_DATABASE_URL = "KEEL_DATABASE_URL"
ENV_KEYS_DIR = "KEEL_KEYS_DIR"

DEFAULT_REVIEW_SWEEP_S = 60
DEFAULT_MONITOR_CHECK_S = 30
DEFAULT_DELIVERY_CHECK_S = 15
DEFAULT_DELIVERY_MAX_ATTEMPTS = 12  # with the backoff below: about five hours of tries
DEFAULT_DELIVERY_BACKOFF_S = 30
DEFAULT_DELIVERY_MAX_BACKOFF_S = 3600
DEFAULT_DELIVERY_LEASE_S = 120  # longer than a send can take (a command: at most 60 s)
DEFAULT_ROLES_CLAIM = "keel_roles"
DEFAULT_PERSON_CLAIM = "email"  # the claim naming the person behind a token (four eyes)
DEFAULT_GROUPS_CLAIM = "groups"  # the claim listing a token's groups (documents' access lists)
DEFAULT_JWT_LEEWAY_S = 30
DEFAULT_RATE_PER_S = 200
DEFAULT_BURST = 400
# Where the per-caller buckets live: "process" (each worker its own: N workers allow N times
# the rate), "shared" (in the store, across workers and nodes), or "auto" (shared when the
# server runs more than one worker process).
RATE_LIMIT_MODES = ("auto", "process", "shared")
# How policy and model files reach a flow: in "production" only through an approved change
# (four eyes); in "development" every changed file is activated at the next start. A
# keel.yaml without ``mode`` is production: the safe default for a file nobody looked at.
MODES = ("production", "development")
PRODUCTION, DEVELOPMENT = MODES
# Below the 30 s most supervisors (Kubernetes, Docker) wait between SIGTERM and SIGKILL.
DEFAULT_GRACEFUL_TIMEOUT_S = 25
DEFAULT_WORKER_HANG_S = 120

_POSITIVE = "integer > 0"
SETTINGS_KEYS: tuple[Key, ...] = (
    Key("name", "string", "The project's name. Signed ledger checkpoints carry it.",
        default="the project directory's name"),
    Key("mode", "string",
        "How edits of policy and model files reach the flows. `production`: only through a "
        "proposed, approved and activated change (four eyes). `development`: whenever Keel "
        "starts, a file that differs from the active version is recorded and activated, "
        "marked as a development-mode activation. A store whose ledger holds history made in "
        "production mode refuses development mode.",
        default=PRODUCTION, values=MODES),
    Key("database_url", "URL",
        "Where the store lives, as a SQLAlchemy URL. A relative SQLite path is relative to "
        "this file; `postgresql+psycopg://USER@HOST/DB` needs `keel[postgres]`.",
        default=DEFAULT_DATABASE_URL, env=ENV_DATABASE_URL),
    Key("keys_dir", "path",
        "Where the data-encryption key and the ledger signing key are kept (created on first "
        "use, mode 0600). Relative to this file; point it at a secrets volume to move them.",
        default=DEFAULT_KEYS_DIR, env=ENV_KEYS_DIR),
    Key("locale", "string",
        "The locale explanations, reasons and notices write numbers, percentages and money "
        "in, e.g. `de_DE`; a flow's `locale` overrides it.", default=DEFAULT_LOCALE),
    Key("currency", "string (ISO 4217)",
        "The currency of values whose format is `currency`, e.g. `EUR`; a flow's `currency` "
        "overrides it. Amounts are shown in whole units.", default=DEFAULT_CURRENCY),
    Key("ledger", "mapping", "How the ledger writer works."),
    Key("ledger.max_batch", _POSITIVE,
        "The most entries the ledger writer commits in one transaction.",
        default=str(DEFAULT_LEDGER_MAX_BATCH)),
    Key("models", "mapping", "How models are called."),
    Key("models.default_timeout_ms", _POSITIVE,
        "How long a model call may take, in milliseconds, when its signal sets no "
        "`timeout_ms`. A call that takes longer gives no signal, and the fallback decides.",
        default=str(DEFAULT_MODEL_TIMEOUT_MS)),
    Key("oidc", "mapping",
        "An OIDC issuer whose bearer tokens (JWTs) Keel accepts besides its API keys. "
        "Left out: API keys only."),
    Key("oidc.issuer", "string", "The issuer (`iss`) a token must name.", required=True),
    Key("oidc.audience", "string", "The audience (`aud`) a token must name.", required=True),
    Key("oidc.jwks_url", "URL",
        "Where the issuer's signing keys are published (JWKS). Must use https (plain http "
        "only for localhost). Give exactly one of `jwks_url` and `jwks_file`."),
    Key("oidc.jwks_file", "path",
        "A file holding the issuer's signing keys (JWKS), relative to this file: for a "
        "server that cannot reach the issuer. Give exactly one of `jwks_url` and `jwks_file`."),
    Key("oidc.roles_claim", "string", "The token claim that lists the caller's Keel roles.",
        default=DEFAULT_ROLES_CLAIM),
    Key("oidc.person_claim", "string",
        "The token claim that names the person behind a token, for four-eyes checks.",
        default=DEFAULT_PERSON_CLAIM),
    Key("oidc.groups_claim", "string",
        "The token claim that lists the caller's groups, matched against documents' access "
        "lists: a list of strings or one space-separated string. Items that are not group "
        "names are ignored, counted and logged.",
        default=DEFAULT_GROUPS_CLAIM),
    Key("oidc.leeway_s", _POSITIVE,
        "Clock skew allowed when checking a token's times, in seconds.",
        default=str(DEFAULT_JWT_LEEWAY_S)),
    Key("api", "mapping", "How the HTTP server limits and stops."),
    Key("api.rate_per_s", _POSITIVE,
        "Requests per second each caller may make (a token bucket per caller); over it, "
        "`429 rate_limited` with `Retry-After`.", default=str(DEFAULT_RATE_PER_S)),
    Key("api.burst", _POSITIVE, "The size of each caller's token bucket: the most requests "
        "a caller may make at once.", default=str(DEFAULT_BURST)),
    Key("api.rate_limits", "string",
        "Where the callers' buckets live: `process` (each worker its own, so N workers allow "
        "N times the rate), `shared` (in the store, across workers and nodes) or `auto` "
        "(shared when the server runs more than one worker process).",
        default=RATE_LIMIT_MODES[0], values=RATE_LIMIT_MODES),
    Key("api.graceful_timeout_s", _POSITIVE,
        "How long `keel serve` goes on finishing accepted requests after SIGTERM, in seconds.",
        default=str(DEFAULT_GRACEFUL_TIMEOUT_S)),
    Key("api.worker_hang_s", _POSITIVE,
        "With more than one worker: how long a worker process may leave the supervisor's "
        "health check unanswered, in seconds, before it is killed and replaced. A worker "
        "loading a large model can hold Python's interpreter lock for a while; one killed "
        "early drops the requests it was answering.", default=str(DEFAULT_WORKER_HANG_S)),
    Key("reviews", "mapping", "How a server watches the review queues."),
    Key("reviews.sweep_s", _POSITIVE,
        "How often, in seconds, a server records a `review_breached` event for each review "
        "still waiting past its flow's deadline.", default=str(DEFAULT_REVIEW_SWEEP_S)),
    Key("monitors", "mapping", "How a server runs scheduled monitors."),
    Key("monitors.check_s", _POSITIVE,
        "How often, in seconds, a server looks for flows whose `monitoring.every` period "
        "has not been run.", default=str(DEFAULT_MONITOR_CHECK_S)),
    Key("deliveries", "mapping",
        "The webhook outbox: alarm notices and retraining requests, sent at least once."),
    Key("deliveries.check_s", _POSITIVE,
        "How often, in seconds, a server sends the deliveries that are due.",
        default=str(DEFAULT_DELIVERY_CHECK_S)),
    Key("deliveries.max_attempts", _POSITIVE,
        "How many tries a delivery gets before it is dead-lettered.",
        default=str(DEFAULT_DELIVERY_MAX_ATTEMPTS)),
    Key("deliveries.backoff_s", _POSITIVE,
        "The wait after the first failed try, in seconds; it doubles after each try.",
        default=str(DEFAULT_DELIVERY_BACKOFF_S)),
    Key("deliveries.max_backoff_s", _POSITIVE,
        "The longest wait between tries, in seconds; at least `deliveries.backoff_s`.",
        default=str(DEFAULT_DELIVERY_MAX_BACKOFF_S)),
    Key("deliveries.lease_s", _POSITIVE,
        "How long a sender's claim on a delivery lasts, in seconds; a claim held longer "
        "may be taken by another sender.", default=str(DEFAULT_DELIVERY_LEASE_S)),
)  # fmt: skip
_KNOWN_KEYS = children(SETTINGS_KEYS, "")
_LEDGER_KEYS = children(SETTINGS_KEYS, "ledger")
_MODEL_KEYS = children(SETTINGS_KEYS, "models")
_OIDC_KEYS = children(SETTINGS_KEYS, "oidc")
_API_KEYS = children(SETTINGS_KEYS, "api")
_REVIEWS_KEYS = children(SETTINGS_KEYS, "reviews")
_MONITORS_KEYS = children(SETTINGS_KEYS, "monitors")
_DELIVERIES_KEYS = children(SETTINGS_KEYS, "deliveries")


@dataclass(frozen=True)
class OidcSettings:
    """An OIDC issuer whose bearer tokens (JWTs) Keel accepts, and where its keys are."""

    issuer: str
    audience: str
    jwks_url: str | None
    jwks_file: Path | None
    roles_claim: str = DEFAULT_ROLES_CLAIM
    person_claim: str = DEFAULT_PERSON_CLAIM
    groups_claim: str = DEFAULT_GROUPS_CLAIM
    leeway_s: int = DEFAULT_JWT_LEEWAY_S


@dataclass(frozen=True)
class DeliverySettings:
    """The webhook outbox: how often a server sends what is due, how often and how far
    apart a failed delivery is tried again, and how long a claim on one lasts."""

    check_s: int = DEFAULT_DELIVERY_CHECK_S
    max_attempts: int = DEFAULT_DELIVERY_MAX_ATTEMPTS  # then it is dead-lettered
    backoff_s: int = DEFAULT_DELIVERY_BACKOFF_S  # before the 2nd try; doubling from there
    max_backoff_s: int = DEFAULT_DELIVERY_MAX_BACKOFF_S
    lease_s: int = DEFAULT_DELIVERY_LEASE_S  # a claim held longer is another sender's to take


@dataclass(frozen=True)
class Settings:
    """Everything a Keel engine needs to know about its project and environment."""

    project_dir: Path
    name: str
    database_url: str
    keys_dir: Path
    mode: str = PRODUCTION  # one of MODES
    ledger_max_batch: int = DEFAULT_LEDGER_MAX_BATCH
    model_timeout_ms: int = DEFAULT_MODEL_TIMEOUT_MS
    oidc: OidcSettings | None = None
    rate_per_s: int = DEFAULT_RATE_PER_S  # per principal, token bucket
    burst: int = DEFAULT_BURST
    rate_limits: str = "auto"  # one of RATE_LIMIT_MODES
    graceful_timeout_s: int = DEFAULT_GRACEFUL_TIMEOUT_S  # a server's drain on SIGTERM
    worker_hang_s: int = DEFAULT_WORKER_HANG_S  # a silent worker is replaced after this
    review_sweep_s: int = DEFAULT_REVIEW_SWEEP_S  # how often a server records deadline breaches
    monitor_check_s: int = DEFAULT_MONITOR_CHECK_S  # how often a server looks for due monitors
    deliveries: DeliverySettings = field(default_factory=DeliverySettings)
    money: Money = DEFAULT_MONEY  # locale and currency, unless a flow sets its own
    # The environment Keel was started with: webhook secrets are read from it by name.
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def flows_dir(self) -> Path:
        return self.project_dir / "flows"

    @property
    def policies_dir(self) -> Path:
        return self.project_dir / "policies"

    @property
    def models_dir(self) -> Path:
        return self.project_dir / "models"

    @property
    def examples_dir(self) -> Path:
        return self.project_dir / "examples"


def _positive_int(section: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(
            f"{where}.{key} must be a positive integer, got {value!r}",
            {"key": f"{where}.{key}"},
        )
    return value


def _choice(section: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default); ``where`` is "" at the top level."""
    value = section.get(key, choices[0])
    if value not in choices:
        name = f"{where}.{key}" if where else key
        raise ConfigError(
            f"{name} must be one of {', '.join(choices)}, got {value!r}", {"key": name}
        )
    return str(value)


def _section(raw: Mapping[str, Any], key: str, known: set[str], path: Path) -> Mapping[str, Any]:
    section = raw.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: '{key}' must be a mapping", {"key": key})
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting {key}.{unknown[0]} (known: {', '.join(sorted(known))})",
            {"key": f"{key}.{unknown[0]}"},
        )
    return section


def resolve_database_url(url: str, project_dir: Path) -> str:
    """Make a relative SQLite path relative to the project directory, not the cwd."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        rest = url[len(prefix) :]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return prefix + str((project_dir / rest).resolve())
    return url


def load_settings(project_dir: str | Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``keel.yaml`` in ``project_dir``; the environment overrides the database URL."""
    env = os.environ if environ is None else environ
    root = Path(project_dir).resolve()
    path = root / SETTINGS_FILE
    if not path.is_file():
        raise ConfigError(
            f"no Keel project at {root}: {SETTINGS_FILE} is missing "
            "(create one with 'keel init DIR', or pass --project DIR)",
            {"path": str(path)},
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}", {"path": str(path)}) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of settings", {"path": str(path)})
    unknown = sorted(set(raw) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting '{unknown[0]}' (known: {', '.join(sorted(_KNOWN_KEYS))})",
            {"key": unknown[0]},
        )
    name = raw.get("name", root.name)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: 'name' must be a non-empty string", {"key": "name"})
    url = env.get(ENV_DATABASE_URL) or raw.get("database_url", DEFAULT_DATABASE_URL)
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError(
            f"database_url must be a URL such as {DEFAULT_DATABASE_URL!r}, got {url!r}",
            {"key": "database_url"},
        )
    keys = env.get(ENV_KEYS_DIR) or raw.get("keys_dir", DEFAULT_KEYS_DIR)
    if not isinstance(keys, str):
        raise ConfigError(f"{path}: 'keys_dir' must be a path", {"key": "keys_dir"})
    ledger = _section(raw, "ledger", _LEDGER_KEYS, path)
    models = _section(raw, "models", _MODEL_KEYS, path)
    api = _section(raw, "api", _API_KEYS, path)
    review = _section(raw, "reviews", _REVIEWS_KEYS, path)
    monitors = _section(raw, "monitors", _MONITORS_KEYS, path)
    deliveries = _deliveries(_section(raw, "deliveries", _DELIVERIES_KEYS, path))
    oidc = _oidc(_section(raw, "oidc", _OIDC_KEYS, path), root, path) if raw.get("oidc") else None
    money = _money(raw, path)
    return Settings(
        project_dir=root,
        name=name,
        database_url=resolve_database_url(url, root),
        mode=_choice(raw, "mode", "", MODES),
        keys_dir=(root / keys).resolve(),
        ledger_max_batch=_positive_int(ledger, "max_batch", "ledger", DEFAULT_LEDGER_MAX_BATCH),
        model_timeout_ms=_positive_int(
            models, "default_timeout_ms", "models", DEFAULT_MODEL_TIMEOUT_MS
        ),
        oidc=oidc,
        rate_per_s=_positive_int(api, "rate_per_s", "api", DEFAULT_RATE_PER_S),
        burst=_positive_int(api, "burst", "api", DEFAULT_BURST),
        rate_limits=_choice(api, "rate_limits", "api", RATE_LIMIT_MODES),
        graceful_timeout_s=_positive_int(
            api, "graceful_timeout_s", "api", DEFAULT_GRACEFUL_TIMEOUT_S
        ),
        worker_hang_s=_positive_int(api, "worker_hang_s", "api", DEFAULT_WORKER_HANG_S),
        review_sweep_s=_positive_int(review, "sweep_s", "reviews", DEFAULT_REVIEW_SWEEP_S),
        monitor_check_s=_positive_int(monitors, "check_s", "monitors", DEFAULT_MONITOR_CHECK_S),
        deliveries=deliveries,
        money=money,
        environ=dict(env),
    )


def _money(raw: Mapping[str, Any], path: Path) -> Money:
    """The project's locale and currency; a bad code is named with its line."""
    found = {"locale": DEFAULT_LOCALE, "currency": DEFAULT_CURRENCY}
    for key, check in (("locale", locale_problem), ("currency", currency_problem)):
        if key not in raw:
            continue
        problem = check(raw[key])
        if problem is not None:
            text = path.read_text(encoding="utf-8")
            match = re.search(rf"^{key}\s*:", text, re.MULTILINE)
            line = f":{text.count(chr(10), 0, match.start()) + 1}" if match else ""
            raise ConfigError(f"{path}{line}: {problem}", {"key": key})
        found[key] = raw[key]
    return Money(found["locale"], found["currency"])


def _deliveries(section: Mapping[str, Any]) -> DeliverySettings:
    where = "deliveries"
    found = DeliverySettings(
        check_s=_positive_int(section, "check_s", where, DEFAULT_DELIVERY_CHECK_S),
        max_attempts=_positive_int(section, "max_attempts", where, DEFAULT_DELIVERY_MAX_ATTEMPTS),
        backoff_s=_positive_int(section, "backoff_s", where, DEFAULT_DELIVERY_BACKOFF_S),
        max_backoff_s=_positive_int(
            section, "max_backoff_s", where, DEFAULT_DELIVERY_MAX_BACKOFF_S
        ),
        lease_s=_positive_int(section, "lease_s", where, DEFAULT_DELIVERY_LEASE_S),
    )
    if found.max_backoff_s < found.backoff_s:
        raise ConfigError(
            f"deliveries.max_backoff_s ({found.max_backoff_s}) must be at least "
            f"deliveries.backoff_s ({found.backoff_s})",
            {"key": "deliveries.max_backoff_s"},
        )
    return found


def _oidc(section: Mapping[str, Any], root: Path, path: Path) -> OidcSettings:
    def text(key: str) -> str | None:
        value = section.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(
                f"{path}: oidc.{key} must be a non-empty string", {"key": f"oidc.{key}"}
            )
        return value

    issuer, audience = text("issuer"), text("audience")
    if issuer is None or audience is None:
        raise ConfigError(f"{path}: oidc needs 'issuer' and 'audience'", {"key": "oidc"})
    jwks_url, jwks_file = text("jwks_url"), text("jwks_file")
    if (jwks_url is None) == (jwks_file is None):
        raise ConfigError(
            f"{path}: oidc needs exactly one of 'jwks_url' and 'jwks_file'", {"key": "oidc"}
        )
    if (
        jwks_url is not None
        and not jwks_url.startswith("https://")
        and not jwks_url.startswith(("http://127.0.0.1", "http://localhost"))
    ):
        raise ConfigError(
            f"{path}: oidc.jwks_url must use https (plain http only for localhost)",
            {"key": "oidc.jwks_url"},
        )
    return OidcSettings(
        issuer=issuer,
        audience=audience,
        jwks_url=jwks_url,
        jwks_file=(root / jwks_file).resolve() if jwks_file else None,
        roles_claim=text("roles_claim") or DEFAULT_ROLES_CLAIM,
        person_claim=text("person_claim") or DEFAULT_PERSON_CLAIM,
        groups_claim=text("groups_claim") or DEFAULT_GROUPS_CLAIM,
        leeway_s=_positive_int(section, "leeway_s", "oidc", DEFAULT_JWT_LEEWAY_S),
    )

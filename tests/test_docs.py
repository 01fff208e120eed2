"""The documentation site: its generated reference pages match the code, and it builds
strictly (no broken link, no missing page) with nothing fetched from elsewhere."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.config import SETTINGS_KEYS, load_settings
from keel.docs import _anchor, generate
from keel.errors import ConfigError, DefinitionError
from keel.flows import load_flow
from keel.flows.schema import FLOW_KEYS
from keel.policy import load_policy
from keel.policy.schema import POLICY_KEYS
from keel.scaffold import project as scaffold
from keel.schema import Key
from tests.test_cli import all_commands

Loader = Callable[[Path, dict[str, Any]], None]

ROOT = Path(__file__).parent.parent
REFERENCE = ROOT / "docs" / "reference"


def test_generated_reference_pages_match_the_code() -> None:
    stale = [
        name
        for name, text in generate(REFERENCE).items()
        if (REFERENCE / name).read_text(encoding="utf-8") != text
    ]
    assert stale == [], f"stale: {stale}; run `python -m keel.docs` and commit the pages"


def test_the_site_builds_strictly_and_fetches_nothing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)]
    built = subprocess.run(command, check=False, cwd=ROOT, capture_output=True, text=True, env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    fetched = set()
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        fetched.update(
            re.findall(r'<(?:script|img|link)[^>]+(?:src|href)="(https?://[^"]+)"', html)
        )
    assert fetched == set()  # no CDN, no web fonts, no analytics
    http = (site / "reference" / "http" / "index.html").read_text(encoding="utf-8")
    explorer = re.search(
        r'<iframe class="swagger-ui-iframe"[^>]* src="(swagger-[0-9a-f]+\.html)"', http
    )
    assert explorer, "the HTTP page embeds Swagger UI"
    frame = (site / "reference" / "http" / explorer[1]).read_text(encoding="utf-8")
    assert (site / "assets" / "javascripts" / "swagger-ui-bundle.js").is_file()
    assert "swagger-ui-bundle.js" in frame and "openapi.json" in frame
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    commands = all_commands()
    assert {"ledger verify", "deliveries list", "flow stop"} <= set(commands)
    assert [c for c in commands if f">keel {c}<" not in cli] == []  # a heading each


def test_every_error_code_but_programming_errors_has_an_http_status() -> None:
    """A request that meets any error but a programming error gets its own 4xx or 503,
    never a bare 500; and every error class says what it means (the errors page)."""
    from keel.api.errors import STATUS
    from keel.docs import _all_modules, _subclasses
    from keel.errors import KeelError

    _all_modules()
    classes = [c for c in [KeelError, *_subclasses(KeelError)] if c.__module__.startswith("keel")]
    without = {c.code for c in classes if c.code not in STATUS}  # type: ignore[attr-defined]
    assert without == {"nested_transaction", "refresh_in_transaction"}
    assert [c.__name__ for c in classes if not (c.__doc__ or "").strip()] == []


# ---- the described keys of keel.yaml, flow files and policy files ----------------------
#
# Each file kind's schema (``keel.config.SETTINGS_KEYS``, ``keel.flows.schema.FLOW_KEYS``,
# ``keel.policy.schema.POLICY_KEYS``) must match what its real validator does: sample files
# built on the demo project use every described key and are accepted whole, and an
# undescribed key put into any mapping with fixed keys is refused by name.

UNDESCRIBED = "undescribed_key"


def _demo_settings() -> list[dict[str, Any]]:
    """Two keel.yaml files between them using every setting (jwks_url and jwks_file
    exclude each other)."""
    base = yaml.safe_load(scaffold.SETTINGS.format(name="demo", mode="development"))
    base.update(
        keys_dir=".keel/keys",
        locale="de_DE",
        currency="EUR",
        api={
            "rate_per_s": 50,
            "burst": 100,
            "rate_limits": "shared",
            "graceful_timeout_s": 10,
            "worker_hang_s": 60,
        },
        reviews={"sweep_s": 30},
        monitors={"check_s": 60},
        deliveries={
            "check_s": 5,
            "max_attempts": 3,
            "backoff_s": 10,
            "max_backoff_s": 60,
            "lease_s": 90,
        },
        oidc={
            "issuer": "https://id.example.com",
            "audience": "keel",
            "jwks_url": "https://id.example.com/jwks",
            "roles_claim": "roles",
            "person_claim": "sub",
            "groups_claim": "teams",
            "leeway_s": 5,
        },
    )
    other = copy.deepcopy(base)
    del other["oidc"]["jwks_url"]
    other["oidc"]["jwks_file"] = "jwks.json"
    return [base, other]


def _demo_flow() -> dict[str, Any]:
    """The demo flow with every other flow key added."""
    flow: dict[str, Any] = yaml.safe_load(scaffold.FLOW)
    flow["inputs"]["note"] = {"type": "string", "required": False}
    flow["inputs"]["housing"] = {
        "type": "string",
        "required": False,
        "allowed": ["own", "rent"],
        "labels": {"own": "owns the home", "rent": "rents"},
        "protected": True,
    }
    flow["inputs"]["age"] = {
        "type": "integer", "required": False, "protected": True, "groups": [25, 40, 60],
    }  # fmt: skip
    flow["outcome"]["positive"] = ["defaulted"]
    flow["fairness"] = {"favourable": ["approve"], "score": "default_risk"}
    flow["inputs"]["employment_years"]["notice_reason"] = "Length of employment"
    flow["locale"], flow["currency"] = "de_DE", "EUR"
    flow["notice"] = {
        "adverse_actions": ["decline"],
        "request": "requested_limit",
        "reasons": 3,
        "contact": "Consumer Credit, credit@example.com",
        "adverse_when": {"default_risk": "high"},
    }
    signal = flow["signals"]["default_risk"]
    signal["reference"] = {name: 0.0 for name in signal["features"]}
    flow["review"] = {
        "deadline": "4h",
        "four_eyes": True,
        "capacity": {"max_reviews": 200, "per": "1d", "when_saturated": "pause"},
    }
    flow["earned_autonomy"] = {
        "autonomous": {
            "over": "14d",
            "min_reviewed": 500,
            "min_agreement": 0.95,
            "max_guardrail_hits": 0,
            "min_outcome_accuracy": 0.9,
            "min_outcomes": 100,
        }
    }
    hook = {"url": "https://hooks.example.com/keel", "secret_env": "KEEL_HOOK_SECRET"}
    flow["monitoring"] = {
        "window": "1d", "baseline": "7d", "every": "1h", "min_decisions": 30,
        "drift": {"methods": ["jensenshannon"], "min_columns": 2, "severity": "critical",
                  "reference": "1938ef89d181"},
        "limits": {"automation_rate": {"max_change": 0.1, "severity": "critical"},
                   "override_rate": 0.05, "latency_p99_ms": {"max_ratio": 2, "severity": "info"}},
        "alarms": {"cooldown": "6h", "clear_after": 2, "clear_below": 0.8},
        "fairness": {"min_impact_ratio": 0.8, "max_parity_difference": 0.1,
                     "min_group_size": 50, "severity": "critical"},
        "notify": [{**hook, "name": "ops"}],
        "governor": [
            {"when": {"alarm": ["drift"], "severity": "critical"}, "do": "lower_autonomy",
             "to": "advisory"},
            {"when": {"alarm": "drift"}, "do": "retrain"},
        ],
        "retrain": {"webhook": {**hook, "name": "ml"}, "command": ["python", "retrain.py"]},
    }  # fmt: skip
    flow["outcome"].update(negative=["repaid"], signal="default_risk")
    flow["monitoring"]["limits"].update(
        auc={"min": 0.7, "severity": "critical"}, gini=0.4, brier={"max": 0.25, "severity": "info"}
    )
    flow["monitoring"]["performance"] = {"over": "90d", "min_outcomes": 100}
    return flow


def _demo_policy() -> dict[str, Any]:
    """The demo policy with every other policy key added."""
    policy: dict[str, Any] = yaml.safe_load(scaffold.POLICY)
    policy["default"].update(review=True, value="0.0")
    policy["fallback"]["value"] = "params.starter_limit"
    policy["fallback"]["notice"] = "We could not complete an automated assessment."
    policy["default"]["notice"] = "No automatic decision applies to your application."
    policy["rules"][3]["notice"] = "The risk of lending to you is higher than we accept."
    policy["guardrails"]["rate_limits"][0]["per"] = "region"
    return policy


def _load_settings(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "keel.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    load_settings(tmp_path, environ={})


def _load_flow(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "credit_limit.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    load_flow(tmp_path / "credit_limit.yaml")


def _load_policy(tmp_path: Path, document: dict[str, Any]) -> None:
    (tmp_path / "credit_limit.yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    load_policy(tmp_path / "credit_limit.yaml")


KINDS: dict[str, tuple[tuple[Key, ...], Callable[[], list[dict[str, Any]]], Loader]] = {
    "settings": (SETTINGS_KEYS, _demo_settings, _load_settings),
    "flows": (FLOW_KEYS, lambda: [_demo_flow()], _load_flow),
    "policies": (POLICY_KEYS, lambda: [_demo_policy()], _load_policy),
}


def _path_of(keys: Sequence[Key], parent: str, name: str) -> str:
    """The described path of key ``name`` under ``parent``: its own entry, or the free entry
    (``inputs.<name>``) that admits it; an undescribed key gets a path of its own."""
    path = f"{parent}.{name}" if parent else name
    if any(key.path == path for key in keys):
        return path
    for key in keys:
        if key.parent == parent and key.free and (not key.values or name in key.values):
            return key.path
    return f"UNDESCRIBED {path}"


def _nodes(keys: Sequence[Key], node: Any, parent: str = "") -> dict[str, list[Any]]:
    """Every value of a document by its described path (a list's items under ``path[]``)."""
    found: dict[str, list[Any]] = {}
    if isinstance(node, dict):
        found.setdefault(parent, []).append(node)
        for name, value in node.items():
            path = _path_of(keys, parent, name)
            found.setdefault(path, []).append(value)
            for inner, values in _nodes(keys, value, path).items():
                found.setdefault(inner, []).extend(values)
    elif isinstance(node, list):
        for item in node:
            for inner, values in _nodes(keys, item, f"{parent}[]").items():
                found.setdefault(inner, []).extend(values)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_every_described_key_is_accepted(kind: str, tmp_path: Path) -> None:
    """Sample files using every described key between them pass the real validator whole,
    so no described key is refused; and they use no key the schema does not describe."""
    keys, samples, load = KINDS[kind]
    used: set[str] = set()
    for document in samples():
        load(tmp_path, document)
        used |= {path for path, values in _nodes(keys, document).items() if path and values}
    described = {key.path for key in keys}
    assert sorted(described - used) == [], "described keys the samples do not use"
    assert sorted(used - described - {p + "[]" for p in described}) == []


def _mappings_with_fixed_keys(keys: Sequence[Key]) -> list[str]:
    """Every place whose keys are fixed: the top level, each mapping and list item that has
    described keys (not a mapping of free names such as ``inputs`` or ``params``)."""
    parents = {key.parent for key in keys}
    return sorted(p for p in parents if not all(k.free and not k.values
                                                for k in keys if k.parent == p))  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_an_undescribed_key_is_refused_everywhere(kind: str, tmp_path: Path) -> None:
    keys, samples, load = KINDS[kind]
    places = _mappings_with_fixed_keys(keys)
    assert "" in places and len(places) > 5
    accepted = []
    for place in places:
        document = next(d for d in samples() if _nodes(keys, d).get(place))
        target = next(n for n in _nodes(keys, document)[place] if isinstance(n, dict))
        target[UNDESCRIBED] = 1
        try:
            load(tmp_path, document)
        except (ConfigError, DefinitionError) as exc:
            assert UNDESCRIBED in str(exc), (place, str(exc))
        else:
            accepted.append(place or "(top level)")
    assert accepted == [], "an undescribed key was accepted here"


@pytest.mark.parametrize("kind", KINDS)
def test_every_described_key_has_an_entry_on_its_page(kind: str) -> None:
    keys, _, _ = KINDS[kind]
    page = (REFERENCE / f"{kind}.md").read_text(encoding="utf-8")
    missing = [
        key.path
        for key in keys
        if f'<a id="{_anchor(key.path)}"></a>`{key.path}`' not in page
        and f"[`{key.path}`](#{key.path})" not in page
    ]
    assert missing == []
    assert len({_anchor(key.path) for key in keys}) == len(keys)  # anchors are unique


def test_the_readme_is_one_screen_whose_links_all_lead_somewhere() -> None:
    """The manual is the site; the README keeps what a newcomer needs first."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if not t.startswith(("http://", "https://"))]
    assert len(local) >= 10  # the picture, the two commands' pages, the site's sections
    assert [t for t in local if not (ROOT / t).is_file()] == []

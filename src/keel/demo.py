"""`keel demo`: the credit-limit flow end to end on synthetic applicants."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from keel.engine import open_engine
from keel.policy.text import format_value
from keel.scaffold import generate_applicants, init_project
from keel.scaffold.applicants import case_inputs

DEMO_SEED = 2026
SHOWN = 6


def run_demo(directory: Path, count: int, echo: Callable[[str], None]) -> bool:
    """Create (or recreate) the demo project, decide ``count`` applicants, verify the ledger."""
    marker = directory / ".keel-demo"
    if directory.exists() and marker.exists():
        shutil.rmtree(directory)  # only ever a folder this demo made itself
    echo(f"== Creating the credit-limit project in {directory} (training the risk model)")
    init_project(directory, "keel-demo")
    marker.write_text("created by keel demo; safe to delete\n")
    applicants = generate_applicants(count, DEMO_SEED)
    with open_engine(directory) as engine:
        runtime = engine.runtime("credit_limit")
        echo(
            f"   flow credit_limit, owner {runtime.flow.owner.name}, autonomy "
            f"{runtime.flow.autonomy}, policy {runtime.policy.version[:12]}"
        )
        echo(
            f"\n== Deciding {count} applicants (every decision is in the ledger before it returns)"
        )
        started = time.perf_counter()
        decisions = []
        for i, applicant in enumerate(applicants):
            decision = engine.decide(
                "credit_limit", case_inputs(applicant), subject_id=f"app-{i:05d}"
            )
            decisions.append(decision)
            if i < SHOWN:
                value = f" {decision.value:,.0f}" if decision.value is not None else ""
                echo(f"\n#{i} {decision.action}{value} [{decision.status}] — {decision.reason}")
                why = engine.explain(decision.id)["why"]
                for sentence in _highlights(why):
                    echo(f"     · {sentence}")
        elapsed = time.perf_counter() - started
        echo(f"\n== Summary: {count} decisions in {elapsed:.2f}s")
        by_outcome = Counter((d.action, d.status) for d in decisions)
        for (action, status), n in sorted(by_outcome.items()):
            echo(f"   {action:<8} {status:<15} {n:>5}")
        hits = Counter(h["name"] for d in decisions for h in d.guardrail_hits)
        for name, n in sorted(hits.items()):
            echo(f"   guardrail {name}: {n} hits")
        declined = next(
            (d for d in decisions if d.action == "decline" and d.rule == "high_risk"), None
        )
        if declined is not None:
            echo(f"\n== What would have changed decision {declined.id}? ({declined.reason})")
            fields = runtime.flow.fields
            search = engine.counterfactuals(declined.id)
            if search.why_none is not None:
                echo(f"   none: {search.why_none.message}")
            for cf in search.found:
                changes = ", ".join(
                    f"{fields[name].display} {format_value(old, fields[name].format)} → "
                    f"{format_value(new, fields[name].format)}"
                    for name, (old, new) in cf.changes.items()
                )
                echo(f"   {changes} ⇒ {cf.action}")
        echo("\n== Ledger")
        checkpoint = engine.checkpoint()
        echo(f"   signed checkpoint at entry {checkpoint.seq} (key {checkpoint.public_key[:16]}…)")
        report = engine.verify(checkpoint)
        if report.ok:
            echo(f"   ok: {report.entries} entries verified; head {report.head_hash[:16]}")
        else:
            echo(f"   FAILED at entry {report.bad_seq}: {report.problem}")
        echo(f"\nTry:  keel explain {decisions[0].id} --project {directory}")
        return report.ok


def _highlights(why: list[str]) -> list[str]:
    """The deciding rule, the guardrails, and the model's strongest reason."""
    picks = [s for s in why if s.startswith("Rule '") or "uardrail" in s or "fallback" in s]
    picks += [s for s in why if " the most " in s][:1]
    return picks

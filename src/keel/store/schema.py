"""The tables Keel stores, in SQLAlchemy Core. Alembic migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# One row per ledger entry. ``record`` is the canonical JSON the hash covers; the other
# columns are copies for querying and are themselves covered through ``record``.
ledger = Table(
    "ledger",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("flow", String(64)),
    Column("recorded_at", String(32), nullable=False),
    Column("record", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_ledger_record_id", "record_id", unique=True),
    Index("ix_ledger_flow_seq", "flow", "seq"),
    Index("ix_ledger_kind_flow_seq", "kind", "flow", "seq"),
)

# The chain head, one row. Appenders lock it, so one chain holds across processes.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Consumption of rate and exposure limits, for sliding windows that survive restarts.
guardrail_usage = Table(
    "guardrail_usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(64), nullable=False),
    Column("guardrail", String(64), nullable=False),
    Column("segment", String(128), nullable=False),
    Column("ts", Float, nullable=False),
    Column("amount", Float, nullable=False),
    Index("ix_guardrail_usage_ts", "ts"),
)

# Every policy version ever used, by content hash: what-if and audits rebuild it from here.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Personal and sensitive inputs, encrypted (AES-256-GCM). The ledger holds only salted
# digests of them, so deleting a row here erases the data without breaking the chain.
protected_values = Table(
    "protected_values",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
)

# One row per decision, written in the same transaction as its ledger entry: what the API
# filters and lists on. The ledger stays the record; this is its index.
decisions = Table(
    "decisions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("flow", String(64), nullable=False),
    Column("subject_id", String(128)),
    Column("action", String(64), nullable=False),
    Column("status", String(32), nullable=False),
    Column("recorded_at", String(32), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("guardrail_hits", Integer, nullable=False, server_default="0"),
    Column("fallback", Integer, nullable=False, server_default="0"),  # 1: a fallback decided
    Column("rollout", String(64)),  # the shadow or canary running beside it, if any
    Column("arm", String(16)),  # canary: candidate | active; shadow: shadow
    Column("shadow_action", String(64)),  # what the shadow candidate would have done
    Index("ix_decisions_flow_seq", "flow", "seq"),
    Index("ix_decisions_subject", "subject_id"),
    Index("ix_decisions_recorded_at", "recorded_at"),
    Index("ix_decisions_rollout", "rollout"),
)

# API keys: the secret is shown once; only its SHA-256 is kept (keys are 256-bit random).
api_keys = Table(
    "api_keys",
    metadata,
    Column("prefix", String(16), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("owner", String(128), nullable=False),
    Column("secret_sha256", String(64), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires_at", String(32)),
    Column("revoked_at", String(32)),
)

# Roles granted to principals ("key:<prefix>", "oidc:<issuer>#<subject>"), globally or on
# one flow or collection (NULL = all of them). ``flow`` holds the grant's scope: a
# collection's name for a knowledge role (``Grant.scoped`` reads it back).
grants = Table(
    "grants",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("principal", String(256), nullable=False),
    Column("role", String(32), nullable=False),
    Column("flow", String(64)),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
    Index("ix_grants_principal", "principal"),
)

# The groups an API key carries (``Principal.groups``), matched against documents' access
# lists as ``group:<name>``. Names follow ``keel.security.roles.GROUP_PATTERN``.
key_groups = Table(
    "key_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("prefix", String(16), nullable=False),
    Column("group_name", String(128), nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("created_by", String(128), nullable=False),
    UniqueConstraint("prefix", "group_name", name="uq_key_groups"),
)

# Who did what to what, and how it ended: every API request and every security event.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", String(32), nullable=False),
    Column("kind", String(16), nullable=False),  # request | security
    Column("principal", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_audit_time", "time"),
)

# The review queue: one row per decision that waits for, or received, a human's review
# (escalations and advisory cases, opened with the decision; overrides of final decisions,
# opened when made). The review itself is a ledger entry; this row is its index and state.
reviews = Table(
    "reviews",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("decision_seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # escalation | advisory | override
    Column("state", String(16), nullable=False),  # open | claimed | resolved
    Column("opened_at", String(32), nullable=False),
    Column("due_at", String(32)),
    Column("requested_by", String(256)),
    Column("proposed_action", String(64), nullable=False),
    Column("proposed_value", Float),
    Column("claimed_by", String(256)),
    Column("claimed_at", String(32)),
    Column("resolved_at", String(32)),
    Column("resolution", String(16)),  # approve | reject | change
    Column("final_action", String(64)),
    Column("final_value", Float),
    Column("reviewer", String(256)),
    Column("review_id", String(64)),  # the review's ledger record
    Column("breached_at", String(32)),  # when the deadline breach was recorded, once
    Column("requested_person", String(256)),  # the person who asked (four eyes)
    Index("ix_reviews_flow_state", "flow", "state", "opened_at"),
    Index("ix_reviews_due", "state", "due_at"),
)

# What really happened after a decision: one row per decision at most (a second, different
# report is refused). The report itself is an ``outcome`` ledger entry; this is its index.
outcomes = Table(
    "outcomes",
    metadata,
    Column("decision_id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("decision_seq", Integer, nullable=False),
    Column("label", String(64), nullable=False),
    Column("value", Float),
    Column("observed_at", String(32), nullable=False),
    Column("reported_at", String(32), nullable=False),
    Column("reported_by", String(256), nullable=False),
    Column("source", String(256), nullable=False),
    Column("record_id", String(64), nullable=False),
    Index("ix_outcomes_flow_seq", "flow", "decision_seq"),
)

# Proposed policy changes for a flow: the version proposed now (an edit replaces it and
# voids its approvals), who wrote it, and where it stands. Each step is a ledger event.
policy_changes = Table(
    "policy_changes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # proposed | approved | active
    Column("version", String(64), nullable=False),
    Column("base_version", String(64), nullable=False),  # active when proposed or edited
    Column("author", String(256), nullable=False),
    Column("editors", Text, nullable=False),  # JSON list: everyone who wrote a revision
    Column("reason", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("models", Text),  # JSON {signal: model version} the change pins
    # The persons behind author and editors (four eyes): None on rows older than persons.
    Column("author_person", String(256)),
    Column("editor_persons", Text),  # JSON list, the author first
    Index("ix_policy_changes_flow", "flow", "created_at"),
)

# Approvals of a change; only those of its current version count.
policy_approvals = Table(
    "policy_approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("change_id", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("approver", String(256), nullable=False),
    Column("role", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("approved_at", String(32), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("approver_person", String(256)),
    Index("ix_policy_approvals_change", "change_id"),
)

# Which policy version each flow used from when: the last row at or before an instant is
# the version active then. Appended by activations and rollbacks, never updated.
flow_activations = Table(
    "flow_activations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("activated_at", String(32), nullable=False),
    Column("activated_by", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # initial | inferred | activate | rollback
    Column("change_id", String(64)),
    Column("reason", Text, nullable=False),
    Column("record_id", String(64)),  # the policy_activated ledger event (none if inferred)
    Column("models", Text),  # JSON {signal: model version}; null: the project's model files
    Index("ix_flow_activations_flow", "flow", "activated_at"),
)

# A flow's autonomy level over time: the last row is in force. Seeded from the flow file;
# raised only with evidence and an approval, lowered at any time; never updated.
autonomy_changes = Table(
    "autonomy_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(64), nullable=False),
    Column("level", String(16), nullable=False),
    Column("previous", String(16)),
    Column("kind", String(16), nullable=False),  # initial | raise | lower
    Column("requested_by", String(256), nullable=False),
    Column("approved_by", String(256)),
    Column("changed_at", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text),  # JSON: the figures and criteria a raise was judged on
    Column("record_id", String(64), nullable=False),
    Index("ix_autonomy_changes_flow", "flow", "id"),
)

# Requests to raise a flow's autonomy, waiting for an approver.
autonomy_requests = Table(
    "autonomy_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("level", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # open | approved
    Column("requested_by", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("evidence", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("decided_at", String(32)),
    Column("decided_by", String(256)),
    Column("requested_person", String(256)),
)

# Candidate policy versions running beside the active one: in shadow (evaluated and
# recorded, never acted on) or as a canary (serving a sticky share of subjects), with the
# bounds that stop it automatically. At most one runs per flow.
rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("mode", String(16), nullable=False),  # shadow | canary
    Column("version", String(64), nullable=False),
    Column("change_id", String(64)),
    Column("share", Float, nullable=False),  # canary: share of subjects served (0 for shadow)
    Column("bounds", Text, nullable=False),  # JSON: max rates and the minimum sample
    Column("state", String(16), nullable=False),  # running | stopped | rolled_back | ended
    Column("started_at", String(32), nullable=False),
    Column("started_by", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("ended_at", String(32)),
    Column("ended_by", String(256)),
    Column("end_reason", Text),
    Index("ix_rollouts_flow_state", "flow", "state"),
)

# Model files a flow version pinned, by content hash ("sha256:…"): a rollback or another
# server loads exactly the model that was approved, whatever the project folder holds now.
model_artifacts = Table(
    "model_artifacts",
    metadata,
    Column("version", String(80), primary_key=True),
    Column("filename", String(256), nullable=False),
    Column("size", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Monitor runs: one row per run of a flow's monitors, scheduled or on demand. A scheduled
# run claims its slot (the number of its period since the epoch), so however many servers
# run the schedule, each period is judged once.
monitor_runs = Table(
    "monitor_runs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("slot", Integer),  # scheduled runs: floor(epoch seconds / every); else null
    Column("trigger", String(16), nullable=False),  # schedule | on_demand
    Column("requested_by", String(256), nullable=False),
    Column("started_at", String(32), nullable=False),
    Column("finished_at", String(32)),
    Column("state", String(16), nullable=False),  # running | judged | skipped | failed
    Column("current_since", String(32), nullable=False),
    Column("current_until", String(32), nullable=False),
    Column("baseline_since", String(32), nullable=False),
    Column("breaches", Text),  # JSON: the monitors that breached
    Column("result", Text),  # JSON: every figure the run computed
    Column("note", Text),  # why a run was skipped or failed
    UniqueConstraint("flow", "slot", name="uq_monitor_runs_slot"),
    Index("ix_monitor_runs_flow", "flow", "started_at"),
)

# Alarms: at most one firing alarm per flow and monitor (a breach while one fires is the
# same alarm seen again). It resolves after enough clean runs, or when a person resolves it.
alarms = Table(
    "alarms",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("monitor", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("state", String(16), nullable=False),  # firing | resolved
    Column("opened_at", String(32), nullable=False),
    Column("last_seen_at", String(32), nullable=False),
    Column("notified_at", String(32), nullable=False),
    Column("runs", Integer, nullable=False),  # runs that found the breach
    Column("suppressed", Integer, nullable=False),  # of those, not notified (cool-down)
    Column("clean_runs", Integer, nullable=False),  # consecutive clean runs since
    Column("summary", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: the figures of the latest breach
    Column("actions", Text, nullable=False),  # JSON: what the governor did about it
    Column("resolved_at", String(32)),
    Column("resolved_by", String(256)),
    Column("resolve_reason", Text),
    Column("record_id", String(64), nullable=False),
    Index("ix_alarms_flow_state", "flow", "state", "monitor"),
)

# Holds the governor (or a person) put on a flow: escalate every case to review, or pause
# automation. The newest row per flow is in force; ``none`` is a lifted hold.
flow_holds = Table(
    "flow_holds",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(64), nullable=False),
    Column("hold", String(16), nullable=False),  # none | escalate_all | pause
    Column("previous", String(16), nullable=False),
    Column("set_by", String(256), nullable=False),
    Column("at", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("alarm_id", String(64)),
    Column("evidence", Text),
    Column("record_id", String(64), nullable=False),
    Column("set_by_person", String(256)),  # None for Keel's own holds (the governor)
    Index("ix_flow_holds_flow", "flow", "id"),
)

# The webhook outbox: alarm notices and retraining requests, written in the transaction
# that records their cause and sent after it commits, until delivered or dead-lettered.
# ``target`` is the webhook's configured name, never its URL (which may carry credentials)
# or its secret: both are looked up in the flow file when the delivery is sent.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", String(64), primary_key=True),  # sent as X-Keel-Delivery: receivers dedupe
    Column("flow", String(64), nullable=False),
    Column("kind", String(32), nullable=False),  # alarm_notice | retraining_request
    Column("target", String(64), nullable=False),  # notify[0], ops, retrain.webhook …
    Column("alarm_id", String(64)),
    Column("payload", Text, nullable=False),  # JSON: what is sent (no personal values)
    Column("state", String(16), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", String(32), nullable=False),
    Column("lease_until", String(32)),  # a sender's claim, until then
    Column("leased_by", String(64)),
    Column("last_error", String(200)),  # "HTTP 503", "ConnectionRefusedError", "exit 2"
    Column("created_at", String(32), nullable=False),
    Column("delivered_at", String(32)),
    Index("ix_deliveries_due", "state", "next_attempt_at"),
    Index("ix_deliveries_flow", "flow", "created_at"),
)

# Token buckets of the shared rate limits (``api.rate_limits: shared``): one row per limit
# and caller, spent by a conditional UPDATE per request, so the limit holds across every
# worker process and node on this store. ``updated_at`` is the engine clock's seconds.
rate_limit_buckets = Table(
    "rate_limit_buckets",
    metadata,
    Column("key", String(320), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

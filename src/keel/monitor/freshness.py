"""Freshness of knowledge collections: a collection with a source folder and a sync limit
(``sync_limit_s``) is stale once its last successful sync is older than the limit.

A collection never synced counts from its creation. The limit is checked against the
engine's clock, so a test moves the clock instead of waiting. ``Monitoring.check_freshness``
raises one alarm per stale collection (``keel.monitor.alarms``) and resolves it after a sync.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from keel.errors import IntegrityError
from keel.knowledge import collections as colls
from keel.ledger.records import iso_time

log = logging.getLogger("keel.monitor")


def stale_collections(conn: Connection, now: float) -> dict[str, dict[str, Any]]:
    """The evidence of every stale collection, by name: its folder, limit, last sync and
    how long ago that was. A collection whose row disagrees with the ledger is left out
    here: loading it is refused and counted where it is used."""
    stale: dict[str, dict[str, Any]] = {}
    for name in colls.names(conn):
        try:
            coll = colls.load(conn, name)
        except IntegrityError as error:
            log.error("freshness of collection '%s' not checked: %s", name, error.message)
            continue
        limit, folder = coll.settings.sync_limit_s, coll.settings.source_folder
        if limit is None or folder is None:
            continue
        since = coll.last_synced_at if coll.last_synced_at is not None else coll.created_at
        age = now - since
        if age > limit:
            stale[name] = {
                "collection": name,
                "source_folder": folder,
                "sync_limit_s": limit,
                "last_synced_at": None
                if coll.last_synced_at is None
                else iso_time(coll.last_synced_at),
                "age_s": round(age, 3),
            }
    return stale

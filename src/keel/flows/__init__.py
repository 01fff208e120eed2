"""Flows: what a flow file defines (``flow.py``), how it is read (``parse.py``), its autonomy
levels (``autonomy.py``) and its ``monitoring:`` section (``monitoring.py``)."""

from keel.flows.autonomy import Autonomy
from keel.flows.flow import (
    FORMATS,
    Classification,
    Criteria,
    FairnessSpec,
    FieldSpec,
    Flow,
    OutcomeSpec,
    Owner,
    ReviewCapacity,
    ReviewSettings,
    SignalSpec,
)
from keel.flows.monitoring import MonitoringSpec
from keel.flows.parse import load_flow, parse_flow

__all__ = [
    "FORMATS",
    "Autonomy",
    "Classification",
    "Criteria",
    "FairnessSpec",
    "FieldSpec",
    "Flow",
    "MonitoringSpec",
    "OutcomeSpec",
    "Owner",
    "ReviewCapacity",
    "ReviewSettings",
    "SignalSpec",
    "load_flow",
    "parse_flow",
]

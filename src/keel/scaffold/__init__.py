"""The example projects `keel init` writes (credit-limit, credit-categorical), and the
demo's."""

from keel.scaffold.applicants import FEATURES, generate_applicants
from keel.scaffold.project import init_project

__all__ = ["FEATURES", "generate_applicants", "init_project"]

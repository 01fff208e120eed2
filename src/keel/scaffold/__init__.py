"""The credit-limit example project that `keel init` writes and `keel demo` runs."""

from keel.scaffold.applicants import FEATURES, generate_applicants
from keel.scaffold.project import init_project

__all__ = ["FEATURES", "generate_applicants", "init_project"]

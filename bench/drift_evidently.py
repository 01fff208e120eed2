"""The Evidently side of the drift bench, run in its own process and virtual environment
(``.venv-bench``, see ``bench/requirements-evidently.txt``) by ``bench/drift.py``.

    .venv-bench/bin/python bench/drift_evidently.py REFERENCE CURRENT PRESET OUT.json

Reads both Parquet files with pandas, runs ``Report([DataDriftPreset(...)],
include_tests=True)`` and writes, per column, the method, score, threshold and verdict
Evidently reports, with the wall time of the run and the process's peak memory.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings

PRESETS: dict[str, dict[str, str]] = {
    "default": {},
    "ks-chisquare": {"num_method": "ks", "cat_method": "chisquare"},
    "psi": {"method": "psi"},
}


def main() -> None:
    reference_path, current_path, preset, out = sys.argv[1:5]
    warnings.simplefilter("ignore")
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = pd.read_parquet(reference_path)
    current = pd.read_parquet(current_path)
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    numeric = [c for c in reference.columns if c.startswith("n")]
    categorical = [c for c in reference.columns if c.startswith("cat")]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

    started = time.perf_counter()
    report = Report([DataDriftPreset(**PRESETS[preset])], include_tests=True)
    snapshot = report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    result = snapshot.dict()
    elapsed = time.perf_counter() - started

    columns: dict[str, dict[str, object]] = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            columns[config["column"]] = {
                "method": config["method"],
                "threshold": config["threshold"],
                "value": metric["value"],
            }
    for test in result["tests"]:
        params = test["metric_config"]["params"]
        if params["type"].endswith("ValueDrift"):
            columns[params["column"]]["drift"] = test["status"] == "FAIL"
            columns[params["column"]]["method_name"] = params["method"]
    with open(out, "w") as handle:
        json.dump(
            {
                "seconds": elapsed,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "loaded_rss_kib": loaded_rss,
                "columns": columns,
            },
            handle,
        )


if __name__ == "__main__":
    main()

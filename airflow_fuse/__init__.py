"""airflow-fuse: bring back a table's lost objects from a versioned S3-compatible bucket."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("airflow-fuse")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow's ``ProvidersManager`` (entry point ``apache_airflow_provider``)."""
    return {
        "package-name": "airflow-fuse",
        "name": "Fuse fail-safe",
        "description": "Restore a table's lost objects from older versions in a versioned S3-compatible bucket.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Fuse fail-safe",
                "external-doc-url": "https://docs.databend.com/guides/security/fail-safe",
                "tags": ["aws"],
            }
        ],
        "hooks": [{"integration-name": "Fuse fail-safe",
                   "python-modules": ["airflow_fuse.hooks.versioned_s3", "airflow_fuse.hooks.databend"]}],
        "connection-types": [
            {"hook-class-name": "airflow_fuse.hooks.databend.DatabendHook", "connection-type": "databend"},
        ],
        "sensors": [{"integration-name": "Fuse fail-safe", "python-modules": ["airflow_fuse.sensors.versioning"]}],
        "operators": [
            {
                "integration-name": "Fuse fail-safe",
                "python-modules": [
                    "airflow_fuse.operators.scan",
                    "airflow_fuse.operators.amend",
                    "airflow_fuse.operators.shard",
                    "airflow_fuse.operators.verify",
                    "airflow_fuse.operators.undo",
                    "airflow_fuse.operators.inventory",
                ],
            }
        ],
        "triggers": [
            {"integration-name": "Fuse fail-safe", "python-modules": ["airflow_fuse.triggers.versioning"]}
        ],
    }

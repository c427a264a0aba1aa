"""Config shape of the harness, registered with Hydra's ConfigStore.

YAML files under `conf/` only choose values; every field, its type and its default live in
this package's schemas, so a typo in YAML or on the command line fails at startup naming the
key, and `validate` turns range errors into a `ConfigError` naming the field.

- `enums`: the top-level choices (job, where the server and the robots run, recording) and
  `ConfigError`;
- `sections`: the env, server, latency and benchmark sections, each checking its ranges;
- `schema`: `HarnessConfig`, the whole run;
- `run_checks`: the checks across sections (what one section's value asks of another);
- `load`: the ConfigStore, `validate` and the entry points' exit on a bad config.
"""

from harness.config.enums import ClientsAs, ConfigError, Job, Record, ServerMode
from harness.config.load import (
    check_choices_or_exit,
    check_tasks_or_exit,
    config_dir,
    group_options,
    register_configs,
    schema_choice_error,
    validate,
    validate_or_exit,
)
from harness.config.schema import HarnessConfig, check_resumable, transport_from_fields
from harness.config.sections import BenchConfig, EnvConfig, LatencyConfig, ServerConfig

__all__ = [
    "BenchConfig", "ClientsAs", "ConfigError", "EnvConfig", "HarnessConfig", "Job",
    "LatencyConfig", "Record", "ServerConfig", "ServerMode", "check_choices_or_exit",
    "check_resumable", "check_tasks_or_exit", "config_dir", "group_options",
    "register_configs", "schema_choice_error", "transport_from_fields", "validate",
    "validate_or_exit",
]

"""Everything about a command line that can be judged before Hydra starts a job.

Hydra reports a composition error (an unknown choice, a value its schema refuses) as a
multi-line message and exit status 1, after it has made a run directory; a refused `resume=`
still left a fresh directory under `outputs/`. This module composes the same config with
Hydra's compose API first, so a bad command line costs one line naming the problem, exit
status 2, and nothing written.

It is also the dry run: `python -m harness --check [-m] overrides...` composes and validates
every job the command would run (a sweep's points, including an experiment's
`hydra.sweeper.params`), prints one line per job, and runs nothing.
"""

from __future__ import annotations

import itertools
import logging
import re
from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from envs import task_ids
from harness.checks import check_loop_config, check_policy
from harness.config import (
    ConfigError,
    HarnessConfig,
    Job,
    config_dir,
    group_options,
    schema_choice_error,
    validate,
)

log = logging.getLogger("harness")

FLAGS_HYDRA_OWNS = ("--cfg", "-c", "--help", "-h", "--hydra-help", "--info", "-i",
                    "--resolve", "--package", "-p", "--run", "-r", "--config-path", "-cp",
                    "--config-name", "-cn", "--config-dir", "-cd", "--shell-completion",
                    "-sc", "--experimental-rerun", "--version")


class CommandLineError(ValueError):
    """A command line that would not run: the message is the one line to print."""


@dataclass(frozen=True)
class CheckedJob:
    """One job a command line would run, validated."""

    overrides: tuple[str, ...]
    config: HarnessConfig
    choices: dict[str, str]
    """Config group -> the YAML chosen (client=async_newest, not the mode it sets)."""

    def describe(self) -> str:
        """What the job runs, in one line."""
        c = self.config
        if c.job is Job.bench:
            return f"bench over {c.transport.kind}"
        tasks = task_ids(c.env.name, c.env.tasks)
        episodes = len(tasks) * c.env.episodes_per_task
        what = (f"{c.job.value}: {c.env.name} ({len(tasks)} task{'s' * (len(tasks) != 1)}, "
                f"{episodes} episode{'s' * (episodes != 1)}), policy={c.policy.name}")
        if c.job is Job.loop:
            what += "".join(f", {group}={self.choices.get(group)}"
                            for group in ("transport", "server", "client", "faults"))
        return what


def hydra_owns(argv: list[str]) -> bool:
    """True when `argv` holds a flag Hydra answers itself (`--help`, `--cfg job`, ...): those
    are passed through untouched."""
    return any(arg.split("=", 1)[0] in FLAGS_HYDRA_OWNS for arg in argv)


def job_overrides(overrides: list[str], *, multirun: bool) -> list[list[str]]:
    """The override list of every job `overrides` stands for: one list for a single run; for
    a multirun, the product of its sweeps (`a=x,y`), with an experiment's
    `hydra.sweeper.params` swept as Hydra's basic sweeper does (the command line wins).

    Raises:
        CommandLineError: an override Hydra cannot parse, or a sweep without `-m`.
    """
    parsed = _parse(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not multirun:
        raise CommandLineError(f"{sweeps[0].input_line}: a list of values sweeps, which needs "
                               "-m (python -m harness -m ...)")
    if not multirun:
        return [list(overrides)]
    given = {o.get_key_element() for o in parsed}
    base = compose_with_hydra([o.input_line for o in parsed if not o.is_sweep_override()])
    params = OmegaConf.select(base, "hydra.sweeper.params") or {}
    extra = [f"{key}={value}" for key, value in params.items() if key not in given]
    axes = []
    for override in [*parsed, *_parse(extra)]:
        if override.is_sweep_override():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            axes.append([override.input_line])
    return [list(point) for point in itertools.product(*axes)]


def check_job(overrides: list[str]) -> CheckedJob:
    """Compose and validate the job `overrides` names, as the harness would before running it.

    Raises:
        CommandLineError: naming the override or field at fault, in one line.
    """
    cfg = compose_with_hydra(overrides)
    choices = {str(k): str(v) for k, v in cfg.hydra.runtime.choices.items()}
    error = schema_choice_error(choices)
    if error is not None:
        raise CommandLineError(error)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        config = validate(cfg)
        if config.job is not Job.bench:
            task_ids(config.env.name, config.env.tasks)
        if config.job is Job.loop:
            check_loop_config(config)
        if config.job is Job.evaluate:
            check_policy(config)
        if config.job is not Job.bench and config.policy.name == "remote":
            _check_remote_convention(config)
    except (ConfigError, ValueError) as exc:
        raise CommandLineError(str(exc)) from None
    return CheckedJob(tuple(overrides), config, choices)


def _check_remote_convention(config: HarnessConfig) -> None:
    """The remote server's observation convention can be built from the robot's cameras (an
    openpi LIBERO convention reads two): said here, not from inside the server's start-up."""
    from policies.remote import protocol_entry
    from policies.remote.conventions import make_convention

    settings = config.policy
    size = config.env.image_size
    make_convention(settings.convention or protocol_entry(settings.protocol).default_convention,
                    cameras=tuple(config.env.cameras), image_size=(size, size))


def _parse(overrides: list[str]) -> list:
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as exc:
        raise CommandLineError(_one_line(exc)) from None


def compose_with_hydra(overrides: list[str]) -> DictConfig:
    """The config `overrides` compose to, with its `hydra` node (CommandLineError if not)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise CommandLineError(_one_line(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def _one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's messages, with their causes, folded into one line (their
    `full_key`, `object_type` and `reference_type` trailers dropped: the override already
    names the key); a missing group option lists the group's real choices."""
    missing = re.search(r"Could not find '([^']+)/([^'/]+)'", str(exc))
    if missing:
        group, name = missing.groups()
        return f"{group}={name}: no such choice; choose one of {', '.join(group_options(group))}"
    lines: list[str] = []
    while exc is not None:
        lines += [line.strip() for line in str(exc).splitlines() if line.strip()]
        exc = exc.__cause__ or exc.__context__
    kept = [line for line in dict.fromkeys(lines)
            if not line.startswith(("full_key:", "object_type=", "reference_type=",
                                    "Set the environment variable HYDRA_FULL_ERROR"))
            and "$VALUE" not in line and not re.fullmatch(r"'[^']*'", line)]
    message = ": ".join(kept) or type(exc).__name__
    return message.replace("Error merging override ", "").replace(
        "Could not override '", "'")

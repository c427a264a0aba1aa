"""Entry point: `python -m harness [overrides]` composes the config with Hydra and runs the job.

Jobs: `loop` (default) runs the closed loop: a policy server (its own process by default),
the client engine and the env, over the chosen transport; `evaluate` runs the policy on the
env in-process, with no transport, as the reference; `bench` measures transport round trips.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from harness.config import (
    HarnessConfig,
    Job,
    check_choices_or_exit,
    check_tasks_or_exit,
    config_dir,
    register_configs,
    validate_or_exit,
)
from harness.console import make_console
from harness.extras import missing_extra_message
from harness.preflight import (
    CommandLineError,
    check_job,
    compose_with_hydra,
    hydra_owns,
    job_overrides,
)

log = logging.getLogger("harness")

register_configs()


def run_bench(config: HarnessConfig, output_dir: Path) -> None:
    from harness.bench import transport as bench

    console = make_console()
    results = bench.run_benchmark(
        [config.transport], round_trips=config.bench.round_trips, warmup=config.bench.warmup,
        image_size=config.bench.image_size, jpeg_quality=config.bench.jpeg_quality,
        floors=config.bench.floors, console=console,
    )
    rows = bench.result_rows(results)
    bench.print_table(rows, console)
    bench.write_csv(rows, output_dir / config.bench.csv)
    log.info("wrote %s", output_dir / config.bench.csv)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run_job(cfg)
    except ModuleNotFoundError as exc:  # an extra not installed: one line with the command
        message = missing_extra_message(exc)
        if message is None:
            raise
        log.error("%s", message)
        if HydraConfig.get().mode is RunMode.MULTIRUN:
            raise JobFailed(message) from None
        sys.exit(2)


def run_job(cfg: DictConfig) -> None:
    """The job `cfg` names (see `main`)."""
    multirun = HydraConfig.get().mode is RunMode.MULTIRUN
    try:
        check_choices_or_exit(HydraConfig.get().runtime.choices)
        config = validate_or_exit(cfg)
        if config.job is not Job.bench:
            check_tasks_or_exit(config)
    except SystemExit as exc:
        if multirun:  # one invalid point of a sweep must not end the others (SystemExit would)
            raise JobFailed(f"invalid config (exit status {exc.code}; the reason is logged "
                            "above)") from None
        raise
    output_dir = Path(config.resume or HydraConfig.get().runtime.output_dir)
    if config.shard is not None and not config.resume:  # the shards of a config, side by side
        index, count = config.shard_of
        output_dir = output_dir / f"shard-{index}-of-{count}"
    if config.job is Job.bench:
        run_bench(config, output_dir)
    elif config.job is Job.evaluate:
        from harness.jobs.evaluate import run_evaluate

        run_evaluate(config, output_dir)
    else:
        from harness.jobs.loop import run_loop
        from harness.loop.orphan import in_worker_process, watch_parent_once
        from harness.loop.ports import PortRangeError, job_transport

        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("resume")
        resolved.pop("logger")  # where results are copied is no part of what produced them
        resolved.pop("record")  # nor which episodes are filmed: a resume may add videos
        overrides = [o for o in HydraConfig.get().overrides.task if not o.startswith("resume=")]
        job_overrides = list(overrides)
        if multirun and in_worker_process():
            watch_parent_once()  # a job whose sweep was killed must not hold its port
        if multirun:  # jobs of a sweep may run side by side: each listens on its own port
            try:
                transport = job_transport(config.transport, HydraConfig.get().job.num)
            except PortRangeError as exc:
                log.error("invalid config: %s", exc)
                raise JobFailed(str(exc)) from exc
            if transport is not config.transport:
                config = dataclasses.replace(config, transport=transport)
                overrides = [*(o for o in overrides if not o.startswith("transport.listen=")),
                             f"transport.listen={transport.listen}"]
        status = run_loop(config, output_dir, overrides, resolved_config=resolved,
                          job_overrides=job_overrides)
        if not multirun:
            sys.exit(status)
        if status:  # one failed job of a sweep must not end the others (SystemExit would)
            raise JobFailed(f"{output_dir}: exit status {status} (see its log)")


class JobFailed(RuntimeError):
    """A job of a multirun sweep ended with a failing exit status."""


def cli(argv: list[str] | None = None) -> None:
    """`python -m harness`: `--check` lists and validates the jobs of a command line and runs
    nothing; otherwise the command line is judged first (`harness.preflight`: one line and
    exit status 2 for what Hydra would print as a multi-line error after making a run
    directory), then Hydra runs it. Flags Hydra answers itself pass straight through."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv in (["--help"], ["-h"]):
        from harness.help import help_for_defaults

        sys.stdout.write(help_for_defaults(compose_with_hydra))
        return
    if "--check" in argv:
        sys.exit(run_check([arg for arg in argv if arg != "--check"]))
    if not hydra_owns(argv):
        multirun = "-m" in argv or "--multirun" in argv
        overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
        try:
            points = job_overrides(overrides, multirun=multirun)
            if not multirun:  # a sweep's invalid point fails alone, as its job (JobFailed)
                check_job(points[0])
        except CommandLineError as exc:
            _say_and_exit(f"invalid config: {exc}")
        except ModuleNotFoundError as exc:
            message = missing_extra_message(exc)
            if message is None:
                raise
            _say_and_exit(message)
    main()


def run_check(argv: list[str]) -> int:
    """The dry run: one line per job the command line would run, valid or why not; 0 if
    every job is valid, else 2. Nothing is started or written."""
    multirun = "-m" in argv or "--multirun" in argv
    overrides = [arg for arg in argv if arg not in ("-m", "--multirun")]
    console = make_console()
    try:
        points = job_overrides(overrides, multirun=multirun)
    except CommandLineError as exc:
        console.print(f"[red]invalid[/red] {escape(str(exc))}", markup=True, highlight=False)
        return 2
    failed = 0
    for point in points:
        name = escape(" ".join(point) or "(defaults)")  # overrides hold [lists]: not markup
        try:
            line = f"[green]ok[/green]      {name}: {escape(check_job(point).describe())}"
        except CommandLineError as exc:
            failed += 1
            line = f"[red]invalid[/red] {name}: {escape(str(exc))}"
        except ModuleNotFoundError as exc:
            failed += 1
            line = f"[red]invalid[/red] {name}: {escape(missing_extra_message(exc) or str(exc))}"
        console.print(line, markup=True, highlight=False, soft_wrap=True)
    console.print(f"{len(points)} job{'s' * (len(points) != 1)}, {failed} invalid; "
                  "nothing was run", highlight=False)
    return 2 if failed else 0


def _say_and_exit(message: str) -> None:
    logging.basicConfig(format="[harness][ERROR] - %(message)s")
    log.error("%s", message)
    sys.exit(2)


if __name__ == "__main__":
    cli()

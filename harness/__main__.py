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


if __name__ == "__main__":
    main()

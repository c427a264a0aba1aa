"""Entry point: `python -m harness [overrides]` composes the config with Hydra and runs the job.

Until the closed loop lands, the job is the transport benchmark for the chosen transport.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.config import ConfigError, config_dir, register_configs, validate

log = logging.getLogger("harness")

register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        config = validate(cfg)
    except ConfigError as exc:
        log.error("invalid config: %s", exc)
        sys.exit(2)
    from harness import bench

    output_dir = Path(HydraConfig.get().runtime.output_dir)
    console = bench.make_console()
    results = bench.run_benchmark(
        [config.transport], round_trips=config.bench.round_trips, warmup=config.bench.warmup,
        image_size=config.bench.image_size, jpeg_quality=config.bench.jpeg_quality,
        floors=config.bench.floors, console=console,
    )
    rows = bench.result_rows(results)
    bench.print_table(rows, console)
    bench.write_csv(rows, output_dir / config.bench.csv)
    log.info("wrote %s", output_dir / config.bench.csv)


if __name__ == "__main__":
    main()

"""`python -m reports DIR [--out OUT] [--no-html]`: aggregate a run or multirun directory into
one row per config (configs.csv/.parquet, episodes.csv/.parquet) and one offline HTML report
(report.html), and print the config table.

Exit status: 0, also for a partial sweep (what is missing is logged); 1 with a one-line
error if DIR holds no run or a file in it cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from harness.extras import missing_extra_message

log = logging.getLogger("reports")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m reports",
        description="Aggregate a harness run directory, or a multirun directory of many jobs "
                    "(shards of one config merged), into one row per config: "
                    "configs.csv/.parquet and episodes.csv/.parquet, plus a self-contained "
                    "HTML report that opens offline. Missing configs, shards and episodes are "
                    "logged; a partial sweep still exits 0.")
    parser.add_argument("path", type=Path,
                        help="a run directory (python -m harness) or a multirun directory "
                             "(python -m harness -m ...); searched for job directories")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the tables and report.html (default: PATH)")
    parser.add_argument("--html", action=argparse.BooleanOptionalAction, default=True,
                        help="write report.html (default: on; --no-html skips it)")
    parser.add_argument("--timeline-episodes", type=int, default=3, metavar="N",
                        help="episodes per config drawn on the state timeline (default: 3; "
                             "failed and most-blind first)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2: an extra is not installed, said in one line
    with its install command)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return report(args)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc)
        if message is None:
            raise
        log.error("%s", message)
        return 2


def report(args: argparse.Namespace) -> int:
    """Load the sweep at `args.path`, write its tables and report, print its configs."""
    from reports.console import print_configs  # here: a missing extra is caught by main
    from reports.sweep import NoRunsError, load_sweep, write_tables

    try:
        sweep = load_sweep(args.path)
    except (NoRunsError, ValueError) as exc:
        log.error("%s", exc)
        return 1
    out = args.out or args.path
    if (out / "config.json").is_file():  # a job's own directory: its episodes.csv is the job's
        out = out / "report"
        log.info("%s is a job's own directory: the report goes to %s", args.out or args.path,
                 out)
    for path in write_tables(sweep, out):
        log.info("wrote %s", path)
    if args.html:
        from reports.html import write_report

        log.info("wrote %s", write_report(sweep, out / "report.html",
                                          timeline_episodes=args.timeline_episodes))
    print_configs(sweep)
    if not sweep.missing.empty:
        log.warning("partial sweep: %d config(s), %d shard(s), %d episode(s) missing "
                    "(listed above)", len(sweep.missing.configs), len(sweep.missing.shards),
                    len(sweep.missing.episodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One row per config: its episodes' outcomes, round trips and fail-safe figures, from the
merged episode rows, their events and their traces' round trips (`reports.sweep` reads
those). The figures are the ones a run's own `summary.json` holds
(`ResultsStore.summarize`), computed over all of a config's jobs instead of one job: the
fail-safe ones by the same function (`harness.results.failsafe.summarize_failsafe`), so a
config run as one job reads the same here as in its summary.
"""

from __future__ import annotations

import pandas as pd

from harness.results.failsafe import summarize_failsafe
from harness.results.joins import summarize_joins

TOTALS = {"invariant_breaches": "breaches", "requests_lost": "requests_lost",
          "sessions_reopened": "sessions_reopened", "dead_episodes": "dead"}
"""Config column: the episode column summed into it (a row older than the column: 0)."""

LATENCY_QUANTILES = {0.5: "latency_p50_s", 0.95: "latency_p95_s", 0.99: "latency_p99_s"}

SPLIT = {"network_s": "network_p50_s", "server_queue_s": "server_queue_p50_s",
         "server_infer_s": "server_infer_p50_s"}
"""The round trip's parts (`reports.traces.round_trips`) and the config column of each
one's median."""


def outcome_columns(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per config: episodes, successes, success rate with its Wilson 95% interval
    (statsmodels), and the `TOTALS`."""
    rows = episodes.reindex(columns=["config", "success", *TOTALS.values()])
    rows["dead"] = episodes.get("termination", pd.Series(index=episodes.index)).eq("dead")
    rows["success"] = rows["success"].fillna(False).astype(bool)
    table = rows.groupby("config").agg(
        episodes=("success", "size"), successes=("success", "sum"),
        **{column: (source, "sum") for column, source in TOTALS.items()})
    table = table.astype(int)
    table["success_rate"] = table["successes"] / table["episodes"]
    from statsmodels.stats.proportion import proportion_confint  # the reports extra

    low, high = proportion_confint(table["successes"], table["episodes"], alpha=0.05,
                                   method="wilson")
    table["wilson95_low"], table["wilson95_high"] = low, high
    return table


def latency_columns(round_trips: pd.DataFrame, budget_s: pd.Series) -> pd.DataFrame:
    """Per config: latency p50/p95/p99 over every round trip of its traces, the share of
    round trips over its budget (`budget_s`, indexed by config), and the median of each
    part of the round trip (NaN where the traces do not split it)."""
    grouped = round_trips.groupby("config")
    table = (grouped["latency_s"].quantile(list(LATENCY_QUANTILES)).unstack()
             .rename(columns=LATENCY_QUANTILES)
             .reindex(columns=list(LATENCY_QUANTILES.values())))  # also with no round trip
    over = round_trips["latency_s"] > round_trips["config"].map(budget_s)
    table["over_budget_share"] = over.groupby(round_trips["config"]).mean()
    return table.join(grouped[list(SPLIT)].median().rename(columns=SPLIT))


def failsafe_columns(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per config: `summarize_failsafe` of its rows and their events (detection and
    recovery over fault windows, blind time and motion, stale actions)."""
    figures = {config: summarize_failsafe(rows, [e for listed in rows["events"]
                                                 if isinstance(listed, list) for e in listed])
               for config, rows in episodes.groupby("config")}
    columns = list(summarize_failsafe(pd.DataFrame(), []))  # the same with no episode
    return pd.DataFrame.from_dict(figures, orient="index", columns=columns).apply(
        pd.to_numeric).astype(float)


def motion_columns(episodes: pd.DataFrame) -> pd.DataFrame:
    """Per config: the median episode length and how smoothly chunks join
    (`harness.results.joins.summarize_joins`), as a run's own summary has them."""
    rows = episodes.reindex(columns=["config", "steps", "join_jump", "inside_jump"])
    rows["steps"] = pd.to_numeric(rows["steps"], errors="coerce")
    figures = {config: {"steps_median": group["steps"].median(), **summarize_joins(group)}
               for config, group in rows.groupby("config")}
    columns = ["steps_median", *summarize_joins(pd.DataFrame())]
    return pd.DataFrame.from_dict(figures, orient="index", columns=columns).astype(float)


def mechanism_column(events: pd.DataFrame) -> pd.Series:
    """Per config: the fault mechanisms its events name (`SIGSTOP, SIGCONT`, `modelled`,
    ...), sorted, comma-joined, counted as the run summary counts them (`ready` phases
    excluded)."""
    if "mechanism" not in events:
        return pd.Series(dtype=str, name="fault_mechanisms")
    named = events[events["mechanism"].notna()
                   & events.reindex(columns=["phase"])["phase"].ne("ready")]
    return (named.groupby("config")["mechanism"]
            .agg(lambda m: ", ".join(sorted(set(m)))).rename("fault_mechanisms"))


def config_table(base: pd.DataFrame, episodes: pd.DataFrame, events: pd.DataFrame,
                 round_trips: pd.DataFrame) -> pd.DataFrame:
    """Join every figure onto `base` (indexed by config, with `latency_budget_s`): a config
    with no episode yet keeps its row, with 0 episodes and NaN figures."""
    table = base.join(outcome_columns(episodes)).join(
        latency_columns(round_trips, base["latency_budget_s"]))
    table = table.join(failsafe_columns(episodes)).join(mechanism_column(events))
    table = table.join(motion_columns(episodes))
    counts = ["episodes", "successes", *TOTALS, "faults_undetected", "faults_unrecovered",
              "stale_actions"]  # sums: 0 over no episode
    table[counts] = table[counts].fillna(0).astype(int)
    table["missing_episodes"] = (table["expected_episodes"] - table["episodes"]).clip(lower=0)
    return table

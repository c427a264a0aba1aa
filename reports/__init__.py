"""Reports over harness runs: `load_sweep` reads a run or multirun directory into one row
per config (shards merged, missing configs and episodes said), `reports.html` renders the
offline HTML report, `python -m reports DIR` does both and writes the tables.

    sweep.py      load_sweep -> Sweep (configs, episodes, events, round trips, missing)
    jobs.py       job directories and what each says it ran (overrides, resolved config)
    overrides.py  Hydra overrides as config identity; a multirun's expected points
    episodes.py   episode rows merged across shards, expected episodes, control period
    traces.py     the per-tick trace columns a report reads
    aggregate.py  the per-config figures
    colours.py    one colour per transport / client mode, heat-map scales
    figures.py    the plotly figures; timeline.py the state timeline; tables.py the HTML
                  tables (episode videos linked); html.py the page; console.py the terminal
"""

from reports.sweep import Missing, NoRunsError, Sweep, load_sweep, write_tables

__all__ = ["Missing", "NoRunsError", "Sweep", "load_sweep", "write_tables"]

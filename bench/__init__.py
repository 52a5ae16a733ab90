"""`make bench`: our hot paths and real peers (pgqueuer, a raw-SQL floor) measured side by side
in one run on one PostgreSQL; see `python -m bench --help` and README "Performance"."""

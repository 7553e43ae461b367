"""The Postgres store: every state change of jobs, executions and workers.

Each transition is one guarded statement (or one short transaction): the expected
current state is in the WHERE clause, so a late, duplicate or racing writer changes
nothing and learns so from the row count. The guards are the sets of `states.py`, spelled
in SQL by `guards` only.

- `jobs`: submit (idempotent), read, list, cancel; `dead_letters`: list and redrive.
- `executions`: the hot path of a worker's stream: claim, start, settle, leases.
- `repairs`: the scheduler's queries for what is due, expired, timed out or orphaned.
- `workers`: registration, heartbeats, offline marking; `fence`: the leader's epoch.
- `rows`: the plain row types returned.
"""

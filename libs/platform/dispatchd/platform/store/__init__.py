"""The Postgres store: every state change of jobs, executions and workers.

Each transition is one guarded statement (or one short transaction): the expected
current state is in the WHERE clause, so a late, duplicate or racing writer changes
nothing and learns so from the row count.
"""

"""What a database holds, table by table: row count and a content checksum, comparable across servers.

The checksum of a table is md5 over its rows' text forms joined in primary-key order (row
text order when it has none), read with TimeZone UTC, so two servers holding the same rows
give the same digest whatever their settings. Invariant: `differences(a, b)` is empty only
if both list the same tables with the same counts and digests.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

TABLES = """
SELECT c.relname, quote_ident(c.relname) AS quoted,
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY array_position(i.indkey, a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = c.oid AND i.indisprimary) AS pk
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'r'
 ORDER BY c.relname
"""


@dataclass(frozen=True)
class Table:
    rows: int
    md5: str


async def take(conn: asyncpg.Connection) -> dict[str, Table]:
    """The manifest as `conn` sees it (inside the caller's snapshot, if it holds one)."""
    await conn.execute("SET TimeZone = 'UTC'")
    found = {}
    for table in await conn.fetch(TABLES):
        order = table["pk"] or "t::text"
        row = await conn.fetchrow(
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY {order}), '')) AS sum"
            f" FROM {table['quoted']} AS t"
        )
        found[str(table["relname"])] = Table(int(row["n"]), str(row["sum"]))
    return found


def differences(expected: dict[str, Table], actual: dict[str, Table]) -> list[str]:
    """Every table whose presence, row count or checksum differs, in words."""
    found = []
    for name in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(name), actual.get(name)
        if want is None or got is None:
            found.append(f"{name}: only in the {'restored' if want is None else 'backed-up'} database")
        elif want.rows != got.rows:
            found.append(f"{name}: {want.rows} rows backed up, {got.rows} restored")
        elif want.md5 != got.md5:
            found.append(f"{name}: checksum {want.md5} backed up, {got.md5} restored")
    return found

"""The speed benchmark's peer: DuckDB running the reference scoring over gz CloudFront logs.

Usage: duckdb_reference.py SQL_FILE THREADS WINDOW_START WINDOW_END FILE...
Prints the number of flagged sessions, then one `session_id score` per line.
"""
import os
import sys

import duckdb

sql_file, threads, start, end, *files = sys.argv[1:]
sql = open(sql_file).read()
# One read_csv per file, joined with UNION ALL (see the SQL file's header for why).
head, rest = sql.split("WITH raw AS (", 1)
raw_select, tail = rest.split("\n),", 1)
union = "\n    UNION ALL\n".join(raw_select.replace("{file}", "'" + f.replace("'", "''") + "'") for f in files)
sql = head + "WITH raw AS (" + union + "\n)," + tail
sql = sql.replace("{window_start}", str(int(start))).replace("{window_end}", str(int(end)))
con = duckdb.connect()
con.execute(f"SET threads = {int(threads)}")
# Generous, and with somewhere to spill: the aggregation otherwise grows to all of RAM.
con.execute("SET memory_limit = '4GB'")
con.execute("SET temp_directory = '" + os.environ.get("TMPDIR", "/tmp") + "/revokd-bench-duckdb'")
rows = con.execute(sql).fetchall()
print(len(rows))
for session_id, score in rows:
    print(session_id, score)

"""The speed benchmark's peer: DuckDB running the reference scoring over gz CloudFront logs.

Usage: duckdb_reference.py SQL_FILE THREADS WINDOW_START WINDOW_END FILE...
Prints the number of flagged sessions, then one `session_id score` per line.
"""
import os
import sys

import duckdb

sql_file, threads, start, end, *files = sys.argv[1:]
sql = open(sql_file).read()
files_sql = "[" + ",".join("'" + f.replace("'", "''") + "'" for f in files) + "]"
sql = sql.replace("{files}", files_sql).replace("{window_start}", str(int(start))).replace("{window_end}", str(int(end)))
con = duckdb.connect()
con.execute(f"SET threads = {int(threads)}")
# Generous, and with somewhere to spill: the aggregation otherwise grows to all of RAM.
con.execute("SET memory_limit = '4GB'")
con.execute("SET temp_directory = '" + os.environ.get("TMPDIR", "/tmp") + "/revokd-bench-duckdb'")
rows = con.execute(sql).fetchall()
print(len(rows))
for session_id, score in rows:
    print(session_id, score)

"""Drives an archive command like PostgreSQL's archiver: one `/bin/sh -c` per segment marked
.ready in DATA/pg_wal/archive_status, in name order, .ready renamed to .done after a success.

    python3 bench/archiver.py DATA 'COMMAND %p'

Prints: segments archived, wall seconds, CPU seconds of every child (sh and the command).
"""
import os, resource, subprocess, sys, time

data, cmd = sys.argv[1], sys.argv[2]
st = os.path.join(data, "pg_wal", "archive_status")
os.chdir(data)
n, t0 = 0, time.monotonic()
while True:
    ready = sorted(f[:-6] for f in os.listdir(st) if f.endswith(".ready"))
    if not ready:
        break
    for name in ready:
        c = cmd.replace("%p", "pg_wal/" + name).replace("%f", name)
        if subprocess.run(["/bin/sh", "-c", c]).returncode != 0:
            sys.exit(f"archive command failed for {name}")
        os.rename(os.path.join(st, name + ".ready"), os.path.join(st, name + ".done"))
        n += 1
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{n} {time.monotonic() - t0:.3f} {ru.ru_utime + ru.ru_stime:.3f}")

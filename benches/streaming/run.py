"""benches/streaming.sh: STREAMING=off against STREAMING=on on one large transaction.

Started by benches/streaming.sh (which builds the release binary and sets DBMAZZ_BIN, ROWS, REPS,
SPILL_MEM, PGBIN). One throwaway PostgreSQL 15 cluster (fsync off, default
logical_decoding_work_mem of 64 MB) serves every run; each run has its own slot and database.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

PGBIN = os.environ["PGBIN"]
DBMAZZ = os.environ["DBMAZZ_BIN"]
ROWS = int(os.environ["ROWS"])
REPS = int(os.environ["REPS"])
SPILL_MEM = os.environ.get("SPILL_MEM") or ""
SMALL_AFTER = 5


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "pg")
        self.port = free_port()

    def as_pg(self, *cmd):
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True,
                       stdout=subprocess.DEVNULL)

    def start(self):
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o700)
        shutil.chown(self.dir, "postgres")
        self.as_pg(f"{PGBIN}/initdb", "-D", self.dir, "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--locale=C.UTF-8")
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as fh:
            fh.write(f"""
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = ''
wal_level = logical
fsync = off
synchronous_commit = off
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
autovacuum = off
""")
        self.as_pg(f"{PGBIN}/pg_ctl", "-D", self.dir, "-l", os.path.join(self.dir, "log"),
                   "-w", "-t", "120", "start")

    def stop(self):
        if os.path.exists(os.path.join(self.dir, "postmaster.pid")):
            self.as_pg(f"{PGBIN}/pg_ctl", "-D", self.dir, "-m", "immediate", "-w", "stop")

    def psql(self, db, sql):
        r = subprocess.run([f"{PGBIN}/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db,
                            "-c", sql], check=True, capture_output=True, text=True)
        return r.stdout.strip()

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}?sslmode=disable"


class Tail:
    """Follows the NDJSON file and notes when each small-table key first appears."""

    def __init__(self, path):
        self.path = path
        self.pos = 0
        self.partial = b""
        self.seen = {}
        self.big_end = None

    def poll(self):
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                chunk = fh.read(64 << 20)
        except FileNotFoundError:
            return
        if not chunk:
            return
        now = time.monotonic()
        self.pos += len(chunk)
        data = self.partial + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = data
            return
        self.partial = data[cut + 1:]
        start = 0
        while True:
            i = data.find(b'"table":"small"', start, cut)
            if i < 0:
                break
            line_end = data.find(b"\n", i)
            line_start = data.rfind(b"\n", 0, i) + 1
            row = json.loads(data[line_start:line_end])
            key = row["key"]["id"]
            self.seen.setdefault(key, now)
            if key == -1:
                self.big_end = now
            start = line_end + 1


def dir_bytes(d):
    total = 0
    try:
        for e in os.scandir(d):
            try:
                total += e.stat().st_size
            except FileNotFoundError:
                pass
    except FileNotFoundError:
        pass
    return total


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_once(pg, tmp, mode, n):
    db = f"b_{mode}_{n}"
    slot = f"bench_{mode}_{n}"
    pg.psql("postgres", f"CREATE DATABASE {db}")
    pg.psql(db, "CREATE TABLE big (id bigint PRIMARY KEY, a int, b text);"
                "CREATE TABLE small (id int PRIMARY KEY, note text)")
    out = os.path.join(tmp, f"{db}.ndjson")
    spill = os.path.join(tmp, f"spill-{db}")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": pg.url(db), "TABLES": "big,small", "SLOT_NAME": slot,
        "PUBLICATION_NAME": f"pub_{db}", "SINK_TYPE": "ndjson", "NDJSON_PATH": out,
        "FLUSH_INTERVAL_MS": "100", "GRPC_PORT": "off", "HEARTBEAT_INTERVAL_MS": "0",
        "STREAMING": mode, "SPILL_DIR": spill, "RUST_LOG": "warn",
    }
    if SPILL_MEM:
        env["SPILL_MEMORY_BYTES"] = SPILL_MEM
    errlog = open(os.path.join(tmp, f"{db}.log"), "wb")
    proc = subprocess.Popen([DBMAZZ], env=env, stdout=subprocess.DEVNULL, stderr=errlog)
    try:
        deadline = time.monotonic() + 60
        while pg.psql(db, f"SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{slot}' "
                          "AND active") != "1":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"dbmazz did not start streaming; see {db}.log")
            time.sleep(0.1)

        tail = Tail(out)
        peak_spill = 0
        stop = threading.Event()
        commits = {}
        big_done = threading.Event()

        def small_during():
            k = 1
            while not big_done.is_set():
                pg.psql(db, f"INSERT INTO small VALUES ({k}, 'during')")
                commits[k] = time.monotonic()
                k += 1
                big_done.wait(0.2)

        hwm_at_commit = {}

        def big():
            # One psql session: the small transactions stop before the big one commits, so
            # "during" ones all commit before it and "after" ones after it.
            sess = subprocess.Popen([f"{PGBIN}/psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                                     "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", db],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            sess.stdin.write(f"BEGIN; INSERT INTO big SELECT g, g, repeat(md5(g::text), 10) "
                             f"FROM generate_series(1, {ROWS}) g; "
                             "INSERT INTO small VALUES (-1, 'big end');\n\\echo inserted\n")
            sess.stdin.flush()
            assert sess.stdout.readline().strip() == "inserted"
            big_done.set()
            threads[0].join()
            sess.stdin.write("COMMIT;\n\\echo committed\n")
            sess.stdin.flush()
            assert sess.stdout.readline().strip() == "committed"
            commits[-1] = time.monotonic()
            hwm_at_commit["kib"] = vm_hwm_kib(proc.pid)
            sess.stdin.close()
            sess.wait()
            for j in range(SMALL_AFTER):
                key = 1_000_000 + j
                pg.psql(db, f"INSERT INTO small VALUES ({key}, 'after')")
                commits[key] = time.monotonic()

        t0 = time.monotonic()
        threads = [threading.Thread(target=small_during), threading.Thread(target=big)]
        for t in threads:
            t.start()
        while True:
            tail.poll()
            peak_spill = max(peak_spill, dir_bytes(spill))
            if not threads[1].is_alive() and all(k in tail.seen for k in list(commits)):
                break
            if proc.poll() is not None:
                raise SystemExit(f"dbmazz exited; see {db}.log")
            if time.monotonic() - t0 > 3600:
                raise SystemExit("no result within an hour")
            time.sleep(0.02)
        for t in threads:
            t.join()
        rss = vm_hwm_kib(proc.pid)
        stats = pg.psql(db, "SELECT spill_bytes, spill_txns, stream_bytes, stream_txns FROM "
                            f"pg_stat_replication_slots WHERE slot_name = '{slot}'")
        wal = pg.psql(db, "SELECT pg_size_pretty(pg_current_wal_lsn() - '0/0')")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        errlog.close()
    spill_b, spill_t, stream_b, stream_t = (int(x) for x in stats.split("|"))
    during = [tail.seen[k] - commits[k] for k in commits if 0 < k < 1_000_000]
    after = [tail.seen[k] - commits[k] for k in commits if k >= 1_000_000]
    rows = {
        "mode": mode, "pg_spill_bytes": spill_b, "pg_spill_txns": spill_t,
        "pg_stream_bytes": stream_b, "pg_stream_txns": stream_t,
        "big_commit_to_sink_s": round(tail.big_end - commits[-1], 2),
        "small_during_max_delay_s": round(max(during), 2) if during else None,
        "small_during_count": len(during),
        "small_after_max_delay_s": round(max(after), 2),
        "peak_rss_mib": round(rss / 1024, 1),
        "peak_rss_before_commit_mib": round(hwm_at_commit["kib"] / 1024, 1),
        "peak_spill_dir_mib": round(peak_spill / 1048576, 1),
        "wal_total": wal,
    }
    os.remove(out)
    shutil.rmtree(spill, ignore_errors=True)
    pg.psql("postgres", f"DROP DATABASE {db} WITH (FORCE)")
    return rows


def main():
    tmp = tempfile.mkdtemp(prefix="dbmazz-streaming-bench-")
    os.chmod(tmp, 0o755)
    pg = Cluster(tmp)
    results = []
    try:
        pg.start()
        order = []
        for r in range(REPS):
            order += ["off", "on"] if r % 2 == 0 else ["on", "off"]
        for n, mode in enumerate(order):
            log(f"run {n + 1}/{len(order)}: STREAMING={mode}, {ROWS} rows")
            res = run_once(pg, tmp, mode, n)
            log(json.dumps(res))
            results.append(res)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    cols = ["mode", "pg_spill_bytes", "pg_stream_bytes", "big_commit_to_sink_s",
            "small_during_max_delay_s", "small_after_max_delay_s", "peak_rss_before_commit_mib",
            "peak_rss_mib",
            "peak_spill_dir_mib"]
    print(f"\nOne transaction of {ROWS:,} rows; SPILL_MEMORY_BYTES="
          f"{SPILL_MEM or 'default'}; dbmazz {DBMAZZ}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()

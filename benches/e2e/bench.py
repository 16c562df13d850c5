#!/usr/bin/env python3
"""End-to-end catch-up benchmark: dbmazz against pg_recvlogical on the same WAL.

Driven by benches/e2e.sh, which installs what this needs, builds the binaries, makes the temp
directory and cleans up. This file does the measuring:

  per workload (bulk, oltp, mixed), in a fresh throwaway PostgreSQL 15 cluster:
    1. create the tables and ONE publication, then a template pgoutput slot;
    2. run the workload, then one tiny "end marker" transaction;
    3. one in-server pass (pg_logical_slot_get_binary_changes on a copy of the template) counts
       the rows/messages/bytes and yields the exact end LSN of the marker's commit (END);
    4. for every repetition and every consumer: copy the template slot, start the consumer,
       time it until it has everything up to END, drop the copy.
         pg_recvlogical  --endpos=END, exits by itself (exit time measured with wait4)
         dbmazz          polled: pg_replication_slots.confirmed_flush_lsn >= END (every 20 ms),
                         then SIGTERM (it drains and exits 0)
  plus: dbmazz idle RSS/CPU, and commit->ack latency under ~10k rows/s pgbench load.

Everything is written to one JSON file; benches/e2e/report.py turns it into markdown.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import psycopg2
import psycopg2.extensions

HZ = os.sysconf("SC_CLK_TCK")
DB = "bench"
PUB = "e2e_pub"
TEMPLATE = "e2e_template"
POLL_S = 0.02

ARGS = None
LIVE = []  # Popen objects still to be reaped on exit


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def lsn_int(s):
    hi, lo = s.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_str(v):
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def note_pid(pid):
    """Record a pid for e2e.sh's exit trap (it kills only pids listed here)."""
    with open(os.path.join(ARGS.tmp, "pids"), "a") as fh:
        fh.write(f"{pid}\n")


def spawn(cmd, **kw):
    p = subprocess.Popen(cmd, **kw)
    LIVE.append(p)
    note_pid(p.pid)
    return p


def reap_all():
    for p in LIVE:
        if p.returncode is None:
            try:
                os.kill(p.pid, signal.SIGKILL)
                os.waitpid(p.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            p.returncode = -9


# ---------------------------------------------------------------- /proc sampling

def proc_ticks(pid):
    """utime+stime of a process (all threads), in clock ticks; None if gone."""
    try:
        st = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    f = st[st.rindex(")") + 2:].split()
    return int(f[11]) + int(f[12])


def boost(pid):
    """Gives a PostgreSQL backend our scheduling priority. Every backend calls setsid() and so
    sits in an autogroup of its own, which our session's priority does not cover."""
    if ARGS.nice == 0:
        return
    try:
        with open(f"/proc/{pid}/autogroup", "w") as fh:
            fh.write(str(ARGS.nice))
    except OSError:
        pass


def our_ticks(postmaster_pid):
    """CPU ticks of everything this benchmark runs: processes in our session (this script, the
    consumers, pgbench, starrocks-double) and the cluster's postmaster with all its backends; plus
    our children already reaped. The rest of the machine's busy time is someone else's."""
    import resource
    sid = os.getsid(0)
    per = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        ppid, psid = int(f[1]), int(f[3])
        if psid == sid or ppid == postmaster_pid or int(d) == postmaster_pid:
            per[int(d)] = int(f[11]) + int(f[12])
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return per, (ru.ru_utime + ru.ru_stime) * HZ


def ours_between(a, b):
    """Ticks our processes used between two our_ticks() samples."""
    (pa, ca), (pb, cb) = a, b
    t = sum(v - pa.get(k, 0) for k, v in pb.items())
    return t + max(0.0, cb - ca)


def sys_cpu():
    """(busy, total) clock ticks of the whole machine from /proc/stat (busy excludes idle+iowait)."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    total = sum(f[:8])
    return total - f[3] - f[4], total


def quiet_gate(limit_pct=25.0, max_wait=None):
    """Waits (at most max_wait s) until the machine is quiet: other people's builds share the 2
    cores. Returns the seconds waited and the busy % seen last."""
    if max_wait is None:
        max_wait = ARGS.quiet_wait
    t0 = time.monotonic()
    while True:
        b0, n0 = sys_cpu()
        time.sleep(0.5)
        b1, n1 = sys_cpu()
        busy = 100.0 * (b1 - b0) / max(1, n1 - n0)
        waited = time.monotonic() - t0
        if busy < limit_pct or waited > max_wait:
            return waited, busy


def smaps_breakdown(pid):
    """Resident kB by mapping: the executable, [heap], anonymous mmaps (glibc arenas, thread
    stacks), shared libraries, other."""
    out = {}
    files = {}
    name = None
    exe = os.path.realpath(f"/proc/{pid}/exe")
    try:
        for line in open(f"/proc/{pid}/smaps"):
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                path = parts[5] if len(parts) >= 6 else ""
                if path == exe:
                    name = "executable"
                elif path == "[heap]":
                    name = "[heap]"
                elif path == "":
                    name = "anonymous mmap"
                elif ".so" in path:
                    name = "shared libraries"
                else:
                    name = "other"
                fname = os.path.basename(path) if path.startswith("/") else None
            elif parts[0] == "Rss:" and name:
                out[name] = out.get(name, 0) + int(parts[1])
                if fname:
                    files[fname] = files.get(fname, 0) + int(parts[1])
    except OSError:
        pass
    out["files"] = dict(sorted(files.items(), key=lambda kv: -kv[1])[:6])
    return out


def proc_status(pid, *keys):
    """Selected /proc/<pid>/status fields in kB (VmHWM, VmRSS, RssAnon ...)."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k = line.split(":", 1)[0]
            if k in keys:
                out[k] = int(line.split()[1])
    except OSError:
        pass
    return out


class Waiter(threading.Thread):
    """Reaps one child with wait4: exact exit time and rusage (max RSS, user+sys CPU)."""

    def __init__(self, popen):
        super().__init__(daemon=True)
        self.p = popen
        self.t_exit = None
        self.rc = None
        self.ru = None
        self.start()

    def run(self):
        _, status, ru = os.wait4(self.p.pid, 0)
        self.t_exit = time.monotonic()
        self.rc = os.waitstatus_to_exitcode(status)
        self.ru = ru
        self.p.returncode = self.rc

    def wait(self, timeout):
        self.join(timeout)
        return not self.is_alive()


class LineReader(threading.Thread):
    """Copies a child's stream to a log file and timestamps the first line matching a pattern."""

    def __init__(self, stream, path, pattern=None):
        super().__init__(daemon=True)
        self.stream, self.path, self.pattern = stream, path, pattern
        self.t_match = None
        self.lines = []
        self.start()

    def run(self):
        with open(self.path, "w") as out:
            for raw in self.stream:
                line = raw.decode("utf-8", "replace")
                now = time.monotonic()
                if self.pattern and self.t_match is None and self.pattern in line:
                    self.t_match = now
                out.write(line)
                if len(self.lines) < 400:
                    self.lines.append(line.rstrip("\n"))


# ---------------------------------------------------------------- PostgreSQL cluster

TLS = os.environ.get("E2E_TLS", "") not in ("", "0")
SSLMODE = "require" if TLS else "disable"


class Cluster:
    def __init__(self, name, synchronous_commit="off"):
        self.synchronous_commit = synchronous_commit
        self.dir = os.path.join(ARGS.tmp, "pg-" + name)
        self.port = free_port()
        self.pgbin = ARGS.pgbin

    def as_pg(self, *cmd, **kw):
        return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, **kw)

    def start(self):
        os.makedirs(self.dir)
        os.chmod(self.dir, 0o700)
        subprocess.run(["chown", "postgres:", self.dir], check=True)
        self.as_pg(f"{self.pgbin}/initdb", "-D", self.dir, "-U", "postgres", "--auth=trust",
                   "-E", "UTF8", "--locale=C.UTF-8", stdout=subprocess.DEVNULL)
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as fh:
            fh.write(f"""
# benches/e2e: throwaway cluster. fsync is OFF (measures decoding and the consumers, not the
# disk); everything else that matters is the default except as below.
listen_addresses = '127.0.0.1'
port = {self.port}
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 40
max_wal_senders = 40
fsync = off
synchronous_commit = {self.synchronous_commit}
shared_buffers = 512MB
max_wal_size = 8GB
checkpoint_timeout = 30min
autovacuum = off
""")
        if TLS:
            # E2E_TLS=1: every consumer connects with TLS (sslmode=require), as most do in production
            self.as_pg("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                       "-subj", "/CN=127.0.0.1", "-keyout", os.path.join(self.dir, "server.key"),
                       "-out", os.path.join(self.dir, "server.crt"), capture_output=True)
            with open(os.path.join(self.dir, "postgresql.conf"), "a") as fh:
                fh.write("ssl = on\n")
        self.as_pg(f"{self.pgbin}/pg_ctl", "-D", self.dir, "-l", os.path.join(self.dir, "server.log"),
                   "-w", "-t", "120", "start", stdout=subprocess.DEVNULL)
        c = self.connect("postgres")
        c.cursor().execute(f"CREATE DATABASE {DB}")
        c.close()
        return self

    def stop(self):
        if os.path.exists(os.path.join(self.dir, "postmaster.pid")):
            self.as_pg(f"{self.pgbin}/pg_ctl", "-D", self.dir, "-m", "fast", "-w", "-t", "60", "stop",
                       stdout=subprocess.DEVNULL)
        subprocess.run(["rm", "-rf", self.dir], check=False)

    def connect(self, db=DB, autocommit=True):
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db)
        c.autocommit = autocommit
        return c

    def postmaster_pid(self):
        return int(open(os.path.join(self.dir, "postmaster.pid")).readline())

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/{DB}?sslmode={SSLMODE}"

    def libpq(self):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={DB} sslmode={SSLMODE}"

    def pgbench(self, *args, capture=True):
        cmd = [f"{self.pgbin}/pgbench", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args, DB]
        r = subprocess.run(cmd, check=True, capture_output=capture, text=True)
        return (r.stdout or "") + (r.stderr or "")


def q1(conn, sql, args=None):
    cur = conn.cursor()
    cur.execute(sql, args)
    row = cur.fetchone()
    cur.close()
    return row


def ex(conn, sql, args=None):
    cur = conn.cursor()
    cur.execute(sql, args)
    cur.close()


# ---------------------------------------------------------------- workloads
# The same three workloads as the peers harness (shared/peers/workload.sh), re-stated here.

def sizes():
    if ARGS.quick:
        return dict(bulk_rows=100_000, oltp_scale=2, oltp_clients=4, oltp_txns=20_000,
                    mixed_n=20_000, mixed_reps=100)
    return dict(bulk_rows=1_000_000, oltp_scale=10, oltp_clients=4, oltp_txns=300_000,
                mixed_n=200_000, mixed_reps=100)


WORKLOAD_TABLES = {
    "bulk": ["bulk"],
    # pgbench_history has no primary key, which dbmazz requires: the setup adds a bigserial one.
    "oltp": ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"],
    "mixed": ["mixed"],
}


def workload_setup(cl, conn, w, sz):
    if w == "bulk":
        ex(conn, """CREATE TABLE bulk (id int PRIMARY KEY, label text, amount numeric(12,2),
                                       created_at timestamptz, attrs jsonb)""")
    elif w == "oltp":
        cl.pgbench("-i", "-q", "-s", str(sz["oltp_scale"]))
        ex(conn, "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")
    elif w == "mixed":
        ex(conn, """CREATE TABLE mixed (id int PRIMARY KEY, status text, counter int,
                                        updated_at timestamptz, body text)""")
        # EXTERNAL: out of line, uncompressed, so every 3.2 kB body really is TOASTed
        ex(conn, "ALTER TABLE mixed ALTER COLUMN body SET STORAGE EXTERNAL")
    ex(conn, "CREATE TABLE e2e_end (id int PRIMARY KEY, at timestamptz)")
    tables = WORKLOAD_TABLES[w] + ["e2e_end"]
    ex(conn, f"CREATE PUBLICATION {PUB} FOR TABLE {', '.join(tables)}")
    ex(conn, "CHECKPOINT")
    return tables


def workload_run(cl, conn, w, sz):
    if w == "bulk":
        # one transaction, one INSERT ... SELECT of bulk_rows rows of ~100 bytes
        ex(conn, f"""INSERT INTO bulk
            SELECT g, 'row-' || md5(g::text), (g % 100000) / 7.0,
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 second',
                   jsonb_build_object('k', g % 1000, 'tag', 'abc', 'ok', g % 2 = 0)
              FROM generate_series(1, {sz['bulk_rows']}) AS g""")
        return f"{sz['bulk_rows']} rows in one transaction"
    if w == "oltp":
        # pgbench's TPC-B-like script: 3 UPDATE + 1 SELECT + 1 INSERT per transaction
        out = cl.pgbench("-n", "-c", str(sz["oltp_clients"]), "-j", "2",
                         "-t", str(sz["oltp_txns"] // sz["oltp_clients"]))
        tps = re.search(r"tps = ([\d.]+)", out)
        return f"pgbench {sz['oltp_txns']} txns, {tps.group(1) if tps else '?'} tps"
    if w == "mixed":
        # per step i: insert row i (TOASTed body); update row i-1 (non-TOAST columns only);
        # every 4th step update row i-2; every 5th step delete row i-3 and commit
        ex(conn, f"""DO $$
            BEGIN
              FOR i IN 1..{sz['mixed_n']} LOOP
                INSERT INTO mixed VALUES (i, 'new', 0,
                    timestamptz '2024-01-01 00:00:00+00' + i * interval '1 second',
                    repeat(md5(i::text), {sz['mixed_reps']}));
                IF i > 1 THEN
                  UPDATE mixed SET counter = counter + 1, status = 'upd',
                                   updated_at = updated_at + interval '1 day' WHERE id = i - 1;
                END IF;
                IF i % 4 = 0 THEN UPDATE mixed SET counter = counter + 10 WHERE id = i - 2; END IF;
                IF i % 5 = 0 THEN DELETE FROM mixed WHERE id = i - 3; COMMIT; END IF;
              END LOOP;
            END $$""")
        return f"{sz['mixed_n']} steps, commit every 5"
    raise ValueError(w)


def end_marker(conn):
    """One small transaction after the workload; returns the insert LSN right after its commit."""
    ex(conn, "INSERT INTO e2e_end VALUES (1, clock_timestamp())")
    post = q1(conn, "SELECT pg_current_wal_insert_lsn()::text")[0]
    ex(conn, "CHECKPOINT")  # flushes the async-commit WAL so every walsender can send it
    return post


# ---------------------------------------------------------------- slots

def copy_slot(conn, name):
    ex(conn, "SELECT pg_copy_logical_replication_slot(%s, %s, false, 'pgoutput')", (TEMPLATE, name))


def drop_slot(conn, name):
    deadline = time.monotonic() + 30
    while True:
        try:
            ex(conn, "SELECT pg_drop_replication_slot(%s)", (name,))
            return
        except psycopg2.Error as e:
            if time.monotonic() > deadline:
                raise
            if "is active" not in str(e):
                raise
            time.sleep(0.1)


def sql_pass(conn, slot, upto):
    """In-server decode of the whole window (no network): counts and the marker's commit end."""
    copy_slot(conn, slot)
    t0 = time.monotonic()
    row = q1(conn, f"""
        SELECT count(*), coalesce(sum(length(data)), 0),
               count(*) FILTER (WHERE get_byte(data, 0) = 73),
               count(*) FILTER (WHERE get_byte(data, 0) = 85),
               count(*) FILTER (WHERE get_byte(data, 0) = 68),
               count(*) FILTER (WHERE get_byte(data, 0) = 67),
               max(encode(substr(data, 11, 8), 'hex')) FILTER (WHERE get_byte(data, 0) = 67)
          FROM pg_logical_slot_get_binary_changes(%s, %s, NULL,
               'proto_version', '1', 'publication_names', '{PUB}')""", (slot, upto))
    wall = time.monotonic() - t0
    drop_slot(conn, slot)
    msgs, payload, ins, upd, dele, commits, last_end_hex = row
    return dict(msgs=msgs, payload_bytes=int(payload), inserts=ins, updates=upd, deletes=dele,
                rows=ins + upd + dele, commits=commits, end_lsn=lsn_str(int(last_end_hex, 16)),
                wall_s=wall)


# ---------------------------------------------------------------- the StarRocks double

class Double:
    def __init__(self, discard, tag):
        self.discard = discard
        cmd = [ARGS.double, "--fe-port", "0", "--be-port", "0", "--mysql-port", "0", "--admin-port", "0"]
        if discard:
            cmd.append("--discard")
        self.err = open(os.path.join(ARGS.logs, f"{tag}.double.log"), "w")
        self.p = spawn(cmd, stdout=subprocess.PIPE, stderr=self.err)
        self.waiter = None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError("starrocks-double printed no ports")
        self.ports = json.loads(line)
        import pymysql
        deadline = time.monotonic() + 10
        while True:
            try:
                c = pymysql.connect(host="127.0.0.1", port=self.ports["mysql"], user="root", password="")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with c.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB}")
        c.close()

    def env(self):
        return {
            "SINK_TYPE": "starrocks",
            "STARROCKS_URL": f"http://127.0.0.1:{self.ports['fe']}",
            "STARROCKS_DB": DB,
            "STARROCKS_MYSQL_URL": f"mysql://root:@127.0.0.1:{self.ports['mysql']}/",
            "CREATE_TABLES": "true",
        }

    def stats(self):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/admin/stats", timeout=5) as r:
                return json.loads(r.read())
        except Exception as e:  # informational only
            return {"error": str(e)}

    def query(self, sql):
        import pymysql
        c = pymysql.connect(host="127.0.0.1", port=self.ports["mysql"], user="root", password="")
        with c.cursor() as cur:
            cur.execute(sql)
            rows = cur.fetchall()
        c.close()
        return rows

    def stop(self):
        if self.p.returncode is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


# ---------------------------------------------------------------- one measurement

def base_env():
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "RUST_LOG": "info", "LANG": "C.UTF-8"}
    # allocator experiments (glibc's MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ...) pass through
    env.update({k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"})
    return env


def dbmazz_env(cl, slot, tables, sink_env, extra=None):
    env = base_env()
    env.update({
        "DATABASE_URL": cl.url(), "TABLES": ",".join(tables), "SLOT_NAME": slot,
        "PUBLICATION_NAME": PUB, "GRPC_PORT": "off", "SNAPSHOT_MODE": "never",
        "FLUSH_INTERVAL_MS": str(ARGS.flush_interval_ms),
    })
    # unset = dbmazz's own defaults
    if ARGS.flush_size:
        env["FLUSH_SIZE"] = str(ARGS.flush_size)
    if ARGS.flush_max_bytes:
        env["FLUSH_MAX_BYTES"] = str(ARGS.flush_max_bytes)
    env.update(sink_env)
    env.update(extra or {})
    return env


SYSCALL_EVENTS = "syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_read,context-switches"


def read_perf_stat(path):
    """perf stat -x, output -> {event: count}."""
    out = {}
    try:
        for line in open(path):
            f = line.strip().split(",")
            if len(f) >= 3 and f[0].replace(".", "").isdigit():
                out[f[2].split(":")[-1]] = int(float(f[0]))
    except OSError:
        pass
    return out


def measure(cl, mon, consumer, slot, end_lsn, tables, tag, perf=None, extra_env=None, count=None, wrap=None):
    """perf: dict(freq, args, out) runs the consumer under perf record; count: a path prefix, counts
    the consumer's and its walsender's syscalls and context switches with perf stat."""
    """Runs one consumer on a fresh copy of the template slot; returns a result dict."""
    copy_slot(mon, slot)
    double = None
    res = dict(consumer=consumer, slot=slot)
    variant_env = dict(VARIANTS.get(consumer, {}))
    variant_env.update(extra_env or {})
    extra_env = variant_env
    consumer = base_kind(consumer)
    try:
        if consumer.startswith("dbmazz_sr"):
            double = Double(discard=(consumer == "dbmazz_sr_discard"), tag=tag)
        if consumer == "pg_recvlogical":
            cmd = [f"{ARGS.pgbin}/pg_recvlogical", "-d", cl.libpq(), "-S", slot, "--start", "--no-loop",
                   "-E", end_lsn, "-o", "proto_version=1", "-o", f"publication_names={PUB}", "-f", "/dev/null"]
            env = base_env()
            pattern = None
        else:
            if consumer == "dbmazz_ndjson":
                sink = {"SINK_TYPE": "ndjson", "NDJSON_PATH": "/dev/null"}
            elif consumer == "dbmazz_ndjson_file":
                path = os.path.join(ARGS.tmp, f"{tag}.ndjson")
                sink = {"SINK_TYPE": "ndjson", "NDJSON_PATH": path}
                res["ndjson_path"] = path
            else:
                sink = double.env()
            cmd = [ARGS.dbmazz]
            env = dbmazz_env(cl, slot, tables, sink, extra_env)
            pattern = "streaming changes"
        res["gate_wait_s"], res["busy_before_pct"] = quiet_gate()
        sys0, own0 = sys_cpu(), os.times()
        t0 = time.monotonic()
        if perf:  # dbmazz runs as perf's child, so that no sample is missed
            cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(perf["freq"]), *perf["args"],
                   "-o", perf["out"], "--", *cmd]
        elif count:
            cmd = ["perf", "stat", "-x,", "-e", SYSCALL_EVENTS, "-o", count + ".consumer", "--", *cmd]
        elif wrap:
            cmd = [*wrap, *cmd]
        wrapped = bool(perf or count)
        ws_stat = None
        p = spawn(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        waiter = Waiter(p)
        reader = LineReader(p.stderr, os.path.join(ARGS.logs, f"{tag}.log"), pattern)
        pid = p.pid
        if wrap:
            wrapped = False  # valgrind runs the program in its own process
        if wrapped:
            while waiter.t_exit is None:
                try:
                    kids = open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()
                except OSError:
                    kids = []
                if kids:
                    pid = int(kids[0])
                    note_pid(pid)
                    break
                time.sleep(0.001)
        end = lsn_int(end_lsn)
        is_dbmazz = consumer != "pg_recvlogical"
        ws_ticks = {}
        cli_ticks = 0
        hwm = 0
        anon_max = 0
        file_at_peak = 0
        t_done = None
        timeout = ARGS.run_timeout
        cur = mon.cursor()
        while True:
            now = time.monotonic()
            if waiter.t_exit is not None:
                if not is_dbmazz:
                    t_done = waiter.t_exit
                break
            cur.execute("SELECT active_pid, confirmed_flush_lsn::text FROM pg_replication_slots "
                        "WHERE slot_name = %s", (slot,))
            active_pid, confirmed = cur.fetchone()
            if active_pid:
                if active_pid not in ws_ticks:
                    boost(active_pid)
                    if count and ws_stat is None:
                        ws_stat = spawn(["perf", "stat", "-x,", "-e", SYSCALL_EVENTS, "-o", count + ".walsender",
                                         "-p", str(active_pid)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                t = proc_ticks(active_pid)
                if t is not None:
                    ws_ticks[active_pid] = max(ws_ticks.get(active_pid, 0), t)
            t = proc_ticks(pid)
            if t is not None:
                cli_ticks = max(cli_ticks, t)
                stt = proc_status(pid, "VmHWM", "RssAnon", "RssFile")
                hwm = max(hwm, stt.get("VmHWM", 0))
                if stt.get("RssAnon", 0) > anon_max:
                    if is_dbmazz and stt.get("RssAnon", 0) > anon_max + 1024:
                        res["smaps_at_peak_kb"] = smaps_breakdown(pid)
                    anon_max, file_at_peak = stt.get("RssAnon", 0), stt.get("RssFile", 0)
            if is_dbmazz and confirmed and lsn_int(confirmed) >= end:
                t_done = time.monotonic()
                # consumer-side figures at the moment of catch-up, before the drain
                t = proc_ticks(pid)
                if t is not None:
                    cli_ticks = max(cli_ticks, t)
                hwm = max(hwm, proc_status(pid, "VmHWM").get("VmHWM", 0))
                break
            if now - t0 > timeout:
                break
            time.sleep(POLL_S)
        cur.close()
        sys1, own1 = sys_cpu(), os.times()
        if ws_stat is not None:
            ws_stat.send_signal(signal.SIGINT)
            ws_stat.wait(30)
            res["walsender_counts"] = read_perf_stat(count + ".walsender")
        if double is not None:
            dt = proc_ticks(double.p.pid)
            res["double_cpu_s"] = (dt or 0) / HZ
            res["double_hwm_kb"] = proc_status(double.p.pid, "VmHWM").get("VmHWM", 0)
        if is_dbmazz and waiter.t_exit is None:
            os.kill(pid, signal.SIGTERM)
        if not waiter.wait(60):
            os.kill(pid, signal.SIGKILL)
            waiter.wait(30)
        reader.join(5)
        if count:
            res["consumer_counts"] = read_perf_stat(count + ".consumer")
        ok = t_done is not None and waiter.rc == 0
        res.update(
            ok=ok, rc=waiter.rc, timed_out=t_done is None,
            wall_s=(t_done - t0) if t_done else None,
            exit_s=(waiter.t_exit - t0) if waiter.t_exit else None,
            startup_s=(reader.t_match - t0) if reader.t_match else None,
            # CPU: pg_recvlogical exits by itself, so wait4's rusage is exact for it; dbmazz is
            # read from /proc at the moment it confirmed END (its drain after that is cpu_total_s)
            cpu_s=(cli_ticks / HZ) if is_dbmazz else ((waiter.ru.ru_utime + waiter.ru.ru_stime)
                                                      if waiter.ru else cli_ticks / HZ),
            cpu_total_s=(waiter.ru.ru_utime + waiter.ru.ru_stime) if waiter.ru else None,
            # peak RSS: VmHWM sampled every poll and at catch-up. Not wait4's ru_maxrss: Linux
            # carries the pre-exec peak over exec, i.e. this Python parent's ~28 MB.
            peak_rss_kb=hwm,
            anon_max_kb=anon_max, file_at_anon_max_kb=file_at_peak,
            walsender_cpu_s=sum(ws_ticks.values()) / HZ,
        )
        # CPU used on the machine during the run by anything but the consumer, its walsender, the
        # double and this script: other people's builds, mostly (the cores are shared)
        mine = res["cpu_s"] + res["walsender_cpu_s"] + res.get("double_cpu_s", 0) + \
            (own1.user + own1.system - own0.user - own0.system)
        res["machine_busy_s"] = (sys1[0] - sys0[0]) / HZ
        res["background_cpu_s"] = max(0.0, res["machine_busy_s"] - mine)
        if not ok and not wrap:
            res["log_tail"] = reader.lines[-15:]
            log(f"   !! {consumer} failed (rc={waiter.rc}, timed_out={t_done is None}); log: {tag}.log")
        if double is not None:
            res["double_stats"] = double.stats()
            if consumer == "dbmazz_sr_store":
                res["double_counts"] = {}
                for t in tables:
                    try:
                        rows = double.query(
                            f"SELECT dbmazz_is_deleted, count(*) FROM {DB}.{t} GROUP BY dbmazz_is_deleted")
                        res["double_counts"][t] = {str(k): v for k, v in rows}
                    except Exception as e:
                        res["double_counts"][t] = {"error": str(e)[:200]}
        return res
    finally:
        if double is not None:
            double.stop()
        drop_slot(mon, slot)


def count_ndjson(path):
    ops = {}
    with open(path, "rb") as fh:
        for line in fh:
            i = line.find(b'"op":"')
            if i < 0:
                continue
            j = line.index(b'"', i + 6)
            op = line[i + 6:j].decode()
            ops[op] = ops.get(op, 0) + 1
    return ops


# ---------------------------------------------------------------- throughput workloads

# name -> repetitions it runs in ("all", or only the first). The base consumers run dbmazz with its
# defaults (what an operator gets); the *_fs20000 variants use 13x bigger batches and *_mb8 a 4x
# bigger byte budget, to show what they buy in speed and cost in memory.
CONSUMERS = {
    "pg_recvlogical": "all",
    "dbmazz_ndjson": "all",
    "dbmazz_sr_discard": "all",
    "dbmazz_sr_store": "first",
    "dbmazz_ndjson_fs20000": "first",
    "dbmazz_sr_discard_fs20000": "first",
    "dbmazz_sr_discard_mb8": "first",
}
VARIANTS = {
    "dbmazz_ndjson_fs20000": {"FLUSH_SIZE": "20000"},
    "dbmazz_sr_discard_fs20000": {"FLUSH_SIZE": "20000"},
    # the in-flight budget of dbmazz 0.1's first default (FLUSH_MAX_BYTES 8 MiB instead of 2 MiB)
    "dbmazz_sr_discard_mb8": {"FLUSH_MAX_BYTES": str(8 << 20)},
}


def base_kind(consumer):
    for suffix in ("_fs20000", "_mb8"):
        if consumer.endswith(suffix):
            return consumer[:-len(suffix)]
    return consumer


def run_workload(w):
    sz = sizes()
    log(f"== {w}: fresh cluster")
    cl = Cluster(w).start()
    out = dict(workload=w, sizes=sz, runs=[])
    try:
        conn = cl.connect()
        tables = workload_setup(cl, conn, w, sz)
        boost(q1(conn, "SELECT pg_backend_pid()")[0])
        ex(conn, f"SELECT pg_create_logical_replication_slot('{TEMPLATE}', 'pgoutput')")
        start = q1(conn, "SELECT pg_current_wal_insert_lsn()::text")[0]
        log(f"== {w}: workload")
        t0 = time.monotonic()
        desc = workload_run(cl, conn, w, sz)
        out["workload_s"] = time.monotonic() - t0
        post = end_marker(conn)
        log(f"   {desc}; {out['workload_s']:.1f} s")
        sp = sql_pass(conn, "e2e_sql", post)
        end = sp["end_lsn"]
        assert lsn_int(start) < lsn_int(end) <= lsn_int(post), (start, end, post)
        out.update(start_lsn=start, end_lsn=end, wal_bytes=lsn_int(end) - lsn_int(start),
                   counts=sp, description=desc, tables=tables)
        log(f"   {start} -> {end}: {out['wal_bytes'] / 1e6:.1f} MB WAL, {sp['rows']:,} rows, "
            f"{sp['payload_bytes'] / 1e6:.1f} MB pgoutput; in-server decode {sp['wall_s']:.2f} s")
        for rep in range(1, ARGS.reps + 1):
            consumers = [c for c in CONSUMERS if c in ARGS.consumers and (rep == 1 or CONSUMERS[c] == "all")]
            order = consumers[(rep - 1) % len(consumers):] + consumers[:(rep - 1) % len(consumers)]
            for c in order:
                tag = f"{w}.{c}.{rep}"
                r = measure(cl, conn, c, f"e2e_{c}_{rep}", end, tables, tag)
                r["rep"] = rep
                out["runs"].append(r)
                if r["ok"]:
                    log(f"   rep {rep} {c:24s} {r['wall_s']:6.2f} s  {sp['rows'] / r['wall_s']:>10,.0f} rows/s  "
                        f"rss {r['peak_rss_kb'] / 1024:5.1f} MB  cpu {r['cpu_s']:.2f} s"
                        + (f"  startup {r['startup_s']:.2f} s" if r.get("startup_s") else "")
                        + f"  bg-cpu {r['background_cpu_s']:.1f} s")
        # correctness: dbmazz into a real NDJSON file once, every change line counted
        if "dbmazz_ndjson" in ARGS.consumers:
            r = measure(cl, conn, "dbmazz_ndjson_file", "e2e_verify", end, tables, f"{w}.verify")
            if r.get("ndjson_path") and os.path.exists(r["ndjson_path"]):
                r["ndjson_ops"] = count_ndjson(r["ndjson_path"])
                os.unlink(r["ndjson_path"])
            out["verify"] = r
            ops = r.get("ndjson_ops", {})
            got = (ops.get("insert", 0), ops.get("update", 0), ops.get("delete", 0))
            want = (sp["inserts"], sp["updates"], sp["deletes"])
            out["verify"]["match"] = got == want
            log(f"   verify NDJSON file: insert/update/delete {got} vs pgoutput {want}: "
                f"{'OK' if got == want else 'MISMATCH'}")
        # tables whose every row was written after the slot: the stored double must hold them all
        fresh = {"bulk": ["bulk"], "mixed": ["mixed"], "oltp": ["pgbench_history"]}[w]
        out["pg_counts"] = {t: q1(conn, f"SELECT count(*) FROM {t}")[0] for t in fresh}
        out["server_version"] = q1(conn, "SHOW server_version")[0]
        conn.close()
        return out, cl
    except Exception:
        cl.stop()
        raise


# ---------------------------------------------------------------- profiling

def perf_report(data, *extra):
    r = subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-inline", "-g", "none", *extra],
                       capture_output=True, text=True)
    return [ln.rstrip() for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]


def massif_summary(path, top=8):
    """Heap at massif's peak snapshot, grouped by the first dbmazz frame of each allocation path."""
    lines = open(path).read().splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("heap_tree=peak")), None)
    if start is None:
        return {"peak_bytes": None, "sites": []}
    nodes = []
    for ln in lines[start + 1:]:
        if ln.startswith("snapshot="):
            break
        m = re.match(r"^( *)n\d+: (\d+) (.*)$", ln)
        if m:
            nodes.append((len(m.group(1)), int(m.group(2)), m.group(3)))
    sites, stack = {}, []
    for depth, nbytes, desc in nodes:
        stack = stack[:depth] + [desc]
        mine = "dbmazz::" in desc or "<dbmazz" in desc
        if mine and not any("dbmazz::" in x or "<dbmazz" in x for x in stack[:-1]):
            name = re.sub(r" \(in /[^)]*\)", "", re.sub(r"^0x[0-9A-F]+: ", "", desc))
            sites[name] = sites.get(name, 0) + nbytes
    return {"peak_bytes": nodes[0][1] if nodes else None,
            "sites": sorted(([v, k] for k, v in sites.items()), reverse=True)[:top]}


def heap_profile(cl, w, out, consumer):
    """One dbmazz run under valgrind massif (stopped after --massif-s seconds: the in-flight budget
    fills within seconds, and valgrind makes dbmazz the slow side, i.e. the worst case for memory)."""
    conn = cl.connect()
    mf = os.path.join(ARGS.tmp, f"{w}.{consumer}.massif")
    old = ARGS.run_timeout
    ARGS.run_timeout = ARGS.massif_s
    try:
        measure(cl, conn, consumer, f"e2e_heap_{consumer}", out["end_lsn"], out["tables"], f"{w}.{consumer}.massif",
                wrap=["valgrind", "--tool=massif", "--depth=30", f"--massif-out-file={mf}"])
    finally:
        ARGS.run_timeout = old
        conn.close()
    if not os.path.exists(mf):
        return None
    res = massif_summary(mf)
    res["consumer"] = consumer
    os.makedirs(ARGS.profiles_dir, exist_ok=True)
    subprocess.run(f"ms_print --threshold=2 {mf} > {os.path.join(ARGS.profiles_dir, w + '.' + consumer + '.massif.txt')}",
                   shell=True, check=False)
    os.unlink(mf)
    log(f"   massif {consumer}: peak heap {(res['peak_bytes'] or 0) / 1e6:.1f} MB; "
        + "; ".join(f"{b / 1e6:.1f} MB {n[:60]}" for b, n in res["sites"][:3]))
    return res


def diagnose(cl, w, out, which):
    """Evidence for a missed target, from extra runs on the same WAL (not part of the medians):
      counts : perf stat of the consumer and of its walsender (recv/send syscalls, context
               switches) for pg_recvlogical and each dbmazz sink in `which`
      perf   : perf record (cpu-clock sampling: this VM has no hardware counters; DWARF call
               graphs) of each dbmazz sink in `which`: self and inclusive time per function
      system : cpu-clock samples of the whole machine by process name during a dbmazz run
    """
    pdir = ARGS.profiles_dir
    os.makedirs(pdir, exist_ok=True)
    conn = cl.connect()
    res = {"counts": {}, "perf": {}}
    keep = ("ok", "wall_s", "cpu_s", "walsender_cpu_s", "background_cpu_s", "consumer_counts", "walsender_counts")
    for c in ["pg_recvlogical"] + which:
        r = measure(cl, conn, c, f"e2e_cnt_{c}", out["end_lsn"], out["tables"], f"{w}.{c}.count",
                    count=os.path.join(ARGS.tmp, f"{w}.{c}.stat"))
        res["counts"][c] = {k: r.get(k) for k in keep}
        log(f"   counts {c}: wall {r.get('wall_s') or 0:.2f} s, consumer {r.get('consumer_counts')}, "
            f"walsender {r.get('walsender_counts')}")
    for c in which:
        base = os.path.join(ARGS.tmp, f"{w}.{c}")
        r = measure(cl, conn, c, f"e2e_prof_{c}", out["end_lsn"], out["tables"], f"{w}.{c}.perf",
                    perf=dict(freq=ARGS.perf_freq, args=["--call-graph", "dwarf,16384"], out=base + ".perf.data"))
        pr = {"run": {k: r.get(k) for k in ("ok", "wall_s", "cpu_s", "startup_s")}}
        pr["self"] = perf_report(base + ".perf.data", "--no-children", "--sort", "symbol", "--percent-limit", "0.8")[:40]
        pr["inclusive"] = perf_report(base + ".perf.data", "--children", "--sort", "symbol", "--percent-limit", "3")[:60]
        pr["threads"] = perf_report(base + ".perf.data", "--no-children", "--sort", "comm")[:8]
        pr["dso"] = perf_report(base + ".perf.data", "--no-children", "--sort", "dso")[:8]
        with open(os.path.join(pdir, f"{w}.{c}.txt"), "w") as fh:
            for k in ("self", "inclusive", "threads", "dso"):
                fh.write(f"# {k}\n" + "\n".join(pr[k]) + "\n\n")
        res["perf"][c] = pr
        if os.environ.get("E2E_KEEP_PERF"):  # for `perf report -G` on the full call graph
            shutil.move(base + ".perf.data", os.path.join(pdir, f"{w}.{c}.perf.data"))
        else:
            os.unlink(base + ".perf.data")
        log(f"   perf {c}: top self " + "; ".join(" ".join(x.split()[:3]) for x in pr["self"][:4]))
    data = os.path.join(ARGS.tmp, f"{w}.system.perf.data")
    perf = spawn(["perf", "record", "-q", "-a", "-e", "cpu-clock", "-F", "199", "-o", data],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    r = measure(cl, conn, which[0], f"e2e_sys_{which[0]}", out["end_lsn"], out["tables"], f"{w}.system")
    perf.send_signal(signal.SIGINT)
    perf.wait(60)
    res["system"] = {"consumer": which[0], "wall_s": r.get("wall_s"),
                     "by_comm": perf_report(data, "--sort", "comm")[:12]}
    os.unlink(data)
    conn.close()
    return res


# ---------------------------------------------------------------- idle

def run_idle():
    log("== idle: fresh cluster, dbmazz -> NDJSON /dev/null, no traffic")
    cl = Cluster("idle").start()
    try:
        conn = cl.connect()
        ex(conn, "CREATE TABLE idle_t (id int PRIMARY KEY, v text)")
        env = dbmazz_env(cl, "e2e_idle", ["idle_t"], {"SINK_TYPE": "ndjson", "NDJSON_PATH": "/dev/null"})
        env["PUBLICATION_NAME"] = "e2e_idle_pub"
        env["FLUSH_INTERVAL_MS"] = "5000"  # the default: idle behaviour as shipped
        t0 = time.monotonic()
        p = spawn([ARGS.dbmazz], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        waiter = Waiter(p)
        reader = LineReader(p.stderr, os.path.join(ARGS.logs, "idle.log"), "streaming changes")
        while reader.t_match is None and waiter.t_exit is None and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        if reader.t_match is None:
            raise RuntimeError("dbmazz did not start streaming (see logs/idle.log)")
        startup = reader.t_match - t0
        time.sleep(2)  # settle
        samples = []
        c0, w0 = proc_ticks(p.pid), time.monotonic()
        while time.monotonic() - w0 < ARGS.idle_s:
            time.sleep(1)
            st = proc_status(p.pid, "VmRSS", "RssAnon", "VmHWM")
            samples.append(st)
        c1, w1 = proc_ticks(p.pid), time.monotonic()
        threads = len(os.listdir(f"/proc/{p.pid}/task"))
        smaps = smaps_breakdown(p.pid)
        p.send_signal(signal.SIGTERM)
        waiter.wait(30)
        reader.join(5)
        res = dict(
            seconds=w1 - w0, startup_s=startup, cpu_s=(c1 - c0) / HZ,
            cpu_pct=100.0 * (c1 - c0) / HZ / (w1 - w0),
            rss_kb_median=statistics.median(s.get("VmRSS", 0) for s in samples),
            rss_kb_max=max(s.get("VmRSS", 0) for s in samples),
            anon_kb_max=max(s.get("RssAnon", 0) for s in samples),
            hwm_kb=max(s.get("VmHWM", 0) for s in samples),
            threads=threads, rc=waiter.rc, smaps_kb=smaps,
        )
        log(f"   idle {res['seconds']:.0f} s: cpu {res['cpu_s']:.3f} s ({res['cpu_pct']:.3f} % of a core), "
            f"RSS {res['rss_kb_max'] / 1024:.1f} MB (anon {res['anon_kb_max'] / 1024:.1f} MB), "
            f"{threads} threads, startup {startup:.2f} s")
        conn.close()
        return res
    finally:
        cl.stop()


# ---------------------------------------------------------------- latency

def scrape(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except Exception:
        return None
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape_hist(port, name):
    """{upper bound in s: cumulative count} of a Prometheus histogram, or None."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            text = r.read().decode()
    except Exception:
        return None
    out = {}
    for line in text.splitlines():
        m = re.match(name + r'_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            out["inf" if m.group(1) == "+Inf" else m.group(1)] = int(m.group(2))
    return out or None


def hist_delta(before, after):
    """Observations between two scrapes: {bound: cumulative count} (bounds as strings, JSON-safe)."""
    if not before or not after:
        return None
    return {b: after[b] - before.get(b, 0) for b in after}


def hist_quantiles(delta):
    """n and p50/p90/p99 in ms of a cumulative-bucket histogram, interpolated inside the bucket
    the way Prometheus' histogram_quantile() does (in the +Inf bucket: the last finite bound)."""
    if not delta:
        return None
    bounds = sorted(delta, key=lambda b: float(b))
    cum = [delta[b] for b in bounds]
    n = cum[-1]
    res = {"n": n, "max": None}
    for q in (50, 90, 99):
        res[f"p{q}"] = None
        if n == 0:
            continue
        rank = n * q / 100.0
        for i, b in enumerate(bounds):
            if cum[i] >= rank:
                lo = float(bounds[i - 1]) if i else 0.0
                below = cum[i - 1] if i else 0
                if b == "inf":
                    res[f"p{q}"] = lo * 1000
                else:
                    inside = cum[i] - below
                    res[f"p{q}"] = (lo + (float(b) - lo) * ((rank - below) / inside if inside else 1.0)) * 1000
                break
    return res


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dist(xs):
    return dict(n=len(xs), p50=pct(xs, 50), p90=pct(xs, 90), p99=pct(xs, 99),
                max=max(xs) if xs else None, mean=statistics.fmean(xs) if xs else None)


class MarkerRun:
    """One latency phase: pgbench at a fixed rate, plus a marker row committed every 100 ms whose
    arrival is watched in the consumer's output file (and, for dbmazz, in the slot's
    confirmed_flush_lsn)."""

    def __init__(self, cl, path, slot, with_ack, pgbench_args):
        self.cl, self.path, self.slot, self.with_ack = cl, path, slot, with_ack
        self.pgbench_args = pgbench_args
        self.stop = threading.Event()
        self.tail_done = threading.Event()
        self.lock = threading.Lock()
        self.markers = {}  # id -> t_commit, t_line, commit_lsn, t_ack
        self.id0 = 0
        self.rows_per_txn = 4

    def marker_loop(self):
        mc = self.cl.connect()
        cur = mc.cursor()
        i = self.id0
        nxt = time.monotonic()
        while not self.stop.is_set():
            i += 1
            # one autocommit INSERT; t_commit is taken when COMMIT has returned
            cur.execute("INSERT INTO lat_marker VALUES (%s, %s, clock_timestamp())", (i, f"mk-{i:08d}."))
            tc = time.time()
            with self.lock:
                self.markers.setdefault(i, {})["t_commit"] = tc
            nxt += 0.1
            time.sleep(max(0.0, nxt - time.monotonic()))
        mc.close()

    def tail_loop(self):
        """Finds 'mk-<id>.' in whatever the consumer writes (NDJSON, or raw pgoutput bytes)."""
        pat = re.compile(rb"mk-(\d{8})\.")
        lsn_pat = re.compile(rb'"commit_lsn":"([0-9A-F]+/[0-9A-F]+)"')
        with open(self.path, "rb") as fh:
            buf = b""
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    if self.stop.is_set() and self.tail_done.is_set():
                        return
                    time.sleep(0.005)
                    continue
                now = time.time()
                buf += chunk
                cut = buf.rfind(b"\n") + 1  # NDJSON: whole lines; pgoutput: pg_recvlogical adds \n per message
                if cut == 0:
                    continue
                done, buf = buf[:cut], buf[cut:]
                for m in pat.finditer(done):
                    mid = int(m.group(1))
                    rec = {"t_line": now}
                    if self.with_ack:
                        line_start = done.rfind(b"\n", 0, m.start()) + 1
                        lm = lsn_pat.search(done, line_start, done.find(b"\n", m.end()))
                        if lm:
                            rec["commit_lsn"] = lsn_int(lm.group(1).decode())
                    with self.lock:
                        mk = self.markers.setdefault(mid, {})
                        if "t_line" not in mk:
                            mk.update(rec)

    def ack_loop(self):
        ac = self.cl.connect()
        cur = ac.cursor()
        while not (self.stop.is_set() and self.tail_done.is_set()):
            cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                        (self.slot,))
            row = cur.fetchone()
            now = time.time()
            if row and row[0]:
                c = lsn_int(row[0])
                with self.lock:
                    for m in self.markers.values():
                        # the marker's commit record starts at commit_lsn; a confirmed position past
                        # it can only be the end of that commit or of a later one
                        if "t_ack" not in m and "commit_lsn" in m and c > m["commit_lsn"]:
                            m["t_ack"] = now
            time.sleep(0.01)
        ac.close()

    def load_loop(self, t_start, samples):
        """Once a second: machine busy % and the part of it that is not ours."""
        pm = self.cl.postmaster_pid()
        prev = (sys_cpu(), our_ticks(pm))
        while not self.stop.is_set():
            time.sleep(1.0)
            cur = (sys_cpu(), our_ticks(pm))
            busy = cur[0][0] - prev[0][0]
            total = max(1, cur[0][1] - prev[0][1])
            others = max(0.0, busy - ours_between(prev[1], cur[1]))
            samples.append([round(time.time() - t_start, 1), round(100.0 * busy / total), round(100.0 * others / total)])
            prev = cur

    def run(self, pid, extra_threads=(), stat_path=None, record_path=None):
        stat = None
        if stat_path and shutil_which("perf"):
            stat = spawn(["perf", "stat", "-x,", "-e", SYSCALL_EVENTS, "-o", stat_path, "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if record_path and shutil_which("perf"):
            stat = spawn(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(ARGS.perf_freq), "--call-graph",
                          "dwarf,16384", "-o", record_path, "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        load = []
        # the slot poller runs in both phases, so that the harness costs the machine the same
        threads = [threading.Thread(target=self.tail_loop, daemon=True),
                   threading.Thread(target=self.load_loop, args=(time.time(), load), daemon=True),
                   threading.Thread(target=self.ack_loop, daemon=True)]
        threads += list(extra_threads)
        for t in threads:
            t.start()
        c0, sys0, o0 = proc_ticks(pid), sys_cpu(), our_ticks(self.cl.postmaster_pid())
        w0 = time.monotonic()
        t_start = time.time()
        mk = threading.Thread(target=self.marker_loop, daemon=True)
        mk.start()
        out = self.cl.pgbench(*self.pgbench_args)
        w1 = time.monotonic()
        c1, sys1, o1 = proc_ticks(pid), sys_cpu(), our_ticks(self.cl.postmaster_pid())
        rss = proc_status(pid, "VmRSS", "VmHWM")
        counts = None
        if stat is not None:
            stat.send_signal(signal.SIGINT)
            stat.wait(60)
            if stat_path:
                counts = read_perf_stat(stat_path)
        self.stop.set()
        mk.join(5)
        time.sleep(2.0)  # the last markers arrive and are confirmed
        self.tail_done.set()
        for t in threads:
            t.join(10)
        tps = re.search(r"tps = ([\d.]+)", out)
        with self.lock:
            ms = sorted((k, v) for k, v in self.markers.items() if "t_commit" in v)
        to_line = [1000 * (m["t_line"] - m["t_commit"]) for _, m in ms if "t_line" in m]
        to_ack = [1000 * (m["t_ack"] - m["t_commit"]) for _, m in ms if "t_ack" in m]
        series = [[round(m["t_commit"] - t_start, 2),
                   round(1000 * (m["t_line"] - m["t_commit"])) if "t_line" in m else None,
                   round(1000 * (m["t_ack"] - m["t_commit"])) if "t_ack" in m else None] for _, m in ms]
        return dict(
            seconds=w1 - w0, pgbench_tps=float(tps.group(1)) if tps else None,
            rows_s=(float(tps.group(1)) * self.rows_per_txn + 10) if tps else None,
            markers=len(ms), markers_missing=sum(1 for _, m in ms if "t_line" not in m),
            commit_to_line_ms=dist(to_line), commit_to_confirmed_ms=dist(to_ack) if self.with_ack else None,
            consumer_cpu_pct=100.0 * ((c1 or 0) - (c0 or 0)) / HZ / (w1 - w0),
            machine_busy_pct=100.0 * (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1]),
            others_cpu_s=max(0.0, (sys1[0] - sys0[0]) - ours_between(o0, o1)) / HZ,
            consumer_rss_kb=rss.get("VmRSS"), consumer_hwm_kb=rss.get("VmHWM"), series=series,
            load_series=load, counts=counts)


LAT_LOADS = {
    # pgbench's TPC-B: 3 UPDATE + 1 INSERT per transaction, 2,500 tps for 10k rows/s
    "tpcb": dict(rows_per_txn=4, what="pgbench TPC-B (3 UPDATE + 1 INSERT per txn)"),
    # the same rows/s in fewer transactions: one 10-row INSERT per transaction, 1,000 tps
    "batch10": dict(rows_per_txn=10, what="pgbench custom script: one 10-row INSERT per txn"),
}


def run_latency():
    log(f"== latency: ~{ARGS.latency_rows} rows/s for {ARGS.latency_s} s per phase, a marker row every 100 ms; "
        f"per load: pg_recvlogical -> file, then dbmazz -> NDJSON file (FLUSH_INTERVAL_MS=100)")
    # synchronous_commit=on here (cheap with fsync=off): with it off, a commit reaches the
    # walsender only when the WAL writer next flushes (wal_writer_delay=200ms), which would be
    # PostgreSQL's latency, not the consumer's
    cl = Cluster("latency", synchronous_commit="on").start()
    procs = []
    try:
        conn = cl.connect()
        boost(q1(conn, "SELECT pg_backend_pid()")[0])
        cl.pgbench("-i", "-q", "-s", "10")
        ex(conn, "ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")
        ex(conn, "CREATE TABLE lat_marker (id bigint PRIMARY KEY, tag text, at timestamptz)")
        ex(conn, "CREATE TABLE lat_rows (id bigserial PRIMARY KEY, k int, v text, ts timestamptz)")
        tables = WORKLOAD_TABLES["oltp"] + ["lat_marker", "lat_rows"]
        ex(conn, f"CREATE PUBLICATION {PUB} FOR TABLE {', '.join(tables)}")
        script = os.path.join(ARGS.tmp, "batch10.sql")
        with open(script, "w") as fh:
            fh.write("\\set k random(1, 1000000)\n"
                     "INSERT INTO lat_rows (k, v, ts) SELECT :k + g, md5((:k + g)::text), now() "
                     "FROM generate_series(1, 10) AS g;\n")
        res = {"target_rows_s": ARGS.latency_rows, "loads": {}}
        mport = free_port()
        slot_n = 0
        for load, spec in LAT_LOADS.items():
            tps = ARGS.latency_rows // spec["rows_per_txn"]
            pg_args = ["-n", "-c", "8", "-j", "2", "-R", str(tps), "-T", str(ARGS.latency_s)]
            if load == "batch10":
                pg_args += ["-f", script]
            R = {"what": spec["what"], "rate_tps": tps, "reps": []}
            for rep in range(ARGS.latency_reps):
                rr = {}
                # phase 1: PostgreSQL's own latency to a consumer that does nothing (baseline)
                slot_n += 1
                slot = f"e2e_lat_base{slot_n}"
                ex(conn, f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
                path = os.path.join(ARGS.tmp, "latency.pgoutput")
                open(path, "wb").close()
                p = spawn([f"{ARGS.pgbin}/pg_recvlogical", "-d", cl.libpq(), "-S", slot, "--start", "--no-loop",
                           "-F", "0", "-o", "proto_version=1", "-o", f"publication_names={PUB}", "-f", path],
                          env=base_env(), stdout=subprocess.DEVNULL,
                          stderr=open(os.path.join(ARGS.logs, f"latency.{load}.recvlogical.log"), "w"))
                procs.append(p)
                time.sleep(1)
                mr = MarkerRun(cl, path, slot, False, pg_args)
                mr.rows_per_txn = spec["rows_per_txn"]
                mr.id0 = slot_n * 10_000_000
                base = mr.run(p.pid, stat_path=os.path.join(ARGS.tmp, f"lat.{load}.base.stat")
                              if ARGS.profile != "never" and shutil_which("perf") else None)
                p.send_signal(signal.SIGINT)
                p.wait(30)
                drop_slot(conn, slot)
                os.unlink(path)
                rr["baseline_recvlogical"] = base
                log(f"   {load} #{rep + 1} pg_recvlogical: {base['pgbench_tps']} tps; commit->received p50 "
                    f"{base['commit_to_line_ms']['p50']:.0f} p99 {base['commit_to_line_ms']['p99']:.0f} ms; "
                    f"machine {base['machine_busy_pct']:.0f} % busy")

                # phase 2: dbmazz, from a slot created now
                slot_n += 1
                slot = f"e2e_lat_dbmazz{slot_n}"
                path = os.path.join(ARGS.tmp, "latency.ndjson")
                open(path, "wb").close()
                env = dbmazz_env(cl, slot, tables, {"SINK_TYPE": "ndjson", "NDJSON_PATH": path},
                                 {"FLUSH_INTERVAL_MS": "100", "METRICS_PORT": str(mport), "METRICS_BIND": "127.0.0.1"})
                t0 = time.monotonic()
                p = spawn([ARGS.dbmazz], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                procs.append(p)
                waiter = Waiter(p)
                reader = LineReader(p.stderr, os.path.join(ARGS.logs, f"latency.{load}.dbmazz.log"), "streaming changes")
                while reader.t_match is None and waiter.t_exit is None and time.monotonic() - t0 < 60:
                    time.sleep(0.02)
                if reader.t_match is None:
                    raise RuntimeError(f"dbmazz did not start streaming (see logs/latency.{load}.dbmazz.log)")
                metrics_ok = scrape(mport, "dbmazz_replication_lag_ms") is not None
                gauge = []
                mr = MarkerRun(cl, path, slot, True, pg_args)
                mr.rows_per_txn = spec["rows_per_txn"]
                mr.id0 = slot_n * 10_000_000

                def scrape_loop(mr=mr, gauge=gauge):
                    while not mr.stop.is_set():
                        v = scrape(mport, "dbmazz_replication_lag_ms")
                        if v is not None:
                            gauge.append(v)
                        time.sleep(0.1)

                extra = [threading.Thread(target=scrape_loop, daemon=True)] if metrics_ok else []
                h0 = scrape_hist(mport, "dbmazz_commit_to_ack_seconds")
                d = mr.run(p.pid, extra, stat_path=os.path.join(ARGS.tmp, f"lat.{load}.dbmazz.stat")
                           if ARGS.profile != "never" and shutil_which("perf") else None)
                hd = hist_delta(h0, scrape_hist(mport, "dbmazz_commit_to_ack_seconds"))
                d.update(metrics_endpoint=metrics_ok, gauge_replication_lag_ms=dist(gauge) if gauge else None,
                         gauge_values=gauge, hist_delta=hd, hist_commit_to_ack_ms=hist_quantiles(hd))
                rr["dbmazz"] = d
                log(f"   {load} #{rep + 1} dbmazz: {d['pgbench_tps']} tps; commit->NDJSON line p50 "
                    f"{d['commit_to_line_ms']['p50']:.0f} p99 {d['commit_to_line_ms']['p99']:.0f} ms; commit->confirmed "
                    f"p50 {d['commit_to_confirmed_ms']['p50']:.0f} p99 {d['commit_to_confirmed_ms']['p99']:.0f} ms; "
                    f"dbmazz cpu {d['consumer_cpu_pct']:.0f} %, machine {d['machine_busy_pct']:.0f} % busy")
                p99 = (d["commit_to_confirmed_ms"] or {}).get("p99")
                if shutil_which("perf") and load == "tpcb" and rep == 0 and (
                        ARGS.profile == "always" or (ARGS.profile == "auto" and (p99 is None or p99 > 250))):
                    # diagnosis only: one more phase with dbmazz under perf record
                    log("   diagnosing the latency: one more phase with dbmazz under perf record")
                    data = os.path.join(ARGS.tmp, "lat.perf.data")
                    mr3 = MarkerRun(cl, path, slot, True, pg_args)
                    mr3.id0 = 90_000_000
                    d3 = mr3.run(p.pid, record_path=data)
                    pr = {"commit_to_confirmed_ms": d3["commit_to_confirmed_ms"],
                          "consumer_cpu_pct": d3["consumer_cpu_pct"],
                          "self": perf_report(data, "--no-children", "--sort", "symbol", "--percent-limit", "0.8")[:40],
                          "inclusive": perf_report(data, "--children", "--sort", "symbol", "--percent-limit", "3")[:60],
                          "threads": perf_report(data, "--no-children", "--sort", "comm")[:8]}
                    os.makedirs(ARGS.profiles_dir, exist_ok=True)
                    with open(os.path.join(ARGS.profiles_dir, f"latency.{load}.dbmazz.txt"), "w") as fh:
                        for k in ("self", "inclusive", "threads"):
                            fh.write(f"# {k}\n" + "\n".join(pr[k]) + "\n\n")
                    os.unlink(data)
                    R["dbmazz_perf"] = pr
                p.send_signal(signal.SIGTERM)
                waiter.wait(30)
                reader.join(5)
                d["rc"] = waiter.rc
                drop_slot(conn, slot)
                os.unlink(path)
                R["reps"].append(rr)
            # every marker of every repetition in one distribution
            def pool(key, col):
                return dist([x[col] for r in R["reps"] for x in r[key]["series"] if x[col] is not None])
            R["pooled"] = dict(baseline_line=pool("baseline_recvlogical", 1), dbmazz_line=pool("dbmazz", 1),
                               dbmazz_ack=pool("dbmazz", 2),
                               gauge=dist([v for r in R["reps"] for v in r["dbmazz"].get("gauge_values", [])]))
            deltas = [r["dbmazz"].get("hist_delta") for r in R["reps"]]
            if all(deltas):
                R["pooled"]["hist"] = hist_quantiles({b: sum(x[b] for x in deltas) for b in deltas[0]})
            res["loads"][load] = R
        conn.close()
        return res
    finally:
        for p in procs:
            if p.returncode is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
        cl.stop()


# ---------------------------------------------------------------- main

def machine():
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = int(open("/proc/meminfo").readline().split()[1]) // 1024
    osr = ""
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                osr = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), mem_mb=mem, os=osr, kernel=platform.release())


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True, help="results JSON")
    ap.add_argument("--pgbin", default="/usr/lib/postgresql/15/bin")
    ap.add_argument("--dbmazz", required=True)
    ap.add_argument("--double", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workloads", default="bulk oltp mixed")
    ap.add_argument("--consumers", default=" ".join(CONSUMERS))
    ap.add_argument("--flush-size", type=int, default=0)
    ap.add_argument("--flush-interval-ms", type=int, default=100)
    ap.add_argument("--flush-max-bytes", type=int, default=0)
    ap.add_argument("--idle-s", type=int, default=60)
    ap.add_argument("--latency-s", type=int, default=30)
    ap.add_argument("--latency-rows", type=int, default=10000)
    ap.add_argument("--latency-reps", type=int, default=2)
    ap.add_argument("--run-timeout", type=float, default=300)
    ap.add_argument("--profile", choices=["auto", "always", "never"], default="auto")
    ap.add_argument("--skip", default="", help="any of: idle latency")
    ap.add_argument("--quiet-wait", type=float, default=10,
                    help="longest wait for a quiet machine before each measurement (s)")
    ap.add_argument("--perf-freq", type=int, default=499)
    ap.add_argument("--massif-s", type=float, default=20)
    ap.add_argument("--profiles-dir", default="", help="full perf/massif reports (default: beside --out)")
    ap.add_argument("--nice", type=int, default=-10,
                    help="priority of this run's autogroup (other sessions' builds share the cores)")
    ARGS = ap.parse_args()
    prio = set_priority(ARGS.nice)
    ARGS.out_dir = os.path.dirname(os.path.abspath(ARGS.out))
    if not ARGS.profiles_dir:
        ARGS.profiles_dir = os.path.join(ARGS.out_dir, "profiles")
    ARGS.logs = os.path.join(ARGS.tmp, "logs")
    os.makedirs(ARGS.logs, exist_ok=True)
    ARGS.consumers = ARGS.consumers.split()
    res = dict(started=time.strftime("%Y-%m-%d %H:%M:%S"), machine=machine(), quick=ARGS.quick,
               priority=prio, git=git_info(), command=os.environ.get("E2E_COMMAND", ""),
               versions=dict(
                   postgres=subprocess.run([f"{ARGS.pgbin}/postgres", "--version"], capture_output=True,
                                           text=True).stdout.strip(),
                   dbmazz_built=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(ARGS.dbmazz))),
                   dbmazz_sha256=sha256_file(ARGS.dbmazz)[:16],
                   rustc=subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
                   if shutil_which("rustc") else ""),
               reps=ARGS.reps, settings=dict(flush_size=ARGS.flush_size,
                                             flush_interval_ms=ARGS.flush_interval_ms,
                                             flush_max_bytes=ARGS.flush_max_bytes,
                                             poll_ms=POLL_S * 1000, sslmode=SSLMODE),
               workloads={}, profiles={})
    t_all = time.monotonic()

    def save():
        res["total_s"] = time.monotonic() - t_all
        with open(ARGS.out, "w") as fh:
            json.dump(res, fh, indent=1, default=str)

    try:
        for w in ARGS.workloads.split():
            out, cl = run_workload(w)
            res["workloads"][w] = out
            save()
            try:
                which = [c for c in ("dbmazz_ndjson", "dbmazz_sr_discard") if c in ARGS.consumers]
                if ARGS.profile == "auto":
                    which = [c for c in which if c in misses(out)]
                if ARGS.profile != "never" and which and shutil_which("perf"):
                    log(f"   diagnosing {w}: {', '.join(which)} (extra runs: perf stat, perf record)")
                    res["profiles"][w] = diagnose(cl, w, out, which)
                    save()
                heavy = [c for c in ("dbmazz_ndjson", "dbmazz_sr_discard") if c in ARGS.consumers
                         and (ARGS.profile == "always" or (ARGS.profile == "auto" and rss_missed(out, c)))]
                if ARGS.profile != "never" and heavy and shutil_which("valgrind"):
                    log(f"   heap profile {w}: {', '.join(heavy)} (valgrind massif, {ARGS.massif_s:.0f} s each)")
                    res.setdefault("heap", {})[w] = [h for h in (heap_profile(cl, w, out, c) for c in heavy) if h]
                    save()
            finally:
                cl.stop()
        skip = ARGS.skip.split()
        if "idle" not in skip:
            res["idle"] = run_idle()
            save()
        if "latency" not in skip:
            res["latency"] = run_latency()
            save()
    finally:
        reap_all()
        save()
    log(f"total {time.monotonic() - t_all:.0f} s; results: {ARGS.out}")


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_info():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    def g(*a):
        r = subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True)
        return r.stdout.strip()
    changed = [ln[3:] for ln in g("status", "--porcelain", "--untracked-files=no").splitlines()]
    return dict(commit=g("rev-parse", "--short", "HEAD"), subject=g("log", "-1", "--format=%s"),
                uncommitted=changed)


def set_priority(nice):
    """The kernel groups CPU time by session (sched_autogroup), so a plain `nice` does nothing
    against other sessions' builds: start a session of our own (clusters and consumers inherit
    it) and give that group the priority."""
    if nice == 0:
        return "default"
    try:
        os.setsid()
    except OSError:
        pass
    try:
        with open("/proc/self/autogroup", "w") as fh:
            fh.write(str(nice))
        return open("/proc/self/autogroup").read().strip()
    except OSError as e:
        try:
            os.nice(nice)
            return f"nice {nice} (no autogroup: {e})"
        except OSError as e2:
            return f"default ({e2})"


def shutil_which(x):
    import shutil
    return shutil.which(x)


def rss_missed(out, consumer, limit_kb=24 * 1024):
    return any(r["peak_rss_kb"] > limit_kb for r in out["runs"] if r.get("ok") and r["consumer"] == consumer)


def misses(out):
    """The dbmazz sinks that missed their throughput target on this workload (they get profiled)."""
    by_rep = {}
    for r in out["runs"]:
        if r.get("ok"):
            by_rep.setdefault(r["rep"], {})[r["consumer"]] = r
    missed = []
    for c, target in (("dbmazz_ndjson", 1.0), ("dbmazz_sr_discard", 0.8)):
        ratios = [reps["pg_recvlogical"]["wall_s"] / reps[c]["wall_s"]
                  for reps in by_rep.values() if "pg_recvlogical" in reps and c in reps]
        if ratios and statistics.median(ratios) < target:
            missed.append(c)
    return missed


if __name__ == "__main__":
    main()

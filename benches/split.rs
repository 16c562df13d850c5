//! Statement splitter (and SQL guard) throughput on generated dump-shaped inputs.
//!
//! `pg_dump` is DDL with functions plus big `COPY … FROM stdin` blocks, the shape of a data
//! dump, where COPY lines dominate. `mysqldump` is mysqldump's extended INSERTs: long statements
//! made mostly of quoted strings with escapes. Each input is about 32 MiB, fed in 1 MiB chunks as
//! an upload would arrive; throughput is in bytes of the file per second. The `+guard` variants
//! also run every statement through the guard, as the applier does.

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dbmazz::provision::guard::Guard;
use dbmazz::provision::split::{Dialect, Piece, Splitter};

const TARGET_BYTES: usize = 32 << 20;
const CHUNK: usize = 1 << 20;

fn pg_dump_like() -> Vec<u8> {
    let mut s = String::with_capacity(TARGET_BYTES + (1 << 20));
    s.push_str("--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\n");
    s.push_str(
        "SET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n",
    );
    let mut table = 0;
    while s.len() < TARGET_BYTES {
        table += 1;
        let _ = write!(
            s,
            "\n--\n-- Name: t{table}; Type: TABLE; Schema: public; Owner: app\n--\n\n\
             CREATE TABLE public.t{table} (\n    id bigint NOT NULL,\n    name text,\n    \
             amount numeric(12,2),\n    created_at timestamp with time zone DEFAULT now()\n);\n\n\
             ALTER TABLE public.t{table} OWNER TO app;\n\n\
             CREATE FUNCTION public.f{table}() RETURNS trigger\n    LANGUAGE plpgsql\n    AS $$\n\
             BEGIN\n    NEW.name := lower(NEW.name); -- keep it ';' safe\n    RETURN NEW;\nEND;\n$$;\n\n\
             COMMENT ON TABLE public.t{table} IS 'table number {table}; with ''quotes''';\n\n\
             COPY public.t{table} (id, name, amount, created_at) FROM stdin;\n"
        );
        for row in 0..20_000 {
            let _ = writeln!(
                s,
                "{row}\tcustomer name {row}; with \\t tab\t{}.{:02}\t2024-01-02 03:04:05+00",
                row * 7,
                row % 100
            );
        }
        s.push_str("\\.\n\n");
    }
    s.push_str("\\unrestrict abc\n");
    s.into_bytes()
}

fn mysqldump_like() -> Vec<u8> {
    let mut s = String::with_capacity(TARGET_BYTES + (1 << 20));
    s.push_str("/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n");
    let mut table = 0;
    while s.len() < TARGET_BYTES {
        table += 1;
        let _ = write!(
            s,
            "DROP TABLE IF EXISTS `t{table}`;\nCREATE TABLE `t{table}` (\n  `id` int NOT NULL,\n  \
             `name` varchar(100) NOT NULL,\n  `note` text,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB;\n\
             LOCK TABLES `t{table}` WRITE;\n/*!40000 ALTER TABLE `t{table}` DISABLE KEYS */;\n"
        );
        // mysqldump cuts extended INSERTs at about 1 MB (net_buffer_length).
        for _ in 0..4 {
            let _ = write!(s, "INSERT INTO `t{table}` VALUES ");
            for row in 0..8_000 {
                if row > 0 {
                    s.push(',');
                }
                let _ = write!(
                    s,
                    "({row},'O\\'Brien {row}','a note; with \\\"quotes\\\" and \\\\ backslash',NULL)"
                );
            }
            s.push_str(";\n");
        }
        let _ = write!(
            s,
            "/*!40000 ALTER TABLE `t{table}` ENABLE KEYS */;\nUNLOCK TABLES;\nDELIMITER ;;\n\
             /*!50003 CREATE*/ /*!50003 TRIGGER `tr{table}` BEFORE INSERT ON `t{table}` FOR EACH \
             ROW BEGIN\n  SET NEW.name = TRIM(NEW.name);\nEND */;;\nDELIMITER ;\n"
        );
    }
    s.into_bytes()
}

/// Split `input` in 1 MiB chunks; returns the number of pieces so nothing is optimised away.
fn split(dialect: Dialect, input: &[u8], guard: Option<&Guard>) -> usize {
    let mut splitter = Splitter::new(dialect);
    let mut out = Vec::new();
    let mut pieces = 0;
    let mut check = |out: &mut Vec<Piece>| {
        for piece in out.drain(..) {
            if let (Some(guard), Piece::Statement { sql, line, .. }) = (guard, &piece) {
                guard
                    .check(sql, *line)
                    .expect("generated input passes the guard");
            }
            pieces += 1;
        }
    };
    for chunk in input.chunks(CHUNK) {
        splitter
            .feed(chunk, &mut out)
            .expect("generated input splits");
        check(&mut out);
    }
    splitter
        .finish(&mut out)
        .expect("generated input ends cleanly");
    check(&mut out);
    pieces
}

fn bench_split(c: &mut Criterion) {
    let inputs = [
        ("pg_dump", Dialect::Postgres, pg_dump_like()),
        ("mysqldump", Dialect::MySql, mysqldump_like()),
    ];
    let mut group = c.benchmark_group("split");
    group.sample_size(10);
    for (name, dialect, input) in &inputs {
        let guard = Guard::new(*dialect, &[]);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| black_box(split(*dialect, black_box(input), None)))
        });
        group.bench_function(format!("{name}+guard"), |b| {
            b.iter(|| black_box(split(*dialect, black_box(input), Some(&guard))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_split);
criterion_main!(benches);

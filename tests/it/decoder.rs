//! The pgoutput decoder against real PostgreSQL 15 payloads and generated input.
//!
//! Fixtures in `tests/fixtures/pgoutput/*.hex` were captured from a real server by
//! `capture.sh` beside them (one payload per line). The property tests check that no input
//! makes the decoder panic, that what a test-only encoder writes decodes back to the same
//! message, and that no strict prefix of a message decodes.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use dbmazz::postgres::pgoutput::{
    decode, Begin, BeginPrepare, Column, Commit, CommitPrepared, DecodeError, Delete, Insert,
    LogicalMessage, Message, OldTuple, Origin, Prepare, RelId, Relation, RollbackPrepared,
    StreamCommit, Truncate, Tuple, TypeMsg, Update, Value,
};
use dbmazz::Lsn;
use proptest::collection::vec;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Fixtures

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pgoutput")
}

/// The payloads of one fixture file, in capture order.
fn frames(name: &str) -> Vec<Bytes> {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| Bytes::from(unhex(line.trim())))
        .collect()
}

fn unhex(line: &str) -> Vec<u8> {
    assert!(line.len() % 2 == 0, "odd hex line length");
    line.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("hex is ASCII");
            u8::from_str_radix(pair, 16).expect("hex digit")
        })
        .collect()
}

/// Each payload with the `in_stream` flag a reader tracking Stream Start/Stop would pass.
fn with_stream_flags(frames: Vec<Bytes>) -> Vec<(Bytes, bool)> {
    let mut in_stream = false;
    frames
        .into_iter()
        .map(|frame| {
            let flag = in_stream;
            match frame.first() {
                Some(b'S') => in_stream = true,
                Some(b'E') => in_stream = false,
                _ => {}
            }
            (frame, flag)
        })
        .collect()
}

/// Decodes a whole fixture, failing with the frame number on the first error.
fn decode_fixture(name: &str) -> Vec<Message> {
    with_stream_flags(frames(name))
        .iter()
        .enumerate()
        .map(|(i, (frame, in_stream))| {
            decode(frame, *in_stream).unwrap_or_else(|e| panic!("{name} frame {}: {e}", i + 1))
        })
        .collect()
}

fn fixture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("name")
        })
        .filter(|name| name.ends_with(".hex"))
        .collect();
    names.sort();
    names
}

fn relations(msgs: &[Message]) -> Vec<&Relation> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Relation(r) => Some(r),
            _ => None,
        })
        .collect()
}

/// The last Relation message for `table` (later ones follow DDL).
fn relation<'a>(msgs: &'a [Message], table: &str) -> &'a Relation {
    relations(msgs)
        .into_iter()
        .rev()
        .find(|r| r.name == table)
        .unwrap_or_else(|| panic!("no Relation for {table}"))
}

fn column_names(rel: &Relation) -> Vec<&str> {
    rel.columns.iter().map(|c| c.name.as_str()).collect()
}

fn text(v: &Value) -> &str {
    match v {
        Value::Text(b) => std::str::from_utf8(b).expect("utf-8 value"),
        other => panic!("expected a text value, got {other:?}"),
    }
}

fn updates(msgs: &[Message], rel_id: RelId) -> Vec<&Update> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Update(u) if u.rel_id == rel_id => Some(u),
            _ => None,
        })
        .collect()
}

fn deletes(msgs: &[Message], rel_id: RelId) -> Vec<&Delete> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Delete(d) if d.rel_id == rel_id => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn every_fixture_frame_decodes() {
    let names = fixture_names();
    for expected in [
        "bulk_orders.hex",
        "peers_bulk.hex",
        "peers_oltp.hex",
        "peers_mixed.hex",
        "v1_basic.hex",
        "v1_binary.hex",
        "v2_stream.hex",
        "v3_twophase.hex",
    ] {
        assert!(names.iter().any(|n| n == expected), "missing {expected}");
    }
    for name in names {
        let msgs = decode_fixture(&name);
        assert!(!msgs.is_empty(), "{name} is empty");
    }
}

#[test]
fn real_frames_reencode_byte_for_byte() {
    for name in fixture_names() {
        for (i, (frame, in_stream)) in with_stream_flags(frames(&name)).iter().enumerate() {
            let msg = decode(frame, *in_stream).expect("decodes");
            let (again, _) = encode(&msg);
            assert_eq!(&again[..], &frame[..], "{name} frame {}", i + 1);
        }
    }
}

#[test]
fn every_strict_prefix_of_real_frames_is_an_error() {
    for name in ["v1_basic.hex", "v1_binary.hex", "v3_twophase.hex"] {
        for (frame, in_stream) in with_stream_flags(frames(name)).iter().take(200) {
            for len in 0..frame.len() {
                assert!(decode(&frame.slice(..len), *in_stream).is_err());
            }
        }
    }
}

#[test]
fn transactions_begin_with_the_commit_lsn_they_end_with() {
    for name in [
        "v1_basic.hex",
        "bulk_orders.hex",
        "peers_oltp.hex",
        "peers_mixed.hex",
    ] {
        let mut open: Option<Begin> = None;
        let mut committed = 0;
        for msg in decode_fixture(name) {
            match msg {
                Message::Begin(b) => {
                    assert!(open.is_none(), "nested Begin in {name}");
                    open = Some(b);
                }
                Message::Commit(c) => {
                    let b = open.take().expect("Commit without Begin");
                    assert_eq!(b.final_lsn, c.commit_lsn);
                    assert_eq!(b.commit_time, c.commit_time);
                    assert!(c.end_lsn > c.commit_lsn);
                    committed += 1;
                }
                _ => {}
            }
        }
        assert!(open.is_none());
        assert!(committed > 5, "{name}: only {committed} transactions");
    }
}

#[test]
fn relation_names_every_published_column() {
    let msgs = decode_fixture("v1_basic.hex");
    let customers = relation(&msgs, "customers");
    assert_eq!(customers.namespace, "public");
    assert_eq!(customers.replica_identity, b'd');
    assert_eq!(
        column_names(customers),
        ["id", "name", "email", "mood", "created_at", "tier"]
    );
    let keys: Vec<bool> = customers.columns.iter().map(Column::is_key).collect();
    assert_eq!(keys, [true, false, false, false, false, false]);
    // varchar(120) carries its length + 4 as type modifier.
    assert_eq!(customers.columns[2].type_oid, 1043);
    assert_eq!(customers.columns[2].type_modifier, 124);
    assert_eq!(
        column_names(relation(&msgs, "documents")),
        ["id", "title", "body"]
    );
    assert_eq!(
        column_names(relation(&msgs, "audit_log")),
        ["id", "event", "detail"]
    );
    assert_eq!(column_names(relation(&msgs, "sessions")), ["id", "token"]);
    assert_eq!(column_names(relation(&msgs, "events")), ["id", "kind"]);
}

#[test]
fn added_column_is_announced_by_a_new_relation() {
    let msgs = decode_fixture("v1_basic.hex");
    let customers: Vec<_> = relations(&msgs)
        .into_iter()
        .filter(|r| r.name == "customers")
        .collect();
    assert_eq!(customers.len(), 2);
    assert_eq!(customers[0].columns.len(), 5);
    assert_eq!(customers[1].columns.len(), 6);
    assert_eq!(customers[0].rel_id, customers[1].rel_id);
    let last_insert = msgs
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::Insert(i) if i.rel_id == customers[1].rel_id => Some(i),
            _ => None,
        })
        .expect("insert after the new column");
    assert_eq!(text(&last_insert.new.values[5]), "2");
}

#[test]
fn key_change_sends_the_old_key() {
    let msgs = decode_fixture("v1_basic.hex");
    let customers = relation(&msgs, "customers");
    let with_old: Vec<_> = updates(&msgs, customers.rel_id)
        .into_iter()
        .filter(|u| u.old.is_some())
        .collect();
    assert_eq!(
        with_old.len(),
        1,
        "only the key change carries an old tuple"
    );
    let Some(OldTuple::Key(old)) = &with_old[0].old else {
        panic!("expected an old key, got {:?}", with_old[0].old);
    };
    assert_eq!(text(&old.values[0]), "2");
    assert!(old.values[1..].iter().all(|v| *v == Value::Null));
    assert_eq!(text(&with_old[0].new.values[0]), "20");

    let deleted = deletes(&msgs, customers.rel_id);
    assert_eq!(deleted.len(), 1);
    assert!(matches!(deleted[0].old, OldTuple::Key(_)));
    assert_eq!(text(&deleted[0].old.tuple().values[0]), "3");
}

#[test]
fn toast_unchanged_column_is_marked_unchanged() {
    let msgs = decode_fixture("v1_basic.hex");
    let documents = relation(&msgs, "documents");
    let update = updates(&msgs, documents.rel_id)[0];
    assert_eq!(text(&update.new.values[1]), "spec v2");
    assert_eq!(update.new.values[2], Value::UnchangedToast);
    let insert = msgs
        .iter()
        .find_map(|m| match m {
            Message::Insert(i) if i.rel_id == documents.rel_id => Some(i),
            _ => None,
        })
        .expect("insert into documents");
    assert_eq!(text(&insert.new.values[2]).len(), 18 * 400);
}

#[test]
fn full_identity_sends_whole_old_rows() {
    let msgs = decode_fixture("v1_basic.hex");
    let audit = relation(&msgs, "audit_log");
    assert_eq!(audit.replica_identity, b'f');
    assert!(audit.columns.iter().all(Column::is_key));
    let updated = updates(&msgs, audit.rel_id);
    assert_eq!(updated.len(), 1);
    let Some(OldTuple::Full(old)) = &updated[0].old else {
        panic!("expected a full old row");
    };
    assert_eq!(text(&old.values[1]), "login");
    assert_eq!(text(&old.values[2]), r#"{"user": 1}"#);
    assert_eq!(text(&updated[0].new.values[2]), r#"{"user": 2}"#);
    let deleted = deletes(&msgs, audit.rel_id);
    assert_eq!(deleted.len(), 1);
    assert!(matches!(deleted[0].old, OldTuple::Full(_)));
    assert_eq!(text(&deleted[0].old.tuple().values[1]), "logout");
}

#[test]
fn truncate_of_two_tables_carries_both_and_its_options() {
    let msgs = decode_fixture("v1_basic.hex");
    let truncates: Vec<&Truncate> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Truncate(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(truncates.len(), 1);
    let t = truncates[0];
    assert_eq!(t.options, Truncate::CASCADE | Truncate::RESTART_IDENTITY);
    let mut ids = t.rel_ids.clone();
    ids.sort_unstable();
    let mut expected = vec![
        relation(&msgs, "sessions").rel_id,
        relation(&msgs, "events").rel_id,
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

#[test]
fn enum_column_type_is_announced() {
    let msgs = decode_fixture("v1_basic.hex");
    let types: Vec<&TypeMsg> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    assert!(!types.is_empty());
    assert!(types
        .iter()
        .all(|t| t.name == "mood" && t.namespace == "public"));
    let customers = relation(&msgs, "customers");
    assert_eq!(customers.columns[3].type_oid, types[0].oid);
    // Built-in types are never announced.
    assert!(types[0].oid >= 10_000);
}

#[test]
fn logical_messages_keep_prefix_content_and_transactionality() {
    let msgs = decode_fixture("v1_basic.hex");
    let logical: Vec<&LogicalMessage> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::LogicalMessage(l) => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(logical.len(), 2);
    assert!(logical
        .iter()
        .all(|l| l.prefix == "dbmazz" && l.xid.is_none()));
    let by_content: HashMap<&[u8], u8> = logical
        .iter()
        .map(|l| (l.content.as_ref(), l.flags))
        .collect();
    assert_eq!(
        by_content[&b"transactional hello"[..]],
        LogicalMessage::TRANSACTIONAL
    );
    assert_eq!(by_content[&b"non-transactional hello"[..]], 0);
}

#[test]
fn replayed_transaction_names_its_origin() {
    let msgs = decode_fixture("v1_basic.hex");
    let position = msgs
        .iter()
        .position(|m| matches!(m, Message::Origin(_)))
        .expect("an Origin message");
    assert!(matches!(msgs[position - 1], Message::Begin(_)));
    assert_eq!(
        msgs[position],
        Message::Origin(Origin {
            commit_lsn: "0/ABCDEF0".parse().expect("lsn"),
            name: "upstream".into(),
        })
    );
}

#[test]
fn binary_option_sends_binary_values() {
    let msgs = decode_fixture("v1_binary.hex");
    let inserts: Vec<&Insert> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::Insert(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(inserts.len(), 2);
    let first = &inserts[0].new.values;
    assert_eq!(first[0], Value::Binary(Bytes::from_static(&[0, 0, 0, 1])));
    // bytea in binary form is the raw bytes.
    assert_eq!(
        first[4],
        Value::Binary(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))
    );
    assert_eq!(first[8], Value::Binary(Bytes::from_static(&[1])));
    assert!(inserts[1].new.values[1..].iter().all(|v| *v == Value::Null));
}

#[test]
fn streamed_transaction_arrives_in_blocks_then_commits() {
    let msgs = decode_fixture("v2_stream.hex");
    let commits: Vec<&StreamCommit> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::StreamCommit(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(commits.len(), 2);
    let xid = commits[0].xid;
    let starts: Vec<bool> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::StreamStart {
                xid: x,
                first_segment,
            } if *x == xid => Some(*first_segment),
            _ => None,
        })
        .collect();
    assert!(
        starts.len() >= 2,
        "the transaction should span several blocks"
    );
    assert!(starts[0]);
    assert!(starts[1..].iter().all(|first| !first));
    let stops = msgs.iter().filter(|m| **m == Message::StreamStop).count();
    let all_starts = msgs
        .iter()
        .filter(|m| matches!(m, Message::StreamStart { .. }))
        .count();
    assert_eq!(stops, all_starts);

    // Inside blocks, every change names the streamed transaction.
    let mut in_stream = false;
    let mut kinds = Vec::new();
    for m in &msgs {
        match m {
            Message::StreamStart { .. } => in_stream = true,
            Message::StreamStop => in_stream = false,
            Message::Insert(Insert { xid, .. })
            | Message::Update(Update { xid, .. })
            | Message::Delete(Delete { xid, .. })
            | Message::Truncate(Truncate { xid, .. })
            | Message::Relation(Relation { xid, .. })
            | Message::Type(TypeMsg { xid, .. })
            | Message::LogicalMessage(LogicalMessage { xid, .. }) => {
                assert_eq!(xid.is_some(), in_stream);
                if *xid == Some(commits[0].xid) {
                    kinds.push(m.tag());
                }
            }
            _ => {}
        }
    }
    for tag in [b'I', b'U', b'D', b'T', b'M', b'R', b'Y'] {
        assert!(kinds.contains(&tag), "no streamed {:?}", char::from(tag));
    }
}

#[test]
fn savepoint_rollback_in_a_streamed_transaction_aborts_the_subtransaction() {
    let msgs = decode_fixture("v2_stream.hex");
    let aborts: Vec<(u32, u32)> = msgs
        .iter()
        .filter_map(|m| match m {
            Message::StreamAbort { xid, subxid } => Some((*xid, *subxid)),
            _ => None,
        })
        .collect();
    assert_eq!(aborts.len(), 2);
    let (xid, subxid) = aborts[0];
    assert_ne!(xid, subxid);
    // The rest of that transaction still commits.
    assert!(msgs
        .iter()
        .any(|m| matches!(m, Message::StreamCommit(c) if c.xid == xid)));
    // The big rolled-back transaction aborts as a whole.
    let (xid, subxid) = aborts[1];
    assert_eq!(xid, subxid);
    assert!(!msgs
        .iter()
        .any(|m| matches!(m, Message::StreamCommit(c) if c.xid == xid)));
}

#[test]
fn two_phase_transactions_prepare_then_commit_or_roll_back() {
    let msgs = decode_fixture("v3_twophase.hex");
    let gid_of = |m: &Message| -> Option<(u8, String)> {
        match m {
            Message::BeginPrepare(BeginPrepare { gid, .. })
            | Message::Prepare(Prepare { gid, .. })
            | Message::StreamPrepare(Prepare { gid, .. })
            | Message::CommitPrepared(CommitPrepared { gid, .. })
            | Message::RollbackPrepared(RollbackPrepared { gid, .. }) => {
                Some((m.tag(), gid.clone()))
            }
            _ => None,
        }
    };
    let seen: Vec<(u8, String)> = msgs.iter().filter_map(gid_of).collect();
    let expected: Vec<(u8, String)> = [
        (b'b', "tp-commit"),
        (b'P', "tp-commit"),
        (b'K', "tp-commit"),
        (b'b', "tp-rollback"),
        (b'P', "tp-rollback"),
        (b'r', "tp-rollback"),
        (b'p', "tp-streamed"),
        (b'K', "tp-streamed"),
    ]
    .into_iter()
    .map(|(t, g)| (t, g.to_owned()))
    .collect();
    assert_eq!(seen, expected);

    let begin = msgs
        .iter()
        .find_map(|m| match m {
            Message::BeginPrepare(b) => Some(b),
            _ => None,
        })
        .expect("begin prepare");
    let prepare = msgs
        .iter()
        .find_map(|m| match m {
            Message::Prepare(p) => Some(p),
            _ => None,
        })
        .expect("prepare");
    assert_eq!(
        (begin.prepare_lsn, begin.end_lsn, begin.xid),
        (prepare.prepare_lsn, prepare.end_lsn, prepare.xid)
    );
    let rollback = msgs
        .iter()
        .find_map(|m| match m {
            Message::RollbackPrepared(r) => Some(r),
            _ => None,
        })
        .expect("rollback prepared");
    assert!(rollback.rollback_end_lsn > rollback.prepare_end_lsn);
}

#[test]
fn bulk_orders_decode_to_every_row() {
    let msgs = decode_fixture("bulk_orders.hex");
    let orders = relation(&msgs, "orders");
    assert_eq!(
        column_names(orders),
        [
            "id",
            "customer_id",
            "status",
            "amount",
            "created_at",
            "payload",
            "note"
        ]
    );
    // numeric(12,2): ((precision << 16) | scale) + 4.
    assert_eq!(orders.columns[3].type_modifier, ((12 << 16) | 2) + 4);
    let mut counts: HashMap<u8, usize> = HashMap::new();
    for m in &msgs {
        *counts.entry(m.tag()).or_default() += 1;
    }
    let inserts = counts[&b'I'];
    assert!(inserts >= 10_000, "only {inserts} inserts");
    assert_eq!(counts[&b'U'], inserts / 10);
    assert_eq!(counts[&b'D'], inserts.div_ceil(100));
    for m in &msgs {
        if let Message::Insert(i) = m {
            assert_eq!(i.new.values.len(), 7);
            assert!(text(&i.new.values[5]).starts_with('{'));
        }
    }
}

#[test]
fn real_frame_errors_name_the_field_and_offset() {
    let frame = frames("v1_basic.hex")
        .into_iter()
        .find(|f| f.first() == Some(&b'C'))
        .expect("a commit");
    let err = decode(&frame.slice(..5), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "truncated pgoutput message: needed 8 bytes for commit_lsn at offset 2, 3 remain"
    );
    assert!(matches!(err, DecodeError::Truncated { .. }));
}

// ---------------------------------------------------------------------------------------------
// A test-only encoder, written from the protocol documentation like PostgreSQL's proto.c.

/// Encodes `msg` and returns the bytes with the `in_stream` flag they must be decoded with.
fn encode(msg: &Message) -> (Vec<u8>, bool) {
    let mut w = Writer(vec![msg.tag()]);
    let mut in_stream = false;
    let mut stream_xid = |w: &mut Writer, xid: &Option<u32>| {
        if let Some(x) = xid {
            w.u32(*x);
            in_stream = true;
        }
    };
    match msg {
        Message::Begin(b) => {
            w.lsn(b.final_lsn);
            w.i64(b.commit_time);
            w.u32(b.xid);
        }
        Message::Commit(c) => {
            w.u8(c.flags);
            w.lsn(c.commit_lsn);
            w.lsn(c.end_lsn);
            w.i64(c.commit_time);
        }
        Message::Origin(o) => {
            w.lsn(o.commit_lsn);
            w.cstr(&o.name);
        }
        Message::Relation(r) => {
            stream_xid(&mut w, &r.xid);
            w.u32(r.rel_id.0);
            w.cstr(&r.namespace);
            w.cstr(&r.name);
            w.u8(r.replica_identity);
            w.i16(r.columns.len() as i16);
            for c in &r.columns {
                w.u8(c.flags);
                w.cstr(&c.name);
                w.u32(c.type_oid);
                w.i32(c.type_modifier);
            }
        }
        Message::Type(t) => {
            stream_xid(&mut w, &t.xid);
            w.u32(t.oid);
            w.cstr(&t.namespace);
            w.cstr(&t.name);
        }
        Message::Insert(i) => {
            stream_xid(&mut w, &i.xid);
            w.u32(i.rel_id.0);
            w.u8(b'N');
            w.tuple(&i.new);
        }
        Message::Update(u) => {
            stream_xid(&mut w, &u.xid);
            w.u32(u.rel_id.0);
            match &u.old {
                Some(OldTuple::Key(t)) => {
                    w.u8(b'K');
                    w.tuple(t);
                }
                Some(OldTuple::Full(t)) => {
                    w.u8(b'O');
                    w.tuple(t);
                }
                None => {}
            }
            w.u8(b'N');
            w.tuple(&u.new);
        }
        Message::Delete(d) => {
            stream_xid(&mut w, &d.xid);
            w.u32(d.rel_id.0);
            w.u8(match d.old {
                OldTuple::Key(_) => b'K',
                OldTuple::Full(_) => b'O',
            });
            w.tuple(d.old.tuple());
        }
        Message::Truncate(t) => {
            stream_xid(&mut w, &t.xid);
            w.i32(t.rel_ids.len() as i32);
            w.u8(t.options);
            for id in &t.rel_ids {
                w.u32(id.0);
            }
        }
        Message::LogicalMessage(l) => {
            stream_xid(&mut w, &l.xid);
            w.u8(l.flags);
            w.lsn(l.lsn);
            w.cstr(&l.prefix);
            w.i32(l.content.len() as i32);
            w.0.extend_from_slice(&l.content);
        }
        Message::StreamStart { xid, first_segment } => {
            w.u32(*xid);
            w.u8(u8::from(*first_segment));
        }
        Message::StreamStop => {}
        Message::StreamCommit(c) => {
            w.u32(c.xid);
            w.u8(c.flags);
            w.lsn(c.commit_lsn);
            w.lsn(c.end_lsn);
            w.i64(c.commit_time);
        }
        Message::StreamAbort { xid, subxid } => {
            w.u32(*xid);
            w.u32(*subxid);
        }
        Message::BeginPrepare(b) => {
            w.lsn(b.prepare_lsn);
            w.lsn(b.end_lsn);
            w.i64(b.prepare_time);
            w.u32(b.xid);
            w.cstr(&b.gid);
        }
        Message::Prepare(p) | Message::StreamPrepare(p) => {
            w.u8(p.flags);
            w.lsn(p.prepare_lsn);
            w.lsn(p.end_lsn);
            w.i64(p.prepare_time);
            w.u32(p.xid);
            w.cstr(&p.gid);
        }
        Message::CommitPrepared(c) => {
            w.u8(c.flags);
            w.lsn(c.commit_lsn);
            w.lsn(c.end_lsn);
            w.i64(c.commit_time);
            w.u32(c.xid);
            w.cstr(&c.gid);
        }
        Message::RollbackPrepared(r) => {
            w.u8(r.flags);
            w.lsn(r.prepare_end_lsn);
            w.lsn(r.rollback_end_lsn);
            w.i64(r.prepare_time);
            w.i64(r.rollback_time);
            w.u32(r.xid);
            w.cstr(&r.gid);
        }
    }
    (w.0, in_stream)
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn lsn(&mut self, v: Lsn) {
        self.0.extend_from_slice(&v.0.to_be_bytes());
    }
    fn cstr(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
    fn tuple(&mut self, t: &Tuple) {
        self.i16(t.values.len() as i16);
        for v in &t.values {
            match v {
                Value::Null => self.u8(b'n'),
                Value::UnchangedToast => self.u8(b'u'),
                Value::Text(b) | Value::Binary(b) => {
                    self.u8(if matches!(v, Value::Text(_)) {
                        b't'
                    } else {
                        b'b'
                    });
                    self.i32(b.len() as i32);
                    self.0.extend_from_slice(b);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Property tests

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

/// Any UTF-8 name without NUL, as PostgreSQL identifiers and GIDs are.
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn payload() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::UnchangedToast),
        payload().prop_map(Value::Text),
        payload().prop_map(Value::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = Tuple> {
    vec(value(), 0..8).prop_map(|values| Tuple { values })
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn column() -> impl Strategy<Value = Column> {
    (any::<u8>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(flags, name, type_oid, type_modifier)| Column {
            flags,
            name,
            type_oid,
            type_modifier,
        },
    )
}

fn xid() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(any::<u32>())
}

fn transaction_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
            Message::Begin(Begin {
                final_lsn,
                commit_time,
                xid,
            })
        }),
        (any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time)| Message::Commit(Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        ),
        (lsn(), name()).prop_map(|(commit_lsn, name)| Message::Origin(Origin { commit_lsn, name })),
        (any::<u32>(), any::<bool>())
            .prop_map(|(xid, first_segment)| Message::StreamStart { xid, first_segment }),
        Just(Message::StreamStop),
        (any::<u32>(), any::<u8>(), lsn(), lsn(), any::<i64>()).prop_map(
            |(xid, flags, commit_lsn, end_lsn, commit_time)| Message::StreamCommit(StreamCommit {
                xid,
                flags,
                commit_lsn,
                end_lsn,
                commit_time,
            })
        ),
        (any::<u32>(), any::<u32>()).prop_map(|(xid, subxid)| Message::StreamAbort { xid, subxid }),
    ]
}

fn prepare() -> impl Strategy<Value = Prepare> {
    (
        any::<u8>(),
        lsn(),
        lsn(),
        any::<i64>(),
        any::<u32>(),
        name(),
    )
        .prop_map(
            |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| Prepare {
                flags,
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            },
        )
}

fn two_phase_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (lsn(), lsn(), any::<i64>(), any::<u32>(), name()).prop_map(
            |(prepare_lsn, end_lsn, prepare_time, xid, gid)| Message::BeginPrepare(BeginPrepare {
                prepare_lsn,
                end_lsn,
                prepare_time,
                xid,
                gid,
            })
        ),
        prepare().prop_map(Message::Prepare),
        prepare().prop_map(Message::StreamPrepare),
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(|(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                Message::CommitPrepared(CommitPrepared {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time,
                    xid,
                    gid,
                })
            }),
        (
            any::<u8>(),
            lsn(),
            lsn(),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            name()
        )
            .prop_map(
                |(
                    flags,
                    prepare_end_lsn,
                    rollback_end_lsn,
                    prepare_time,
                    rollback_time,
                    xid,
                    gid,
                )| {
                    Message::RollbackPrepared(RollbackPrepared {
                        flags,
                        prepare_end_lsn,
                        rollback_end_lsn,
                        prepare_time,
                        rollback_time,
                        xid,
                        gid,
                    })
                }
            ),
    ]
}

fn change_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            xid(),
            any::<u32>(),
            name(),
            name(),
            any::<u8>(),
            vec(column(), 0..6)
        )
            .prop_map(
                |(xid, rel_id, namespace, name, replica_identity, columns)| {
                    Message::Relation(Relation {
                        xid,
                        rel_id: RelId(rel_id),
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    })
                }
            ),
        (xid(), any::<u32>(), name(), name()).prop_map(|(xid, oid, namespace, name)| {
            Message::Type(TypeMsg {
                xid,
                oid,
                namespace,
                name,
            })
        }),
        (xid(), any::<u32>(), tuple()).prop_map(|(xid, rel_id, new)| Message::Insert(Insert {
            xid,
            rel_id: RelId(rel_id),
            new
        })),
        (
            xid(),
            any::<u32>(),
            proptest::option::of(old_tuple()),
            tuple()
        )
            .prop_map(|(xid, rel_id, old, new)| Message::Update(Update {
                xid,
                rel_id: RelId(rel_id),
                old,
                new,
            })),
        (xid(), any::<u32>(), old_tuple()).prop_map(|(xid, rel_id, old)| Message::Delete(Delete {
            xid,
            rel_id: RelId(rel_id),
            old
        })),
        (xid(), any::<u8>(), vec(any::<u32>(), 0..6)).prop_map(|(xid, options, rel_ids)| {
            Message::Truncate(Truncate {
                xid,
                options,
                rel_ids: rel_ids.into_iter().map(RelId).collect(),
            })
        }),
        (xid(), any::<u8>(), lsn(), name(), payload()).prop_map(
            |(xid, flags, lsn, prefix, content)| Message::LogicalMessage(LogicalMessage {
                xid,
                flags,
                lsn,
                prefix,
                content,
            })
        ),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![transaction_message(), two_phase_message(), change_message()]
}

/// Bytes that start with a real tag, so the decoder gets past the first byte.
fn tagged_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::sample::select(&b"BCORYIUDTMSEcAbPKrp"[..]),
        vec(any::<u8>(), 0..96),
    )
        .prop_map(|(tag, mut rest)| {
            rest.insert(0, tag);
            rest
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(raw in vec(any::<u8>(), 0..256), in_stream in any::<bool>()) {
        let _ = decode(&Bytes::from(raw), in_stream);
    }

    #[test]
    fn tagged_garbage_never_panics(raw in tagged_bytes(), in_stream in any::<bool>()) {
        let _ = decode(&Bytes::from(raw), in_stream);
    }

    #[test]
    fn decode_reverses_encode(msg in message()) {
        let (raw, in_stream) = encode(&msg);
        prop_assert_eq!(decode(&Bytes::from(raw), in_stream), Ok(msg));
    }

    #[test]
    fn strict_prefixes_of_a_message_are_errors(msg in message()) {
        let (raw, in_stream) = encode(&msg);
        let raw = Bytes::from(raw);
        for len in 0..raw.len() {
            prop_assert!(decode(&raw.slice(..len), in_stream).is_err(), "prefix {} decoded", len);
        }
    }

    #[test]
    fn appended_bytes_are_errors(msg in message(), extra in vec(any::<u8>(), 1..8)) {
        let (mut raw, in_stream) = encode(&msg);
        raw.extend_from_slice(&extra);
        prop_assert!(decode(&Bytes::from(raw), in_stream).is_err());
    }

    #[test]
    fn corrupted_real_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        in_stream in any::<bool>(),
    ) {
        static FRAMES: OnceLock<Vec<Bytes>> = OnceLock::new();
        let all = FRAMES.get_or_init(|| frames("v1_basic.hex"));
        let mut raw = all[pick.index(all.len())].to_vec();
        for (at, byte) in edits {
            let i = at.index(raw.len());
            raw[i] = byte;
        }
        raw.truncate(1 + cut.index(raw.len()));
        let _ = decode(&Bytes::from(raw), in_stream);
    }
}

//! The schema-change planner: what the StarRocks table does when a replicated table's columns
//! change in PostgreSQL.
//!
//! It compares three things: the schema dbmazz streamed with until now (the cache's previous
//! Relation, or the version persisted next to the checkpoint when the change was made while
//! dbmazz was stopped), the new one, and the StarRocks table as it is. It then decides, per
//! column, under the policies of the README's "Schema changes" section:
//!
//! | change | default | policy |
//! |---|---|---|
//! | add column | add it (nullable) | |
//! | widening type change | `MODIFY COLUMN` | |
//! | narrowing or incompatible type change | stop, naming the statements | `SCHEMA_TYPE_CHANGE=stop\|recreate_column` |
//! | drop column | keep the StarRocks column (NULL from then on) | `SCHEMA_DROP_COLUMN=keep\|drop\|stop` |
//! | rename column | `RENAME COLUMN` (StarRocks ≥ 3.3.2), else stop | |
//!
//! Comparing with the StarRocks table makes every step idempotent: a change already made
//! (before a crash, or by a person) is not made again. pgoutput's Relation messages carry no
//! column numbers, so a rename is recognised as one column leaving and another of the same type
//! arriving at the same position; a drop and an add of the same type at the same place with no
//! row change between them look the same, and are taken as a rename.
//!
//! The planner is pure: the sink runs its steps (see `sink.rs`).

use crate::config::{SchemaDropColumn, SchemaTypeChange, TableName};
use crate::metrics::SchemaChangeKind;
use crate::pipeline::change::{CatalogColumn, ColumnSchema, TableSchema};
use crate::starrocks::ddl::{
    add_column_sql, drop_column_sql, modify_column_sql, rename_column_sql, TargetTable,
};
use crate::starrocks::types::{builtin_array_elem, starrocks_type};

/// One decided step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add a nullable column.
    Add {
        /// Column.
        column: String,
        /// StarRocks type.
        sr_type: String,
    },
    /// Widen a column's type with `MODIFY COLUMN`.
    Modify {
        /// Column.
        column: String,
        /// The change in PostgreSQL's words.
        change: String,
        /// New StarRocks type.
        sr_type: String,
    },
    /// Drop the column and add it again with the new type (`SCHEMA_TYPE_CHANGE=recreate_column`).
    Recreate {
        /// Column.
        column: String,
        /// The change in PostgreSQL's words.
        change: String,
        /// New StarRocks type.
        sr_type: String,
    },
    /// Drop the StarRocks column (`SCHEMA_DROP_COLUMN=drop`).
    Drop {
        /// Column.
        column: String,
    },
    /// Keep the StarRocks column of a column dropped in PostgreSQL (`SCHEMA_DROP_COLUMN=keep`).
    Keep {
        /// Column.
        column: String,
    },
    /// Rename the StarRocks column.
    Rename {
        /// Old name.
        from: String,
        /// New name.
        to: String,
    },
    /// A type change the StarRocks column needs nothing for (both map to the same type).
    Same {
        /// Column.
        column: String,
        /// The change in PostgreSQL's words.
        change: String,
    },
}

impl Step {
    /// The kind of change, for the metrics.
    pub fn kind(&self) -> SchemaChangeKind {
        match self {
            Step::Add { .. } => SchemaChangeKind::AddColumn,
            Step::Modify { .. } | Step::Same { .. } => SchemaChangeKind::WidenType,
            Step::Recreate { .. } => SchemaChangeKind::ChangeType,
            Step::Drop { .. } | Step::Keep { .. } => SchemaChangeKind::DropColumn,
            Step::Rename { .. } => SchemaChangeKind::RenameColumn,
        }
    }

    /// What dbmazz does, in one word (`GetStatus`).
    pub fn action(&self) -> &'static str {
        match self {
            Step::Add { .. } | Step::Modify { .. } | Step::Drop { .. } | Step::Rename { .. } => {
                "propagated"
            }
            Step::Recreate { .. } => "recreated",
            Step::Keep { .. } | Step::Same { .. } => "kept",
        }
    }

    /// The statement it runs on the StarRocks table, if any.
    pub fn statement(&self, db: &str, table: &str) -> Option<String> {
        match self {
            Step::Add { column, sr_type } => Some(add_column_sql(db, table, column, sr_type)),
            Step::Modify {
                column, sr_type, ..
            } => Some(modify_column_sql(db, table, column, sr_type)),
            Step::Recreate {
                column, sr_type, ..
            } => Some(format!(
                "{}; {}",
                drop_column_sql(db, table, column),
                add_column_sql(db, table, column, sr_type)
            )),
            Step::Drop { column } => Some(drop_column_sql(db, table, column)),
            Step::Rename { from, to } => Some(rename_column_sql(db, table, from, to)),
            Step::Keep { .. } | Step::Same { .. } => None,
        }
    }

    /// The step in words.
    pub fn describe(&self) -> String {
        match self {
            Step::Add { column, sr_type } => format!("column {column:?} added ({sr_type})"),
            Step::Modify { column, change, .. } => format!("column {column:?} widened: {change}"),
            Step::Recreate { column, change, .. } => {
                format!("column {column:?} changed type ({change}); recreated, its values of unchanged rows are NULL until they change")
            }
            Step::Drop { column } => format!("column {column:?} dropped"),
            Step::Keep { column } => {
                format!("column {column:?} dropped in PostgreSQL; kept in StarRocks, NULL in rows written from now on")
            }
            Step::Rename { from, to } => format!("column {from:?} renamed to {to:?}"),
            Step::Same { column, change } => {
                format!(
                    "column {column:?} changed type ({change}); same StarRocks type, nothing to do"
                )
            }
        }
    }
}

/// A change the policies say to stop on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlanStop {
    /// What changed.
    pub kind: SchemaChangeKind,
    /// Table, column, change, policy, and the statements to run.
    pub message: String,
}

/// Policies and facts the planner needs.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    /// `SCHEMA_TYPE_CHANGE`.
    pub type_change: SchemaTypeChange,
    /// `SCHEMA_DROP_COLUMN`.
    pub drop_column: SchemaDropColumn,
    /// Whether the cluster has `RENAME COLUMN`.
    pub rename_supported: bool,
    /// The cluster's version, for messages.
    pub version: &'a str,
    /// The StarRocks database.
    pub db: &'a str,
}

/// How a column's type changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeChange {
    /// No change.
    None,
    /// Every old value fits the new type unchanged.
    Widening,
    /// Values may not fit, or change meaning.
    Other,
}

const INT2: u32 = 21;
const INT4: u32 = 23;
const INT8: u32 = 20;
const FLOAT4: u32 = 700;
const FLOAT8: u32 = 701;
const NUMERIC: u32 = 1700;
const BPCHAR: u32 = 1042;
const VARCHAR: u32 = 1043;
const TEXT: u32 = 25;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;

/// Classifies a change of type (OID and modifier) from `old` to `new`.
pub fn type_change(old: (u32, i32), new: (u32, i32)) -> TypeChange {
    if old == new {
        return TypeChange::None;
    }
    let ((o, om), (n, nm)) = (old, new);
    // A varchar/char length: the modifier minus the 4-byte header; unbounded when < 0.
    let len = |m: i32| (m >= 4).then(|| m - 4);
    let numeric = |m: i32| (m >= 4).then(|| (((m - 4) >> 16) & 0xFFFF, (m - 4) & 0xFFFF));
    let widening = match (o, n) {
        (INT2, INT4 | INT8) | (INT4, INT8) | (FLOAT4, FLOAT8) => true,
        (TIMESTAMP, TIMESTAMPTZ) => true,
        (VARCHAR | BPCHAR, TEXT) => true,
        (VARCHAR, VARCHAR) => match (len(om), len(nm)) {
            (_, None) => true,
            (Some(a), Some(b)) => b >= a,
            (None, Some(_)) => false,
        },
        (BPCHAR, VARCHAR) => match (len(om), len(nm)) {
            (_, None) => true,
            (Some(a), Some(b)) => b >= a,
            (None, Some(_)) => false,
        },
        (NUMERIC, NUMERIC) => match (numeric(om), numeric(nm)) {
            (_, None) => true,
            // Integer digits and scale both at least as large: every value fits unchanged.
            (Some((p, s)), Some((p2, s2))) => s2 >= s && p2 - s2 >= p - s,
            (None, Some(_)) => false,
        },
        _ => false,
    };
    if widening {
        TypeChange::Widening
    } else {
        TypeChange::Other
    }
}

/// PostgreSQL's spelling of a built-in type, for messages.
pub fn pg_type_text(oid: u32, typmod: i32) -> String {
    let base = match oid {
        16 => "boolean",
        INT2 => "smallint",
        INT4 => "integer",
        INT8 => "bigint",
        FLOAT4 => "real",
        FLOAT8 => "double precision",
        NUMERIC => "numeric",
        BPCHAR => "character",
        VARCHAR => "character varying",
        TEXT => "text",
        TIMESTAMP => "timestamp",
        TIMESTAMPTZ => "timestamptz",
        1082 => "date",
        2950 => "uuid",
        114 => "json",
        3802 => "jsonb",
        17 => "bytea",
        _ => return format!("type {oid}"),
    };
    match oid {
        VARCHAR | BPCHAR if typmod >= 4 => format!("{base}({})", typmod - 4),
        NUMERIC if typmod >= 4 => {
            let (p, s) = (((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF);
            format!("{base}({p},{s})")
        }
        _ => base.to_owned(),
    }
}

/// The catalog form of a streamed column (what the type mapping takes).
fn catalog_column(c: &ColumnSchema) -> CatalogColumn {
    CatalogColumn {
        name: c.name.clone(),
        type_oid: c.type_oid,
        type_modifier: c.type_modifier,
        elem_oid: builtin_array_elem(c.type_oid),
        not_null: false,
        array_dims: 0,
    }
}

/// The StarRocks type dbmazz gives a (non-key) column.
pub fn sr_type_of(c: &ColumnSchema) -> String {
    starrocks_type(&catalog_column(c), false)
}

/// Whether StarRocks' `COLUMN_TYPE` text (`int(11)`, `varchar(40)`, `decimal(10,2)`) is the
/// type dbmazz spells `sr_type` (`INT`, `VARCHAR(40)`, `DECIMAL(10,2)`).
pub fn same_sr_type(column_type: &str, sr_type: &str) -> bool {
    fn norm(t: &str) -> String {
        let t: String = t
            .to_ascii_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        // Display widths of integers mean nothing.
        for int in ["tinyint", "smallint", "bigint", "largeint", "int"] {
            if let Some(rest) = t.strip_prefix(int) {
                if rest.starts_with('(') && rest.ends_with(')') {
                    return int.to_owned();
                }
            }
        }
        // StarRocks shows DECIMAL(p,s) as decimal32/64/128(p,s) in some versions.
        for d in ["decimal32", "decimal64", "decimal128"] {
            if let Some(rest) = t.strip_prefix(d) {
                return format!("decimal{rest}");
            }
        }
        match t.as_str() {
            "string" => "varchar(65533)".to_owned(),
            _ => t,
        }
    }
    norm(column_type) == norm(sr_type)
}

/// Plans the StarRocks side of `old` → `new` for `table`, whose StarRocks table is `target`.
pub fn plan(
    table: &TableName,
    old: &TableSchema,
    new: &TableSchema,
    target: &TargetTable,
    policy: &Policy<'_>,
) -> Result<Vec<Step>, PlanStop> {
    let sr_table = table.name.as_str();
    let key_names: Vec<&str> = new
        .key
        .iter()
        .filter_map(|&i| new.columns.get(i).map(|c| c.name.as_str()))
        .collect();
    let in_new = |name: &str| new.columns.iter().any(|c| c.name == name);
    let in_old = |name: &str| old.columns.iter().any(|c| c.name == name);
    let removed: Vec<(usize, &ColumnSchema)> = old
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !in_new(&c.name))
        .collect();
    let added: Vec<(usize, &ColumnSchema)> = new
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| !in_old(&c.name))
        .collect();
    // Renames: a column leaving and one of the same type arriving at the same position.
    let mut renames: Vec<(&ColumnSchema, &ColumnSchema)> = Vec::new();
    let mut gone: Vec<&ColumnSchema> = Vec::new();
    let mut fresh: Vec<&ColumnSchema> = added.iter().map(|(_, c)| *c).collect();
    for (i, o) in &removed {
        let partner = added.iter().find(|(j, n)| {
            j == i
                && n.type_oid == o.type_oid
                && n.type_modifier == o.type_modifier
                && fresh.iter().any(|f| f.name == n.name)
        });
        match partner {
            Some((_, n)) => {
                renames.push((o, n));
                fresh.retain(|f| f.name != n.name);
            }
            None => gone.push(o),
        }
    }

    let mut steps = Vec::new();
    for (from, to) in renames {
        if !target.has(&from.name) && target.has(&to.name) {
            continue; // made already
        }
        let statement = rename_column_sql(policy.db, sr_table, &from.name, &to.name);
        if !policy.rename_supported {
            return Err(PlanStop {
                kind: SchemaChangeKind::RenameColumn,
                message: format!(
                    "column {:?} of table {table} was renamed to {:?} in PostgreSQL, and StarRocks \
                     {} has no RENAME COLUMN (it came in 3.3.2): dbmazz stops before writing any \
                     row with the new name. Upgrade StarRocks and restart, or rename the column \
                     back in PostgreSQL; on 3.3.2 or later dbmazz runs: {statement}",
                    from.name, to.name, policy.version
                ),
            });
        }
        steps.push(Step::Rename {
            from: from.name.clone(),
            to: to.name.clone(),
        });
    }
    for o in gone {
        match policy.drop_column {
            SchemaDropColumn::Keep => steps.push(Step::Keep {
                column: o.name.clone(),
            }),
            SchemaDropColumn::Drop => {
                if target.has(&o.name) {
                    steps.push(Step::Drop {
                        column: o.name.clone(),
                    });
                }
            }
            SchemaDropColumn::Stop => {
                return Err(PlanStop {
                    kind: SchemaChangeKind::DropColumn,
                    message: format!(
                        "column {:?} of table {table} was dropped in PostgreSQL, and \
                         SCHEMA_DROP_COLUMN=stop: dbmazz stops before writing any row without it. \
                         Drop it in StarRocks ({}) and restart, or restart with \
                         SCHEMA_DROP_COLUMN=keep (the column stays, NULL in rows written from \
                         then on) or SCHEMA_DROP_COLUMN=drop",
                        o.name,
                        drop_column_sql(policy.db, sr_table, &o.name)
                    ),
                })
            }
        }
    }
    for o in &old.columns {
        let Some(n) = new.columns.iter().find(|n| n.name == o.name) else {
            continue;
        };
        let change = type_change((o.type_oid, o.type_modifier), (n.type_oid, n.type_modifier));
        if change == TypeChange::None {
            continue;
        }
        let words = format!(
            "{} → {}",
            pg_type_text(o.type_oid, o.type_modifier),
            pg_type_text(n.type_oid, n.type_modifier)
        );
        let sr_type = sr_type_of(n);
        let current = target
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&n.name));
        if current.is_some_and(|c| same_sr_type(&c.column_type, &sr_type)) {
            steps.push(Step::Same {
                column: n.name.clone(),
                change: words,
            });
            continue;
        }
        if key_names.contains(&n.name.as_str()) {
            return Err(PlanStop {
                kind: SchemaChangeKind::KeyChange,
                message: format!(
                    "primary-key column {:?} of table {table} changed type in PostgreSQL ({words}); \
                     StarRocks cannot change a key column of a primary-key table, so dbmazz \
                     stops before writing any row with the new type. Rebuild the target: drop \
                     the StarRocks table '{sr_table}' and this job's slot and checkpoint, then \
                     start again (a fresh snapshot), with CREATE_TABLES=true or the table \
                     created with the key as {sr_type}",
                    n.name
                ),
            });
        }
        match (change, policy.type_change) {
            (TypeChange::Widening, _) => steps.push(Step::Modify {
                column: n.name.clone(),
                change: words,
                sr_type,
            }),
            (_, SchemaTypeChange::RecreateColumn) => steps.push(Step::Recreate {
                column: n.name.clone(),
                change: words,
                sr_type,
            }),
            (_, SchemaTypeChange::Stop) => {
                return Err(PlanStop {
                    kind: SchemaChangeKind::ChangeType,
                    message: format!(
                        "column {:?} of table {table} changed type in PostgreSQL ({words}), which \
                         may not keep every value, and SCHEMA_TYPE_CHANGE=stop: dbmazz stops \
                         before writing any row with the new type. Change the StarRocks column \
                         yourself ({}; or, losing its values until rows change again: {}; {}) and \
                         restart, or restart with SCHEMA_TYPE_CHANGE=recreate_column",
                        n.name,
                        modify_column_sql(policy.db, sr_table, &n.name, &sr_type),
                        drop_column_sql(policy.db, sr_table, &n.name),
                        add_column_sql(policy.db, sr_table, &n.name, &sr_type)
                    ),
                })
            }
        }
    }
    for n in fresh {
        if !target.has(&n.name) {
            steps.push(Step::Add {
                column: n.name.clone(),
                sr_type: sr_type_of(n),
            });
        }
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::change::RelId;
    use crate::starrocks::ddl::TargetColumn;
    use crate::value::ValueKind;

    fn col(name: &str, oid: u32, typmod: i32) -> ColumnSchema {
        ColumnSchema {
            name: name.into(),
            type_oid: oid,
            type_modifier: typmod,
            kind: ValueKind::for_oid(oid, &Default::default()),
        }
    }

    fn schema(cols: Vec<ColumnSchema>) -> TableSchema {
        TableSchema {
            rel_id: RelId(1),
            name: TableName::new("public", "t"),
            columns: cols,
            key: vec![0],
            replica_identity: b'd',
        }
    }

    fn target(cols: &[(&str, &str)]) -> TargetTable {
        TargetTable {
            columns: cols
                .iter()
                .map(|(n, t)| TargetColumn {
                    name: n.to_string(),
                    column_type: t.to_string(),
                })
                .collect(),
            model: Some("PRIMARY_KEYS".into()),
        }
    }

    fn policy(drop: SchemaDropColumn, ty: SchemaTypeChange, rename: bool) -> Policy<'static> {
        Policy {
            type_change: ty,
            drop_column: drop,
            rename_supported: rename,
            version: "3.3.5",
            db: "app",
        }
    }

    fn default_policy() -> Policy<'static> {
        policy(SchemaDropColumn::Keep, SchemaTypeChange::Stop, true)
    }

    const VC: fn(i32) -> i32 = |n| n + 4;

    #[test]
    fn widenings_are_recognised_and_narrowings_are_not() {
        assert_eq!(type_change((INT2, -1), (INT8, -1)), TypeChange::Widening);
        assert_eq!(type_change((INT4, -1), (INT8, -1)), TypeChange::Widening);
        assert_eq!(type_change((INT8, -1), (INT4, -1)), TypeChange::Other);
        assert_eq!(
            type_change((FLOAT4, -1), (FLOAT8, -1)),
            TypeChange::Widening
        );
        assert_eq!(
            type_change((VARCHAR, VC(10)), (VARCHAR, VC(20))),
            TypeChange::Widening
        );
        assert_eq!(
            type_change((VARCHAR, VC(20)), (VARCHAR, VC(10))),
            TypeChange::Other
        );
        assert_eq!(
            type_change((VARCHAR, VC(20)), (TEXT, -1)),
            TypeChange::Widening
        );
        assert_eq!(
            type_change((TEXT, -1), (VARCHAR, VC(20))),
            TypeChange::Other
        );
        let num = |p: i32, s: i32| ((p << 16) | s) + 4;
        assert_eq!(
            type_change((NUMERIC, num(10, 2)), (NUMERIC, num(12, 2))),
            TypeChange::Widening
        );
        assert_eq!(
            type_change((NUMERIC, num(10, 2)), (NUMERIC, num(10, 4))),
            TypeChange::Other
        );
        assert_eq!(
            type_change((NUMERIC, num(10, 2)), (NUMERIC, -1)),
            TypeChange::Widening
        );
        assert_eq!(
            type_change((TIMESTAMP, -1), (TIMESTAMPTZ, -1)),
            TypeChange::Widening
        );
        assert_eq!(type_change((INT4, -1), (TEXT, -1)), TypeChange::Other);
    }

    #[test]
    fn a_widening_is_a_modify_and_a_same_type_mapping_is_nothing() {
        let old = schema(vec![
            col("id", INT4, -1),
            col("n", INT4, -1),
            col("ts", TIMESTAMP, -1),
        ]);
        let new = schema(vec![
            col("id", INT4, -1),
            col("n", INT8, -1),
            col("ts", TIMESTAMPTZ, -1),
        ]);
        let t = target(&[("id", "int(11)"), ("n", "int(11)"), ("ts", "datetime")]);
        let steps = plan(&new.name, &old, &new, &t, &default_policy()).unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Modify {
                    column: "n".into(),
                    change: "integer → bigint".into(),
                    sr_type: "BIGINT".into()
                },
                Step::Same {
                    column: "ts".into(),
                    change: "timestamp → timestamptz".into()
                },
            ]
        );
        assert_eq!(
            steps[0].statement("app", "t").unwrap(),
            "ALTER TABLE `app`.`t` MODIFY COLUMN `n` BIGINT NULL"
        );
        // Made already (a restart after the job): nothing to do.
        let done = target(&[("id", "int(11)"), ("n", "bigint(20)"), ("ts", "datetime")]);
        let steps = plan(&new.name, &old, &new, &done, &default_policy()).unwrap();
        assert!(matches!(steps[0], Step::Same { .. }), "{steps:?}");
    }

    #[test]
    fn a_narrowing_stops_with_the_statements_or_recreates_under_the_policy() {
        let old = schema(vec![col("id", INT4, -1), col("v", TEXT, -1)]);
        let new = schema(vec![col("id", INT4, -1), col("v", VARCHAR, VC(5))]);
        let t = target(&[("id", "int(11)"), ("v", "varchar(1048576)")]);
        let err = plan(&new.name, &old, &new, &t, &default_policy()).unwrap_err();
        assert_eq!(err.kind, SchemaChangeKind::ChangeType);
        assert!(
            err.message.contains("text → character varying(5)"),
            "{}",
            err.message
        );
        assert!(err.message.contains("SCHEMA_TYPE_CHANGE=recreate_column"));
        assert!(err
            .message
            .contains("ALTER TABLE `app`.`t` DROP COLUMN `v`"));
        let steps = plan(
            &new.name,
            &old,
            &new,
            &t,
            &policy(
                SchemaDropColumn::Keep,
                SchemaTypeChange::RecreateColumn,
                true,
            ),
        )
        .unwrap();
        assert!(matches!(&steps[..], [Step::Recreate { sr_type, .. }] if sr_type == "VARCHAR(20)"));
    }

    #[test]
    fn a_key_column_type_change_always_stops() {
        let old = schema(vec![col("id", INT4, -1)]);
        let new = schema(vec![col("id", INT8, -1)]);
        let t = target(&[("id", "int(11)")]);
        let err = plan(&new.name, &old, &new, &t, &default_policy()).unwrap_err();
        assert_eq!(err.kind, SchemaChangeKind::KeyChange);
    }

    #[test]
    fn drops_follow_the_policy() {
        let old = schema(vec![
            col("id", INT4, -1),
            col("a", TEXT, -1),
            col("b", INT4, -1),
        ]);
        let new = schema(vec![col("id", INT4, -1), col("b", INT4, -1)]);
        let t = target(&[
            ("id", "int(11)"),
            ("a", "varchar(1048576)"),
            ("b", "int(11)"),
        ]);
        let keep = plan(&new.name, &old, &new, &t, &default_policy()).unwrap();
        assert_eq!(keep, vec![Step::Keep { column: "a".into() }]);
        let drop = policy(SchemaDropColumn::Drop, SchemaTypeChange::Stop, true);
        assert_eq!(
            plan(&new.name, &old, &new, &t, &drop).unwrap(),
            vec![Step::Drop { column: "a".into() }]
        );
        let gone = target(&[("id", "int(11)"), ("b", "int(11)")]);
        assert_eq!(plan(&new.name, &old, &new, &gone, &drop).unwrap(), vec![]);
        let stop = policy(SchemaDropColumn::Stop, SchemaTypeChange::Stop, true);
        let err = plan(&new.name, &old, &new, &t, &stop).unwrap_err();
        assert!(
            err.message.contains("SCHEMA_DROP_COLUMN=stop"),
            "{}",
            err.message
        );
        assert!(err.message.contains("DROP COLUMN `a`"), "{}", err.message);
    }

    #[test]
    fn a_rename_is_propagated_or_stops_on_an_old_starrocks() {
        let old = schema(vec![
            col("id", INT4, -1),
            col("a", TEXT, -1),
            col("b", INT4, -1),
        ]);
        let new = schema(vec![
            col("id", INT4, -1),
            col("z", TEXT, -1),
            col("b", INT4, -1),
        ]);
        let t = target(&[
            ("id", "int(11)"),
            ("a", "varchar(1048576)"),
            ("b", "int(11)"),
        ]);
        assert_eq!(
            plan(&new.name, &old, &new, &t, &default_policy()).unwrap(),
            vec![Step::Rename {
                from: "a".into(),
                to: "z".into()
            }]
        );
        let old_sr = policy(SchemaDropColumn::Keep, SchemaTypeChange::Stop, false);
        let err = plan(&new.name, &old, &new, &t, &old_sr).unwrap_err();
        assert!(
            err.message.contains("RENAME COLUMN `a` TO `z`"),
            "{}",
            err.message
        );
        // Made already.
        let done = target(&[
            ("id", "int(11)"),
            ("z", "varchar(1048576)"),
            ("b", "int(11)"),
        ]);
        assert_eq!(plan(&new.name, &old, &new, &done, &old_sr).unwrap(), vec![]);
    }

    #[test]
    fn a_drop_and_an_add_of_another_type_are_not_a_rename() {
        let old = schema(vec![col("id", INT4, -1), col("a", TEXT, -1)]);
        let new = schema(vec![col("id", INT4, -1), col("c", INT8, -1)]);
        let t = target(&[("id", "int(11)"), ("a", "varchar(1048576)")]);
        assert_eq!(
            plan(&new.name, &old, &new, &t, &default_policy()).unwrap(),
            vec![
                Step::Keep { column: "a".into() },
                Step::Add {
                    column: "c".into(),
                    sr_type: "BIGINT".into()
                }
            ]
        );
    }

    #[test]
    fn starrocks_type_texts_compare_with_dbmazz_spellings() {
        assert!(same_sr_type("int(11)", "INT"));
        assert!(same_sr_type("bigint(20)", "BIGINT"));
        assert!(same_sr_type("varchar(40)", "VARCHAR(40)"));
        assert!(!same_sr_type("varchar(40)", "VARCHAR(80)"));
        assert!(same_sr_type("decimal64(12,2)", "DECIMAL(12,2)"));
        assert!(!same_sr_type("int(11)", "BIGINT"));
    }
}

//! PostgreSQL column types → StarRocks column types, for `CREATE_TABLES` and for columns added
//! mid-stream (stream-load.md §10).
//!
//! | PostgreSQL | StarRocks |
//! |---|---|
//! | bool | BOOLEAN |
//! | int2 / int4 / int8, oid | SMALLINT / INT / BIGINT / BIGINT |
//! | float4 / float8 | FLOAT / DOUBLE (NaN and ±Infinity load as NULL) |
//! | numeric(p,s), p ≤ 38 | DECIMAL(p,s); VARCHAR(p+2) in a key (DECIMAL keys are not allowed) |
//! | numeric(p,s), p > 38, and unbounded numeric | VARCHAR(65533), exact text |
//! | money | DECIMAL(19,2) |
//! | char(n), varchar(n) | VARCHAR(min(4n, 1048576)) (StarRocks lengths are bytes) |
//! | text, unbounded varchar | VARCHAR(1048576) |
//! | uuid | VARCHAR(36) |
//! | json, jsonb | JSON |
//! | bytea | VARCHAR(1048576), lower-case hex |
//! | date | DATE |
//! | timestamp, timestamptz | DATETIME (timestamptz in UTC) |
//! | T[] | ARRAY<T'>, nested once per declared dimension (`int[][]` → ARRAY<ARRAY<INT>>) |
//! | time, timetz, interval, enums, inet, … | VARCHAR(65533), PostgreSQL's text |

use crate::pipeline::change::CatalogColumn;

/// The most bytes a StarRocks VARCHAR holds (before 4.2).
pub const MAX_VARCHAR: u32 = 1_048_576;

/// The StarRocks type for a PostgreSQL column; `in_key` selects key-compatible types.
pub fn starrocks_type(col: &CatalogColumn, in_key: bool) -> String {
    // Key columns may only be BOOLEAN, integers, DATE, DATETIME or VARCHAR in StarRocks.
    if in_key && (col.elem_oid != 0 || matches!(col.type_oid, 700 | 701 | 790)) {
        return "VARCHAR(256)".into();
    }
    scalar_type(col.type_oid, col.type_modifier, in_key).unwrap_or_else(|| {
        if col.elem_oid != 0 {
            let elem =
                scalar_type(col.elem_oid, -1, false).unwrap_or_else(|| "VARCHAR(65533)".into());
            let depth = usize::from(col.array_dims.max(1));
            format!("{}{elem}{}", "ARRAY<".repeat(depth), ">".repeat(depth))
        } else {
            "VARCHAR(65533)".into()
        }
    })
}

fn scalar_type(oid: u32, typmod: i32, in_key: bool) -> Option<String> {
    let varchar = |bytes: u32| format!("VARCHAR({})", bytes.clamp(1, MAX_VARCHAR));
    Some(match oid {
        16 => "BOOLEAN".into(),
        21 => "SMALLINT".into(),
        23 => "INT".into(),
        20 | 26 => "BIGINT".into(),
        700 => "FLOAT".into(),
        701 => "DOUBLE".into(),
        1700 => {
            if typmod < 4 {
                "VARCHAR(65533)".into()
            } else {
                let p = ((typmod - 4) >> 16) as u32;
                let s = ((typmod - 4) & 0xFFFF) as u32;
                if p <= 38 && !in_key {
                    format!("DECIMAL({p},{s})")
                } else {
                    varchar(p + 2)
                }
            }
        }
        790 => "DECIMAL(19,2)".into(),
        1042 | 1043 => {
            if typmod > 4 {
                varchar(((typmod - 4) as u32).saturating_mul(4))
            } else {
                varchar(MAX_VARCHAR)
            }
        }
        25 | 17 => varchar(MAX_VARCHAR),
        2950 => "VARCHAR(36)".into(),
        114 | 3802 => "JSON".into(),
        1082 => "DATE".into(),
        1114 | 1184 => "DATETIME".into(),
        1083 | 1266 | 1186 => "VARCHAR(64)".into(),
        _ => return None,
    })
}

/// The audit columns dbmazz adds to every target table, with their types.
pub const AUDIT_COLUMNS: [(&str, &str); 4] = [
    ("dbmazz_op_type", "TINYINT"),
    ("dbmazz_is_deleted", "BOOLEAN"),
    ("dbmazz_synced_at", "DATETIME"),
    ("dbmazz_cdc_version", "BIGINT"),
];

/// The element type of a built-in array type (0 when `oid` is not one).
pub fn builtin_array_elem(oid: u32) -> u32 {
    match oid {
        1000 => 16,
        1005 => 21,
        1007 => 23,
        1016 => 20,
        1021 => 700,
        1022 => 701,
        1231 => 1700,
        1009 => 25,
        1015 => 1043,
        1014 => 1042,
        199 => 114,
        3807 => 3802,
        1182 => 1082,
        1115 => 1114,
        1185 => 1184,
        2951 => 2950,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(type_oid: u32, type_modifier: i32, elem_oid: u32) -> CatalogColumn {
        CatalogColumn {
            name: "c".into(),
            type_oid,
            type_modifier,
            elem_oid,
            not_null: false,
            array_dims: 0,
        }
    }

    #[test]
    fn maps_the_documented_types() {
        let numeric = |p: i32, s: i32| ((p << 16) | s) + 4;
        assert_eq!(
            starrocks_type(&col(1700, numeric(12, 2), 0), false),
            "DECIMAL(12,2)"
        );
        assert_eq!(
            starrocks_type(&col(1700, numeric(12, 2), 0), true),
            "VARCHAR(14)"
        );
        assert_eq!(
            starrocks_type(&col(1700, numeric(40, 20), 0), false),
            "VARCHAR(42)"
        );
        assert_eq!(starrocks_type(&col(1700, -1, 0), false), "VARCHAR(65533)");
        assert_eq!(starrocks_type(&col(1043, 10 + 4, 0), false), "VARCHAR(40)");
        assert_eq!(starrocks_type(&col(25, -1, 0), false), "VARCHAR(1048576)");
        assert_eq!(starrocks_type(&col(1184, -1, 0), false), "DATETIME");
        assert_eq!(starrocks_type(&col(3802, -1, 0), false), "JSON");
        assert_eq!(starrocks_type(&col(1007, -1, 23), false), "ARRAY<INT>");
        let two_dims = CatalogColumn {
            array_dims: 2,
            ..col(1007, -1, 23)
        };
        assert_eq!(starrocks_type(&two_dims, false), "ARRAY<ARRAY<INT>>");
        assert_eq!(starrocks_type(&col(99_999, -1, 0), false), "VARCHAR(65533)");
        assert_eq!(starrocks_type(&col(701, -1, 0), true), "VARCHAR(256)");
        assert_eq!(starrocks_type(&col(1007, -1, 23), true), "VARCHAR(256)");
    }
}

//! The database servers tenants live on: `PROVISION_SERVERS_FILE`, or the single-server
//! shorthand `PROVISION_POSTGRES_URL` / `PROVISION_MYSQL_URL`, and the placement rule that picks
//! one for a new tenant.
//!
//! A database-per-tenant fleet spreads its tenants over several servers. Each is named, so a
//! tenant's record (the registry) and a job say where a database lives; each has an engine, an
//! admin connection, the role schemas run as, and how many tenants it takes. The shorthand
//! variables define servers named `postgres` and `mysql`, so a one-server setup keeps working
//! unchanged (and its job records, which predate server names, still resolve).
//!
//! ```toml
//! [[servers]]
//! name = "pg-eu-1"
//! engine = "postgres"
//! admin_url = "postgres://admin@10.0.0.5:5432/postgres"
//! admin_password_file = "/run/secrets/pg-eu-1"   # or the password in the URL
//! role = "tenant_owner"                          # default PROVISION_ROLE
//! role_password_file = "/run/secrets/tenant"     # default PROVISION_ROLE_PASSWORD(_FILE)
//! capacity = 500                                 # tenant databases at most (default: no limit)
//! weight = 2                                     # placement share (default 1)
//! labels = { region = "eu", tier = "gold" }
//! ```
//!
//! Placement ([`place`]) takes the servers of the upload's engine whose labels include the
//! requested ones and that are below their capacity, and picks the one with the fewest tenant
//! databases per unit of weight (ties: the name).

use std::collections::BTreeMap;

use crate::env::ConfigError;
use crate::postgres::conninfo::PgConnInfo;
use crate::secret::Secret;

use super::job::SqlEngine;

/// How dbmazz reaches a server as its admin.
#[derive(Clone, Debug)]
pub enum Admin {
    /// A PostgreSQL admin connection.
    Postgres(Box<PgConnInfo>),
    /// A MySQL/MariaDB admin URL, `mysql://admin:pass@host:3306/`.
    Mysql(Secret),
}

/// One database server of the fleet.
#[derive(Clone, Debug)]
pub struct ServerDef {
    /// Its name: 1-63 letters, digits, `-` and `_`.
    pub name: String,
    /// Its kind.
    pub engine: SqlEngine,
    /// The admin connection.
    pub admin: Admin,
    /// The role (PostgreSQL) / user (MySQL) that owns the tenant databases and that files run
    /// as.
    pub role: String,
    /// Its password.
    pub role_password: Option<Secret>,
    /// MySQL: the host part of the account (`PROVISION_MYSQL_ROLE_HOST`).
    pub mysql_role_host: String,
    /// Tenant databases it takes at most; `None`: no limit.
    pub capacity: Option<u64>,
    /// Its share in placement (≥ 1).
    pub weight: u64,
    /// Free-form labels (`region = "eu"`), matched by placement and by migration selectors.
    pub labels: BTreeMap<String, String>,
}

impl ServerDef {
    /// `host:port` of the admin connection, for messages (never the password).
    pub fn place(&self) -> String {
        match &self.admin {
            Admin::Postgres(pg) => format!("{}:{}", pg.host, pg.port),
            Admin::Mysql(url) => match mysql_async::Opts::from_url(url.expose()) {
                Ok(o) => format!("{}:{}", o.ip_or_hostname(), o.tcp_port()),
                Err(_) => "?".into(),
            },
        }
    }

    /// Whether its labels include every `want`ed one.
    pub fn has_labels(&self, want: &BTreeMap<String, String>) -> bool {
        want.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }

    /// The database the admin connects to (never a tenant target).
    pub fn maintenance_database(&self) -> Option<String> {
        match &self.admin {
            Admin::Postgres(pg) => Some(pg.dbname.clone()),
            Admin::Mysql(url) => mysql_async::Opts::from_url(url.expose())
                .ok()
                .and_then(|o| o.db_name().map(str::to_owned)),
        }
    }
}

/// The defaults a server entry takes from the single-server variables.
pub(super) struct RoleDefaults<'a> {
    /// `PROVISION_ROLE`.
    pub(super) role: Option<&'a str>,
    /// `PROVISION_ROLE_PASSWORD` / `_FILE`.
    pub(super) role_password: Option<&'a Secret>,
    /// `PROVISION_MYSQL_ROLE_HOST`.
    pub(super) mysql_role_host: &'a str,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDoc {
    #[serde(default)]
    servers: Vec<FileServer>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileServer {
    name: String,
    engine: String,
    admin_url: String,
    admin_password_file: Option<String>,
    role: Option<String>,
    role_password_file: Option<String>,
    mysql_role_host: Option<String>,
    capacity: Option<u64>,
    weight: Option<u64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

const VAR: &str = "PROVISION_SERVERS_FILE";

/// Reads `PROVISION_SERVERS_FILE`.
pub(super) fn read_file(path: &str, d: &RoleDefaults<'_>) -> Result<Vec<ServerDef>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(VAR, format!("cannot read {path}: {e}")))?;
    let doc: FileDoc = toml::from_str(&text).map_err(|e| {
        // toml's full error quotes the offending line, and its message may quote a value
        // ("invalid type: string \"…\""), either of which may hold a URL with a password:
        // the line number and the message with its quoted values hidden.
        let at = e
            .span()
            .map(|s| format!(" at line {}", text[..s.start].matches('\n').count() + 1))
            .unwrap_or_default();
        ConfigError::new(
            VAR,
            format!(
                "{path}{at}: {}",
                hide_quoted(e.message().lines().next().unwrap_or("invalid TOML"))
            ),
        )
    })?;
    if doc.servers.is_empty() {
        return Err(ConfigError::new(
            VAR,
            format!(
                "{path} defines no server; add [[servers]] entries with name, engine and admin_url"
            ),
        ));
    }
    let mut out: Vec<ServerDef> = Vec::new();
    for s in doc.servers {
        let server = one(s, path, d)?;
        if out.iter().any(|o| o.name == server.name) {
            return Err(ConfigError::new(
                VAR,
                format!("{path}: server {:?} is defined twice", server.name),
            ));
        }
        out.push(server);
    }
    Ok(out)
}

fn one(s: FileServer, path: &str, d: &RoleDefaults<'_>) -> Result<ServerDef, ConfigError> {
    let at = |what: String| ConfigError::new(VAR, format!("{path}: server {:?}: {what}", s.name));
    if !is_server_name(&s.name) {
        return Err(at(
            "the name must be 1-63 letters, digits, '-' and '_'".to_owned()
        ));
    }
    let engine = SqlEngine::parse(&s.engine)
        .ok_or_else(|| at(format!("engine {:?}: expected postgres or mysql", s.engine)))?;
    let file_secret = |what: &str, p: &Option<String>| -> Result<Option<Secret>, ConfigError> {
        match p {
            None => Ok(None),
            Some(p) => std::fs::read_to_string(p)
                .map(|t| Some(Secret::new(t.trim_end_matches(['\n', '\r']))))
                .map_err(|e| at(format!("{what} {p}: {e}"))),
        }
    };
    let admin_password = file_secret("admin_password_file", &s.admin_password_file)?;
    let admin = match engine {
        SqlEngine::Postgres => {
            let mut info =
                PgConnInfo::parse(&s.admin_url).map_err(|e| at(format!("admin_url: {e}")))?;
            if admin_password.is_some() {
                info.password = admin_password;
            }
            Admin::Postgres(Box::new(info))
        }
        SqlEngine::Mysql => {
            let url = if let Some(pw) = admin_password {
                let opts = mysql_async::Opts::from_url(&s.admin_url)
                    .map_err(|_| at("admin_url: not a mysql:// URL".into()))?;
                let opts = mysql_async::OptsBuilder::from_opts(opts).pass(Some(pw.expose()));
                let opts = mysql_async::Opts::from(opts);
                // Rebuilt as a URL so that one form serves both ways in.
                let user = opts.user().unwrap_or_default();
                let db = opts.db_name().unwrap_or_default();
                format!(
                    "mysql://{}:{}@{}:{}/{}",
                    pct(user),
                    pct(pw.expose()),
                    opts.ip_or_hostname(),
                    opts.tcp_port(),
                    db
                )
            } else {
                s.admin_url.clone()
            };
            if !url.starts_with("mysql://") || mysql_async::Opts::from_url(&url).is_err() {
                return Err(at(
                    "admin_url: expected mysql://admin:password@host:3306/ (percent-encode \
                     special characters in the password)"
                        .into(),
                ));
            }
            Admin::Mysql(Secret::new(url))
        }
    };
    let role = match (s.role, d.role) {
        (Some(r), _) => r,
        (None, Some(r)) => r.to_owned(),
        (None, None) => {
            return Err(at(
                "no role: set role here or PROVISION_ROLE for every server".to_owned(),
            ))
        }
    };
    if !super::names::is_role_name(&role) {
        return Err(at(format!(
            "role {role:?} is not a valid role name; use 1-63 letters, digits and underscores"
        )));
    }
    if let Admin::Postgres(pg) = &admin {
        if pg.user == role {
            return Err(at(format!(
                "role {role} is admin_url's user; schemas must run as a separate \
                 non-superuser role"
            )));
        }
    }
    let role_password = match file_secret("role_password_file", &s.role_password_file)? {
        Some(p) => Some(p),
        None => d.role_password.cloned(),
    };
    let mysql_role_host = s
        .mysql_role_host
        .unwrap_or_else(|| d.mysql_role_host.to_owned());
    if mysql_role_host.contains(['\'', '\\', '`']) || mysql_role_host.len() > 255 {
        return Err(at("mysql_role_host: no quotes or backslashes".into()));
    }
    if s.capacity == Some(0) {
        return Err(at(
            "capacity must be at least 1 (or absent: no limit)".into()
        ));
    }
    let weight = s.weight.unwrap_or(1);
    if !(1..=1_000_000).contains(&weight) {
        return Err(at("weight must be 1-1000000".into()));
    }
    for (k, v) in &s.labels {
        if !is_label(k) || !is_label(v) {
            return Err(at(format!(
                "label {k:?} = {v:?}: keys and values are 1-63 letters, digits, '-', '_' and '.'"
            )));
        }
    }
    Ok(ServerDef {
        name: s.name,
        engine,
        admin,
        role,
        role_password,
        mysql_role_host,
        capacity: s.capacity,
        weight,
        labels: s.labels,
    })
}

/// `text` with every double-quoted part replaced by `"…"`.
fn hide_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for c in text.chars() {
        match (c, inside) {
            ('"', false) => {
                out.push_str("\"…");
                inside = true;
            }
            ('"', true) => {
                out.push('"');
                inside = false;
            }
            (_, true) => {}
            (c, false) => out.push(c),
        }
    }
    out
}

fn pct(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A server name: 1-63 letters, digits, `-` and `_`.
pub fn is_server_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A label key or value: 1-63 letters, digits, `-`, `_` and `.`.
pub fn is_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Parses `k=v,k2=v2` (placement and selector labels).
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?}: expected key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if !is_label(k) || !is_label(v) {
            return Err(format!(
                "label {pair:?}: keys and values are 1-63 letters, digits, '-', '_' and '.'"
            ));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

/// Why no server could take a new tenant.
#[derive(Debug, PartialEq, Eq)]
pub struct NoPlace(pub String);

/// Picks the server for a new tenant of `engine` whose server has the labels `want`:
/// among those below their capacity, the fewest databases per unit of weight (ties: name).
/// `count` is the tenant databases a server holds now.
pub fn place<'s>(
    servers: &'s [ServerDef],
    engine: SqlEngine,
    want: &BTreeMap<String, String>,
    count: impl Fn(&str) -> u64,
) -> Result<&'s ServerDef, NoPlace> {
    let of_engine: Vec<&ServerDef> = servers.iter().filter(|s| s.engine == engine).collect();
    if of_engine.is_empty() {
        return Err(NoPlace(format!(
            "no {engine} server is configured (PROVISION_SERVERS_FILE or {})",
            engine.url_var()
        )));
    }
    let labelled: Vec<&ServerDef> = of_engine
        .into_iter()
        .filter(|s| s.has_labels(want))
        .collect();
    if labelled.is_empty() {
        return Err(NoPlace(format!(
            "no {engine} server has the labels {}",
            labels_text(want)
        )));
    }
    labelled
        .into_iter()
        .filter(|s| s.capacity.is_none_or(|c| count(&s.name) < c))
        .min_by(|a, b| {
            // count_a / weight_a < count_b / weight_b, without division.
            let (ca, cb) = (count(&a.name) as u128, count(&b.name) as u128);
            (ca * b.weight as u128)
                .cmp(&(cb * a.weight as u128))
                .then_with(|| a.name.cmp(&b.name))
        })
        .ok_or_else(|| {
            NoPlace(format!(
                "every {engine} server{} is at its capacity; raise capacity in \
                 PROVISION_SERVERS_FILE or add a server",
                if want.is_empty() {
                    String::new()
                } else {
                    format!(" with the labels {}", labels_text(want))
                }
            ))
        })
}

/// `k=v,k2=v2`.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(
        name: &str,
        engine: SqlEngine,
        cap: Option<u64>,
        weight: u64,
        region: &str,
    ) -> ServerDef {
        ServerDef {
            name: name.into(),
            engine,
            admin: Admin::Mysql(Secret::new("mysql://a@h:3306/")),
            role: "r".into(),
            role_password: None,
            mysql_role_host: "%".into(),
            capacity: cap,
            weight,
            labels: [("region".to_owned(), region.to_owned())].into(),
        }
    }

    #[test]
    fn placement_takes_the_fewest_per_weight_within_capacity_and_labels() {
        use SqlEngine::*;
        let servers = [
            server("a", Postgres, Some(2), 1, "eu"),
            server("b", Postgres, None, 2, "eu"),
            server("c", Postgres, None, 1, "us"),
            server("m", Mysql, None, 1, "eu"),
        ];
        let none = BTreeMap::new();
        let eu: BTreeMap<_, _> = [("region".to_owned(), "eu".to_owned())].into();
        let counts = |a: u64, b: u64, c: u64| {
            move |s: &str| match s {
                "a" => a,
                "b" => b,
                "c" => c,
                _ => 0,
            }
        };
        // Ties on count/weight go by name.
        assert_eq!(
            place(&servers, Postgres, &none, counts(0, 0, 0))
                .unwrap()
                .name,
            "a"
        );
        // b holds 2 at weight 2 (1 per unit), a holds 1: a tie at 1, by name a.
        assert_eq!(
            place(&servers, Postgres, &none, counts(1, 2, 3))
                .unwrap()
                .name,
            "a"
        );
        assert_eq!(
            place(&servers, Postgres, &none, counts(1, 1, 3))
                .unwrap()
                .name,
            "b"
        );
        // a is full at 2; labels keep c out.
        assert_eq!(
            place(&servers, Postgres, &eu, counts(2, 9, 0))
                .unwrap()
                .name,
            "b"
        );
        assert_eq!(
            place(&servers, Mysql, &eu, counts(0, 0, 0)).unwrap().name,
            "m"
        );
        let full = [server("a", Postgres, Some(1), 1, "eu")];
        let e = place(&full, Postgres, &none, |_| 1).unwrap_err();
        assert!(e.0.contains("capacity"), "{}", e.0);
        let asia: BTreeMap<_, _> = [("region".to_owned(), "asia".to_owned())].into();
        let e = place(&servers, Postgres, &asia, |_| 0).unwrap_err();
        assert!(e.0.contains("region=asia"), "{}", e.0);
        let e = place(&servers[..1], Mysql, &none, |_| 0).unwrap_err();
        assert!(e.0.contains("PROVISION_MYSQL_URL"), "{}", e.0);
    }

    #[test]
    fn a_servers_file_is_read_with_defaults_and_errors_never_show_passwords() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret-admin\n").unwrap();
        let file = dir.path().join("servers.toml");
        std::fs::write(
            &file,
            format!(
                r#"
[[servers]]
name = "pg-1"
engine = "postgres"
admin_url = "postgres://admin@db1:5432/postgres"
admin_password_file = "{}"
capacity = 10
labels = {{ region = "eu" }}

[[servers]]
name = "my-1"
engine = "mariadb"
admin_url = "mysql://root:hunter2@db2:3306/"
role = "tenant_my"
weight = 3
"#,
                pw.display()
            ),
        )
        .unwrap();
        let rp = Secret::new("role-pw");
        let d = RoleDefaults {
            role: Some("tenant_owner"),
            role_password: Some(&rp),
            mysql_role_host: "%",
        };
        let s = read_file(file.to_str().unwrap(), &d).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].name.as_str(), s[0].engine, s[0].capacity),
            ("pg-1", SqlEngine::Postgres, Some(10))
        );
        assert_eq!(s[0].role, "tenant_owner");
        let Admin::Postgres(pg) = &s[0].admin else {
            panic!()
        };
        assert_eq!(pg.password.as_ref().unwrap().expose(), "s3cret-admin");
        assert_eq!(
            (s[1].role.as_str(), s[1].weight, s[1].engine),
            ("tenant_my", 3, SqlEngine::Mysql)
        );
        assert_eq!(s[1].place(), "db2:3306");

        for (bad, needle) in [
            ("[[servers]]\nname = \"x\"\nengine = \"oracle\"\nadmin_url = \"postgres://a:hunter2@h/d\"\n", "engine"),
            ("[[servers]]\nname = \"bad name\"\nengine = \"pg\"\nadmin_url = \"postgres://a:hunter2@h/d\"\n", "name"),
            ("[[servers]]\nname = \"x\"\nengine = \"pg\"\nadmin_url = \"postgres://a:hunter2@h/d\"\ncolour = 1\n", "line"),
            ("[[servers]]\nname = \"x\"\nengine = \"pg\"\nadmin_url = \"postgres://a:hunter2@h/d\"\ncapacity = 0\n", "capacity"),
            ("", "no server"),
            ("servers = 3 # hunter2\n", "line 1"),
            (
                "[[servers]]\nname = \"x\"\nengine = \"pg\"\nadmin_url = \"postgres://a@h/d\"\ncapacity = \"postgres://a:hunter2@h/d\"\n",
                "line 5",
            ),
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = read_file(file.to_str().unwrap(), &d).unwrap_err();
            assert_eq!(e.var, VAR);
            let text = e.to_string();
            assert!(text.contains(needle), "{needle}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }
}

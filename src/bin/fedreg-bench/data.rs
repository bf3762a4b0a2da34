//! Rows of a benchmark data set and the fastest plain ways to load them.
//!
//! The same generator fills the serving registry (local rows) and measures
//! the floor (the rows as the refreshing registry stores them: foreign, with
//! their peer mapping). Loading is one transaction: batched multi-row
//! INSERTs on SQLite, COPY on PostgreSQL, into fedreg's own schema with all
//! its indexes and foreign keys.

use std::fmt::Write as _;

use anyhow::Context as _;
use base64::Engine as _;
use diesel_async::RunQueryDsl;
use fedreg::store::{BackendKind, DbConn, Store};
use fedreg::with_db;
use futures_util::SinkExt;

use crate::shapes::Shape;

/// A value of a generated row.
#[derive(Debug, Clone)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Real(f64),
    /// A text.
    Text(String),
    /// A boolean.
    Bool(bool),
}

/// One table of a data set: its columns and a generator for row `i`.
pub struct Table {
    /// The table's name in fedreg's schema.
    pub name: &'static str,
    /// The columns each row fills, in order.
    pub columns: Vec<&'static str>,
    /// The number of rows.
    pub rows: usize,
    /// Row `i`'s values, one per column.
    pub row: Box<dyn Fn(usize) -> Vec<Value> + Send + Sync>,
}

/// Creation time of every generated row.
const T0: i64 = 1_700_000_000;

/// An OpenSSH ed25519 public key line, distinct per `i`.
pub fn ssh_key(i: usize) -> String {
    let mut blob = Vec::with_capacity(51);
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    let seed = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    for k in 0..32u64 {
        blob.push((seed.rotate_left((k * 7) as u32) >> 3) as u8 ^ k as u8);
    }
    format!(
        "ssh-ed25519 {} k{i}@bench",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// The tables of `shape`, with ids from 1. With
/// `peer_id`, rows are foreign: they carry `peer_id` and `peer_<kind>_id`.
pub fn tables(shape: Shape, peer_id: Option<i64>) -> Vec<Table> {
    let s = shape;
    let mapping = |kind: &'static str| -> Vec<&'static str> {
        match (peer_id, kind) {
            (None, _) => vec![],
            (Some(_), "site") => vec!["peer_id", "peer_site_id"],
            (Some(_), "person") => vec!["peer_id", "peer_person_id"],
            (Some(_), "key") => vec!["peer_id", "peer_key_id"],
            (Some(_), "node") => vec!["peer_id", "peer_node_id"],
            (Some(_), _) => vec!["peer_id", "peer_slice_id"],
        }
    };
    let map_values = move |id: i64| -> Vec<Value> {
        match peer_id {
            None => vec![],
            Some(p) => vec![Value::Int(p), Value::Int(id)],
        }
    };
    let with_mapping = |kind, cols: &[&'static str]| {
        let mut v = cols.to_vec();
        v.extend(mapping(kind));
        v
    };
    use Value::*;
    vec![
        Table {
            name: "sites",
            columns: with_mapping(
                "site",
                &[
                    "site_id",
                    "login_base",
                    "name",
                    "abbreviated_name",
                    "enabled",
                    "is_public",
                    "max_slices",
                    "max_slivers",
                    "latitude",
                    "longitude",
                    "url",
                    "date_created",
                    "last_updated",
                ],
            ),
            rows: s.sites,
            row: Box::new(move |i| {
                let id = i as i64 + 1;
                let mut r = vec![
                    Int(id),
                    Text(format!("s{i}")),
                    Text(format!("Site {i}")),
                    Text(format!("S{i}")),
                    Bool(true),
                    Bool(true),
                    Int(10),
                    Int(1000),
                    Real(48.0 + (i % 40) as f64 * 0.1),
                    Real(2.0),
                    Text(format!("http://s{i}.example.org")),
                    Int(T0),
                    Int(T0),
                ];
                r.extend(map_values(id));
                r
            }),
        },
        Table {
            name: "persons",
            columns: with_mapping(
                "person",
                &[
                    "person_id",
                    "email",
                    "first_name",
                    "last_name",
                    "title",
                    "enabled",
                    "date_created",
                    "last_updated",
                ],
            ),
            rows: s.persons,
            row: Box::new(move |i| {
                let id = i as i64 + 1;
                let mut r = vec![
                    Int(id),
                    Text(format!("p{i}@example.org")),
                    Text(format!("First{i}")),
                    Text(format!("Last{i}")),
                    Text("Dr".into()),
                    Bool(true),
                    Int(T0),
                    Int(T0),
                ];
                r.extend(map_values(id));
                r
            }),
        },
        Table {
            name: "keys",
            columns: with_mapping("key", &["key_id", "key_type", "key", "is_blacklisted"]),
            rows: s.keys(),
            row: Box::new(move |i| {
                let id = i as i64 + 1;
                let mut r = vec![Int(id), Text("ssh".into()), Text(ssh_key(i)), Bool(false)];
                r.extend(map_values(id));
                r
            }),
        },
        Table {
            name: "nodes",
            columns: with_mapping(
                "node",
                &[
                    "node_id",
                    "hostname",
                    "site_id",
                    "node_type",
                    "boot_state",
                    "model",
                    "version",
                    "date_created",
                    "last_updated",
                ],
            ),
            rows: s.nodes,
            row: Box::new(move |i| {
                let id = i as i64 + 1;
                let site = i % s.sites;
                let mut r = vec![
                    Int(id),
                    Text(format!("n{i}.s{site}.example.org")),
                    Int(site as i64 + 1),
                    Text("regular".into()),
                    Text("boot".into()),
                    Text("pc".into()),
                    Text("5.0".into()),
                    Int(T0),
                    Int(T0),
                ];
                r.extend(map_values(id));
                r
            }),
        },
        Table {
            name: "slices",
            columns: with_mapping(
                "slice",
                &[
                    "slice_id",
                    "site_id",
                    "name",
                    "instantiation",
                    "description",
                    "max_nodes",
                    "creator_person_id",
                    "created",
                    "expires",
                ],
            ),
            rows: s.slices,
            row: Box::new(move |i| {
                let id = i as i64 + 1;
                let site = i % s.sites;
                let mut r = vec![
                    Int(id),
                    Int(site as i64 + 1),
                    Text(format!("s{site}_slice{i}")),
                    Text("plc-instantiated".into()),
                    Text(format!("slice {i}")),
                    Int(100),
                    Int((i % s.persons) as i64 + 1),
                    Int(T0),
                    Int(T0 + 100_000_000),
                ];
                r.extend(map_values(id));
                r
            }),
        },
        Table {
            name: "person_site",
            columns: vec!["person_id", "site_id", "is_primary"],
            rows: s.persons,
            row: Box::new(move |i| {
                vec![Int(i as i64 + 1), Int((i % s.sites) as i64 + 1), Bool(true)]
            }),
        },
        Table {
            name: "person_role",
            columns: vec!["person_id", "role_id"],
            rows: s.persons,
            row: Box::new(|i| vec![Int(i as i64 + 1), Int(30)]),
        },
        Table {
            name: "person_key",
            columns: vec!["person_id", "key_id"],
            rows: s.keys(),
            row: Box::new(move |i| {
                vec![Int((i / s.keys_per_person) as i64 + 1), Int(i as i64 + 1)]
            }),
        },
        Table {
            name: "slice_node",
            columns: vec!["slice_id", "node_id"],
            rows: s.slices * s.nodes_per_slice,
            row: Box::new(move |i| {
                let (slice, k) = (i / s.nodes_per_slice, i % s.nodes_per_slice);
                vec![
                    Int(slice as i64 + 1),
                    Int(((slice + k) % s.nodes) as i64 + 1),
                ]
            }),
        },
        Table {
            name: "slice_person",
            columns: vec!["slice_id", "person_id"],
            rows: s.slices * s.persons_per_slice,
            row: Box::new(move |i| {
                let (slice, p) = (i / s.persons_per_slice, i % s.persons_per_slice);
                vec![
                    Int(slice as i64 + 1),
                    Int(((slice + p) % s.persons) as i64 + 1),
                ]
            }),
        },
    ]
}

/// Appends `v` to `out` as an SQL literal.
fn sql_literal(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => write!(out, "{i}").unwrap(),
        Value::Real(f) => write!(out, "{f}").unwrap(),
        Value::Text(t) => write!(out, "'{}'", t.replace('\'', "''")).unwrap(),
        Value::Bool(b) => out.push_str(if *b { "TRUE" } else { "FALSE" }),
    }
}

/// Appends `v` to `out` as a field of COPY's text format.
fn copy_field(out: &mut String, v: &Value) {
    match v {
        Value::Int(i) => write!(out, "{i}").unwrap(),
        Value::Real(f) => write!(out, "{f}").unwrap(),
        // Generated text has no tabs, newlines or backslashes.
        Value::Text(t) => out.push_str(t),
        Value::Bool(b) => out.push(if *b { 't' } else { 'f' }),
    }
}

/// Runs one SQL statement on `conn`.
pub async fn execute(conn: &mut DbConn, sql: &str) -> anyhow::Result<usize> {
    with_db!(conn, |c| diesel::sql_query(sql).execute(c).await)
        .with_context(|| format!("in: {sql:.200}"))
}

/// Loads `tables` into the database at `url` in one transaction with its
/// fastest plain method; returns the number of rows.
pub async fn load(url: &str, tables: &[Table]) -> anyhow::Result<usize> {
    if fedreg::store::is_postgres_url(url) {
        copy_postgres(url, tables).await
    } else {
        insert_batched(&Store::connect(url).await?, tables).await
    }
}

/// Rows per multi-row INSERT on SQLite.
const INSERT_BATCH: usize = 500;

/// Loads `tables` with multi-row INSERTs of [`INSERT_BATCH`] rows (SQLite).
async fn insert_batched(store: &Store, tables: &[Table]) -> anyhow::Result<usize> {
    let mut conn = store.write().await?;
    execute(&mut conn, "BEGIN").await?;
    let mut total = 0;
    for table in tables {
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            table.name,
            table.columns.join(", ")
        );
        let mut start = 0;
        while start < table.rows {
            let end = (start + INSERT_BATCH).min(table.rows);
            let mut sql = head.clone();
            for i in start..end {
                sql.push(if i == start { '(' } else { ',' });
                if i != start {
                    sql.push('(');
                }
                for (k, v) in (table.row)(i).iter().enumerate() {
                    if k > 0 {
                        sql.push(',');
                    }
                    sql_literal(&mut sql, v);
                }
                sql.push(')');
            }
            execute(&mut conn, &sql).await?;
            start = end;
        }
        total += table.rows;
    }
    execute(&mut conn, "COMMIT").await?;
    Ok(total)
}

/// Loads `tables` with COPY (PostgreSQL).
async fn copy_postgres(url: &str, tables: &[Table]) -> anyhow::Result<usize> {
    let (mut client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    let tx = client.transaction().await?;
    let mut total = 0;
    for table in tables {
        let statement = format!(
            "COPY {} ({}) FROM STDIN",
            table.name,
            table.columns.join(", ")
        );
        let sink = tx
            .copy_in::<_, bytes::Bytes>(&statement)
            .await
            .with_context(|| format!("in: {statement}"))?;
        futures_util::pin_mut!(sink);
        let mut buf = String::with_capacity(1 << 20);
        for i in 0..table.rows {
            for (k, v) in (table.row)(i).iter().enumerate() {
                if k > 0 {
                    buf.push('\t');
                }
                copy_field(&mut buf, v);
            }
            buf.push('\n');
            if buf.len() > (1 << 20) {
                sink.send(bytes::Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .with_context(|| format!("COPY {}", table.name))?;
            }
        }
        if !buf.is_empty() {
            sink.send(bytes::Bytes::from(buf))
                .await
                .with_context(|| format!("COPY {}", table.name))?;
        }
        sink.finish()
            .await
            .with_context(|| format!("COPY {}", table.name))?;
        total += table.rows;
    }
    tx.commit().await?;
    Ok(total)
}

/// Fills the serving registry's database at `url`: fedreg's schema, the
/// rows of `shape` as local ones, the sequences moved past them. Returns
/// the store, for the changes the steps make.
pub async fn fill(url: &str, shape: Shape) -> anyhow::Result<Store> {
    fedreg::store::run_migrations(url).await?;
    load(url, &tables(shape, None)).await?;
    let store = Store::connect(url).await?;
    bump_sequences(&mut store.write().await?).await?;
    Ok(store)
}

/// After loading rows with explicit ids on PostgreSQL, moves each identity
/// sequence past them so that later inserts get fresh ids, and gathers the
/// planner's statistics (autovacuum would, a minute later, on a registry in
/// service; without them the first plans on freshly loaded tables are
/// guesses).
async fn bump_sequences(conn: &mut DbConn) -> anyhow::Result<()> {
    if conn.kind() != BackendKind::Postgres {
        return Ok(());
    }
    execute(conn, "ANALYZE").await?;
    for (table, id) in [
        ("sites", "site_id"),
        ("persons", "person_id"),
        ("keys", "key_id"),
        ("nodes", "node_id"),
        ("slices", "slice_id"),
    ] {
        execute(
            conn,
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{id}'), (SELECT COALESCE(MAX({id}), 0) + 1 FROM {table}), false)"
            ),
        )
        .await?;
    }
    Ok(())
}

/// Changes 1% of persons, nodes and slices, deletes 1%, adds 1%, and moves
/// 1% of slice memberships, on the serving registry's database. `round`
/// picks different objects each time.
pub async fn change_one_percent(
    conn: &mut DbConn,
    shape: Shape,
    round: usize,
) -> anyhow::Result<usize> {
    let step = 100;
    let pick = |count: usize, offset: usize| -> String {
        // Data sets of fewer than `step` objects still get one changed.
        (0..count)
            .skip((round * 7 + offset) % step.min(count.max(1)))
            .step_by(step)
            .map(|i| (i + 1).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut statements = vec![
        format!(
            "UPDATE persons SET first_name = 'Changed{round}' WHERE person_id IN ({})",
            pick(shape.persons, 1)
        ),
        format!(
            "UPDATE nodes SET model = 'changed{round}' WHERE node_id IN ({})",
            pick(shape.nodes, 1)
        ),
        format!(
            "UPDATE slices SET description = 'changed {round}' WHERE slice_id IN ({})",
            pick(shape.slices, 1)
        ),
        format!(
            "DELETE FROM slice_person WHERE slice_id IN ({})",
            pick(shape.slices, 3)
        ),
        // A person goes with its keys, as DeletePerson does.
        format!(
            "DELETE FROM keys WHERE key_id IN (SELECT key_id FROM person_key WHERE person_id IN ({}))",
            pick(shape.persons, 2)
        ),
        format!(
            "DELETE FROM persons WHERE person_id IN ({})",
            pick(shape.persons, 2)
        ),
        format!(
            "DELETE FROM nodes WHERE node_id IN ({})",
            pick(shape.nodes, 2)
        ),
        format!(
            "DELETE FROM slices WHERE slice_id IN ({})",
            pick(shape.slices, 2)
        ),
    ];
    // Moved memberships: the slices that lost their persons get other ones.
    for (n, slice) in (0..shape.slices)
        .skip((round * 7 + 3) % step)
        .step_by(step)
        .enumerate()
    {
        let person = (slice + round + n + 1) % shape.persons + 1;
        statements.push(format!(
            "INSERT INTO slice_person (slice_id, person_id) SELECT {}, {person} WHERE EXISTS (SELECT 1 FROM slices WHERE slice_id = {}) AND EXISTS (SELECT 1 FROM persons WHERE person_id = {person})",
            slice + 1,
            slice + 1
        ));
    }
    // Added objects: new ids above every existing one.
    let added = (shape.persons / step).max(1);
    let base = 10_000_000 * (round + 1);
    for k in 0..added {
        let id = base + k;
        let site = k % shape.sites + 1;
        statements.push(format!(
            "INSERT INTO persons (person_id, email, first_name, last_name, enabled, date_created, last_updated) VALUES ({id}, 'new{id}@example.org', 'New', 'Person', TRUE, {T0}, {T0})"
        ));
        statements.push(format!(
            "INSERT INTO person_site (person_id, site_id, is_primary) VALUES ({id}, {site}, TRUE)"
        ));
        statements.push(format!(
            "INSERT INTO nodes (node_id, hostname, site_id, node_type, boot_state, date_created, last_updated) VALUES ({id}, 'new{id}.example.org', {site}, 'regular', 'boot', {T0}, {T0})"
        ));
        statements.push(format!(
            "INSERT INTO slices (slice_id, site_id, name, instantiation, created, expires) VALUES ({id}, {site}, 's{}_new{id}', 'plc-instantiated', {T0}, {})",
            site - 1,
            T0 + 100_000_000
        ));
        statements.push(format!(
            "INSERT INTO slice_person (slice_id, person_id) VALUES ({id}, {id})"
        ));
    }
    execute(conn, "BEGIN").await?;
    let mut changed = 0;
    for sql in &statements {
        changed += execute(conn, sql).await?;
    }
    execute(conn, "COMMIT").await?;
    Ok(changed)
}

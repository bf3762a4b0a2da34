//! The configuration file (`--config`, `FEDREG_CONFIG`) with the real
//! binary: its settings under the environment and the flags, the peers it
//! declares applied at each start (created, then left as they are, then
//! updated), on both backends; `fedreg config check` and `serve` refusing
//! bad files; the example of docs/configuration.md, complete and valid.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;

use crate::common::Backend;
use crate::common::certs::Ca;
use crate::common::cli::{Served, Storage, bare, failure, run, start, success};
use crate::common::rows::Rows;
use fedreg::proto::v1 as pb;
use tokio::process::Command;

/// Writes `text` to the file `name` in `dir` and returns its path.
fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path
}

/// `fedreg --config FILE` with the clean environment of the tests.
fn with_config(file: &Path) -> Command {
    let mut command = bare();
    command.arg("--config").arg(file);
    command
}

/// The name the server gives itself to its peers (GetPeerData's header).
async fn registry_name(served: &Served, token: &str) -> String {
    let mut stream = served
        .client(token)
        .await
        .peering()
        .get_peer_data(pb::GetPeerDataRequest::default())
        .await
        .expect("GetPeerData")
        .into_inner();
    match stream
        .message()
        .await
        .expect("first chunk")
        .and_then(|c| c.part)
    {
        Some(pb::peer_data_chunk::Part::Header(header)) => header.registry_name,
        other => panic!("GetPeerData starts with {other:?}"),
    }
}

/// Whether the server logged JSON lines while starting.
fn logs_json(served: &Served) -> bool {
    served.startup.iter().any(|line| line.starts_with('{'))
}

async fn settings_come_from_flags_then_env_then_file(backend: Backend) {
    let storage = Storage::new(backend).await;
    let mut text = String::from("data-dir = \"data\"\nlog-format = \"json\"\n");
    if let Some(url) = storage.database_url() {
        text.push_str(&format!("database-url = \"{url}\"\n"));
    }
    text.push_str("\n[serve]\nlisten = \"127.0.0.2:0\"\nname = \"from-file\"\n");
    let file = write(storage.root(), "fedreg.toml", &text);

    // The file alone: its data directory (relative to the file), database,
    // address, name and log format.
    let mut command = with_config(&file);
    command.arg("serve");
    let served = start(command).await;
    let token = served.new_token.clone().expect("a first admin token");
    assert!(
        storage.data_dir.join("admin-token").is_file(),
        "the data directory is the file's, relative to the file"
    );
    assert_eq!(served.addr.ip().to_string(), "127.0.0.2");
    assert_eq!(registry_name(&served, &token).await, "from-file");
    assert!(logs_json(&served), "{:#?}", served.startup);
    assert_eq!(served.terminate().await.0, Some(0));

    // The environment over the file, named by FEDREG_CONFIG this time.
    let mut command = bare();
    command
        .env("FEDREG_CONFIG", &file)
        .env("FEDREG_LISTEN", "127.0.0.3:0")
        .env("FEDREG_NAME", "from-env")
        .arg("serve");
    let served = start(command).await;
    assert_eq!(served.new_token, None, "the same database as before");
    assert_eq!(served.addr.ip().to_string(), "127.0.0.3");
    assert_eq!(registry_name(&served, &token).await, "from-env");
    assert!(logs_json(&served), "{:#?}", served.startup);
    assert_eq!(served.terminate().await.0, Some(0));

    // The flags over both.
    let mut command = with_config(&file);
    command
        .env("FEDREG_LISTEN", "127.0.0.3:0")
        .env("FEDREG_NAME", "from-env")
        .env("FEDREG_LOG_FORMAT", "json")
        .args(["--log-format", "text", "serve"])
        .args(["--listen", "127.0.0.4:0", "--name", "from-flag"]);
    let served = start(command).await;
    assert_eq!(served.addr.ip().to_string(), "127.0.0.4");
    assert_eq!(registry_name(&served, &token).await, "from-flag");
    assert!(!logs_json(&served), "{:#?}", served.startup);
    assert_eq!(served.terminate().await.0, Some(0));
}

/// The peers of a server by name, without what changes as the server
/// runs (refreshes of the scheduled peers, the state of following).
async fn peers_by_name(served: &Served, token: &str) -> BTreeMap<String, pb::Peer> {
    let client = served.client(token).await;
    let peers: Vec<pb::Peer> = client.list_peers().try_collect().await.expect("ListPeers");
    peers
        .into_iter()
        .map(|peer| {
            let settled = pb::Peer {
                follow_status: None,
                last_refresh_time: None,
                last_refresh_outcome: 0,
                last_refresh_report: None,
                ..peer
            };
            (settled.peername.clone(), settled)
        })
        .collect()
}

/// The startup log lines that say what the configuration file did.
fn applied(served: &Served) -> Vec<&str> {
    served
        .startup
        .iter()
        .map(String::as_str)
        .filter(|line| line.contains("from the configuration file"))
        .collect()
}

const PEERS_V1: &str = r#"
[[peer]]
name = "plc2"
url = "https://127.0.0.1:9"
outbound-token-file = "plc2.token"
peer-cacert = "plc2-ca.pem"
client-identity = "plc2.example.org"
refresh-interval = 300
max-delete-fraction = 0.2

[[peer]]
name = "plc3"
url = "http://127.0.0.1:9"
shortname = "P3"
hrn-root = "plc.p3"
follow = true
"#;

/// plc2 moves (and gets a new token: the token file changes too) and
/// leaves out its interval; plc3 is scheduled instead of followed.
const PEERS_V2: &str = r#"
[[peer]]
name = "plc2"
url = "https://localhost:9"
outbound-token-file = "plc2.token"
peer-cacert = "plc2-ca.pem"
client-identity = "plc2.example.org"
max-delete-fraction = 0.2

[[peer]]
name = "plc3"
url = "http://127.0.0.1:9"
shortname = "P3"
hrn-root = "plc.p3"
refresh-interval = 600
follow = false
"#;

async fn declared_peers_are_applied_at_each_start(backend: Backend) {
    let storage = Storage::new(backend).await;
    let dir = storage.root();
    let ca = Ca::new(dir, "plc2-ca");
    let ca_pem = std::fs::read_to_string(&ca.pem).unwrap();
    write(dir, "plc2.token", "token-one\n");
    let file = write(dir, "fedreg.toml", PEERS_V1);
    let serve = || {
        let mut command = storage.command();
        command
            .arg("--config")
            .arg(&file)
            .args(["serve", "--listen", "127.0.0.1:0"]);
        command
    };

    // First start: the file's peers are created.
    let served = start(serve()).await;
    let token = served.new_token.clone().expect("a first admin token");
    let lines = applied(&served);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("peer created from the configuration file") && lines[0].contains("plc2"),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("created") && lines[1].contains("plc3"),
        "{lines:#?}"
    );
    let peers = peers_by_name(&served, &token).await;
    let plc2 = &peers["plc2"];
    assert_eq!(plc2.peer_url, "https://127.0.0.1:9");
    assert_eq!(plc2.cacert, ca_pem.trim());
    assert!(plc2.has_outbound_token);
    assert_eq!(plc2.client_identity, "plc2.example.org");
    assert_eq!(plc2.mode(), pb::SyncMode::Scheduled);
    assert_eq!(plc2.refresh_interval_seconds, 300);
    assert_eq!(plc2.max_delete_fraction, Some(0.2));
    let plc3 = &peers["plc3"];
    assert_eq!(plc3.mode(), pb::SyncMode::Follow);
    assert_eq!(
        (plc3.shortname.as_str(), plc3.hrn_root.as_str()),
        ("P3", "plc.p3")
    );
    assert!(!plc3.has_outbound_token);
    assert_eq!(plc3.max_delete_fraction, None);
    // A peer added by an admin, which the file does not name.
    served
        .client(&token)
        .await
        .peers()
        .create_peer(pb::CreatePeerRequest {
            peername: "plc4".into(),
            peer_url: "http://127.0.0.1:9".into(),
            ..Default::default()
        })
        .await
        .expect("CreatePeer");
    let before = peers_by_name(&served, &token).await;
    assert_eq!(served.terminate().await.0, Some(0));

    // A restart with the same file changes nothing.
    let served = start(serve()).await;
    assert_eq!(applied(&served), Vec::<&str>::new());
    assert_eq!(peers_by_name(&served, &token).await, before);
    assert_eq!(served.terminate().await.0, Some(0));

    // A changed file (and token file) updates what it changes, and only that.
    write(dir, "plc2.token", "token-two\n");
    write(dir, "fedreg.toml", PEERS_V2);
    let served = start(serve()).await;
    let lines = applied(&served);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("peer updated from the configuration file")
            && lines[0].contains("plc2")
            && lines[0].contains("changed=url, outbound-token-file"),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("plc3") && lines[1].contains("changed=refresh-interval, follow"),
        "{lines:#?}"
    );
    let after = peers_by_name(&served, &token).await;
    assert_eq!(served.terminate().await.0, Some(0));
    let expected_plc2 = pb::Peer {
        peer_url: "https://localhost:9".into(),
        ..before["plc2"].clone()
    };
    assert_eq!(after["plc2"], expected_plc2, "the interval left out stays");
    assert_eq!(after["plc3"].mode(), pb::SyncMode::Scheduled);
    assert_eq!(after["plc3"].refresh_interval_seconds, 600);
    assert_eq!(after["plc3"].peer_id, before["plc3"].peer_id);
    assert_eq!(
        after["plc4"], before["plc4"],
        "peers not in the file are left alone"
    );

    let database_url =
        fedreg::server::database_url(&storage.data_dir, storage.database_url().as_deref());
    let rows = Rows::open(&database_url).await;
    assert_eq!(
        rows.outbound_token("plc2").await.as_deref(),
        Some("token-two")
    );
}

backend_tests!(
    settings_come_from_flags_then_env_then_file,
    declared_peers_are_applied_at_each_start,
);

/// `fedreg config check FILE`, run in `dir`.
async fn check(dir: &Path, file: &str) -> std::process::Output {
    let mut command = bare();
    command.current_dir(dir).args(["config", "check", file]);
    run(command).await
}

async fn check_accepts_a_good_file_and_names_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    Ca::new(dir, "plc2-ca");
    write(dir, "plc2.token", "token\n");
    write(
        dir,
        "good.toml",
        "data-dir = \"data\"\n[serve]\nlisten = \"127.0.0.1:7000\"\nmax-delete-fraction = 0.25\n\n\
         [[peer]]\nname = \"plc2\"\nurl = \"https://127.0.0.1:9\"\noutbound-token-file = \"plc2.token\"\n\
         peer-cacert = \"plc2-ca.pem\"\nfollow = true\n",
    );
    assert_eq!(
        success(&check(dir, "good.toml").await),
        "good.toml: OK (settings: 3, peers: 1)\n"
    );
    assert!(!dir.join("data").exists(), "the check touches no data");

    write(
        dir,
        "bad.toml",
        "[serve]\nlisten = \"127.0.0.1:7000\"\nlisen = \"127.0.0.1:7001\"\nrefresh-chunk = 0\n\
         tls-cert = \"server.pem\"\n\n[[peer]]\nname = \"plc2\"\nurl = \"ftp://plc2.example.org\"\n\
         outbound-token-file = \"missing.token\"\n",
    );
    failure(
        &check(dir, "bad.toml").await,
        &[
            "configuration file bad.toml:\n",
            "\n  bad.toml:3: serve.lisen: unknown key",
            "\n  bad.toml:4: serve.refresh-chunk: invalid value '0' for '--refresh-chunk",
            "\n  bad.toml:5: serve.tls-cert: invalid tls_cert \"server.pem\": needs --tls-key too",
            "\n  bad.toml:5: serve.tls-cert: invalid tls_cert \"server.pem\": cannot read it",
            "\n  bad.toml:9: peer.url: invalid peer_url \"ftp://plc2.example.org\"",
            "\n  bad.toml:10: peer.outbound-token-file: invalid outbound_token_file \"missing.token\": cannot read it",
        ],
    );

    // Mistakes the TOML reader catches: a key a peer does not have, a
    // value of the wrong type, broken syntax.
    for (text, needles) in [
        (
            "[[peer]]\nname = \"a\"\nurl = \"http://a:1\"\ntoken-file = \"t\"\n",
            &["bad.toml:4: ", "unknown field `token-file`"][..],
        ),
        (
            "[[peer]]\nname = \"a\"\nurl = \"http://a:1\"\nfollow = \"yes\"\n",
            &["bad.toml:4: ", "expected a boolean"][..],
        ),
        ("[serve\nlisten = 1\n", &["bad.toml:1: "][..]),
        (
            "[serve]\nlisten = [1]\n",
            &["bad.toml:2: serve.listen: expected a string"][..],
        ),
    ] {
        write(dir, "bad.toml", text);
        failure(&check(dir, "bad.toml").await, needles);
    }
    failure(
        &check(dir, "nowhere.toml").await,
        &["nowhere.toml: cannot read it"],
    );
}

async fn serve_refuses_a_bad_file_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let serve = |file: &str| {
        let mut command = bare();
        command
            .current_dir(dir)
            .args(["--config", file, "--data-dir", "data"])
            .args(["serve", "--listen", "127.0.0.1:0"]);
        run(command)
    };
    write(dir, "typo.toml", "[serve]\nlisen = \"127.0.0.1:0\"\n");
    failure(
        &serve("typo.toml").await,
        &["typo.toml:2: serve.lisen: unknown key"],
    );
    write(
        dir,
        "peer.toml",
        "[[peer]]\nname = \"plc2\"\nurl = \"http://127.0.0.1:9\"\noutbound-token-file = \"gone\"\n",
    );
    failure(
        &serve("peer.toml").await,
        &["peer.toml:4: peer.outbound-token-file", "gone"],
    );
    failure(
        &serve("missing.toml").await,
        &["missing.toml: cannot read it"],
    );
    assert!(!dir.join("data").exists(), "nothing was started");
}

/// The ```` ```toml ```` block of docs/configuration.md.
fn documented_example() -> String {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let text = std::fs::read_to_string(doc).unwrap();
    let start = text.find("```toml\n").expect("a ```toml block") + "```toml\n".len();
    let end = start + text[start..].find("```").expect("the block closes");
    text[start..end].to_owned()
}

/// `example` with its commented-out settings (`# key = value`) set.
fn uncommented(example: &str) -> String {
    let setting = |line: &str| {
        line.split_once(" = ").is_some_and(|(key, _)| {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
    };
    example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if setting(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn the_documented_example_is_complete_and_valid() {
    let example = documented_example();
    let full = uncommented(&example);
    let table: toml::Table = toml::from_str(&full).expect("the example is TOML");
    let mut keys = BTreeSet::new();
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("serve", toml::Value::Table(serve)) => {
                keys.extend(serve.keys().map(|k| format!("serve.{k}")))
            }
            ("peer", _) => {}
            _ => {
                keys.insert(key.clone());
            }
        }
    }
    let missing: Vec<String> = fedreg::cli::config::settable_keys()
        .into_iter()
        .filter(|key| !keys.contains(key))
        .collect();
    assert!(
        missing.is_empty(),
        "the example of docs/configuration.md lacks {missing:?}"
    );

    // The files the example names, relative to it.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "example-ca");
    let pem = std::fs::read_to_string(&ca.pem).unwrap();
    let mut named = Vec::new();
    collect_strings(&toml::Value::Table(table), &mut named);
    for value in named {
        let content = if value.ends_with(".pem") {
            pem.as_str()
        } else if value.ends_with(".key") {
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n"
        } else if value.ends_with(".token") {
            "token\n"
        } else {
            continue;
        };
        let path = dir.path().join(&value);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    write(dir.path(), "example.toml", &example);
    write(dir.path(), "full.toml", &full);
    for file in ["example.toml", "full.toml"] {
        let out = success(&check(dir.path(), file).await);
        assert!(out.starts_with(&format!("{file}: OK")), "{out}");
    }
}

/// Every string in `value`, tables and arrays included.
fn collect_strings(value: &toml::Value, out: &mut Vec<String>) {
    match value {
        toml::Value::String(text) => out.push(text.clone()),
        toml::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        toml::Value::Table(table) => table.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

async_tests!(
    check_accepts_a_good_file_and_names_every_error,
    serve_refuses_a_bad_file_before_starting,
    the_documented_example_is_complete_and_valid,
);

//! The `fedreg` binary as operators run it: `serve` (data directory, first
//! admin token, the data-dir lock, SIGTERM), `migrate`, and
//! `token create|list|revoke`; on both backends.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::cli::{Storage, failure, fedreg, run, serve, stderr, success};
use crate::common::peers::insert_peer;
use crate::common::{Backend, TestServer, assert_status};
use fedreg::proto::v1 as pb;
use tonic::Code;

async fn serve_creates_data_dir_and_admin_token(backend: Backend) {
    let storage = Storage::new(backend).await;
    assert!(!storage.data_dir.exists());
    let served = serve(storage.command()).await;

    assert!(
        storage.data_dir.is_dir(),
        "serve creates the data directory"
    );
    let token_file = storage.data_dir.join("admin-token");
    let mode = std::fs::metadata(&token_file)
        .expect("admin-token written")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin-token is private: {mode:o}");
    let saved = std::fs::read_to_string(&token_file).unwrap();
    let printed = served
        .new_token
        .clone()
        .expect("first admin token announced");
    assert_eq!(saved.trim(), printed);
    // stderr goes to a pipe (a service log): the token is not in it.
    assert!(
        served.startup.iter().all(|l| !l.contains(&printed)),
        "{:#?}",
        served.startup
    );
    assert_eq!(
        storage.data_dir.join("fedreg.db").exists(),
        backend == Backend::Sqlite,
        "the SQLite database lives in the data directory, unless PostgreSQL is used"
    );
    // Other local users can read nothing: the directory is 0700, the
    // database and its WAL 0600.
    assert_eq!(mode_of(&storage.data_dir), 0o700);
    let private = private_files(&storage.data_dir);
    if backend == Backend::Sqlite {
        assert!(private.len() >= 3, "database, WAL and token: {private:?}");
    }
    for file in &private {
        assert_eq!(mode_of(file), 0o600, "{}", file.display());
    }

    // The saved token is an admin token of this server.
    let mut api = served.registry(&printed).await;
    api.create_site(pb::CreateSiteRequest {
        login_base: "cli".into(),
        name: "CLI site".into(),
        ..Default::default()
    })
    .await
    .expect("admin call with the saved token");
    let (code, _) = served.terminate().await;
    assert_eq!(code, Some(0));

    // A restart keeps the data and the token, and creates no other token.
    let again = serve(storage.command()).await;
    assert_eq!(again.new_token, None, "no second admin token");
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), saved);
    let sites = again
        .registry(&printed)
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .expect("the token still works after a restart")
        .into_inner()
        .sites;
    assert_eq!(sites.len(), 1);
    assert_eq!(again.terminate().await.0, Some(0));

    // Modes loosened by hand (an older fedreg, a careless copy) are
    // tightened at the next start, with a warning naming each file.
    std::fs::set_permissions(&storage.data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let private = private_files(&storage.data_dir);
    for file in &private {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let tightened = serve(storage.command()).await;
    assert_eq!(mode_of(&storage.data_dir), 0o700);
    for file in &private {
        assert_eq!(mode_of(file), 0o600, "{}", file.display());
        let name = file.display().to_string();
        assert!(
            tightened
                .startup
                .iter()
                .any(|l| l.contains("WARN") && l.contains(&name) && l.contains("644")),
            "a warning for {name}: {:#?}",
            tightened.startup
        );
    }
    assert_eq!(tightened.terminate().await.0, Some(0));
}

/// The permission bits of `path`.
fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("file exists")
        .permissions()
        .mode()
        & 0o777
}

/// The files of a data directory that hold secrets, as they exist now: the
/// admin token and the SQLite database with its side files.
fn private_files(data_dir: &Path) -> Vec<PathBuf> {
    ["admin-token", "fedreg.db", "fedreg.db-wal", "fedreg.db-shm"]
        .iter()
        .map(|name| data_dir.join(name))
        .filter(|path| path.exists())
        .collect()
}

async fn second_serve_on_same_data_dir(backend: Backend) {
    let storage = Storage::new(backend).await;
    let first = serve(storage.command()).await;
    match backend {
        Backend::Sqlite => {
            // The SQLite database in the data directory has one server.
            let started = Instant::now();
            let mut second = storage.command();
            second.args(["serve", "--listen", "127.0.0.1:0"]);
            let output = run(second).await;
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the second server gives up at once, not after {:?}",
                started.elapsed()
            );
            let data_dir = storage.data_dir.display().to_string();
            failure(
                &output,
                &["another fedreg server", "lock", &data_dir, "--data-dir"],
            );
        }
        Backend::Postgres => {
            // With PostgreSQL the data directory holds no database and is
            // not locked: several servers may share one database.
            let second = serve(storage.command()).await;
            assert_eq!(second.new_token, None, "the database has its admin token");
            assert_eq!(second.terminate().await.0, Some(0));
        }
    }
    // The first server is unaffected.
    let token = first.new_token.clone().unwrap();
    first
        .registry(&token)
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .expect("first server still serves");
    assert_eq!(first.terminate().await.0, Some(0));
}

async fn sigterm_stops_cleanly(backend: Backend) {
    let storage = Storage::new(backend).await;
    let served = serve(storage.command()).await;
    let addr = served.addr;
    let (code, stderr) = served.terminate().await;
    assert_eq!(code, Some(0), "stderr after start: {stderr:#?}");
    assert!(
        stderr.iter().any(|l| l.contains("shutting down")),
        "{stderr:#?}"
    );
    assert!(
        stderr.iter().all(|l| !l.contains('\x1b')),
        "no terminal colours in logs that go to a pipe: {stderr:#?}"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "nothing listens on {addr} any more"
    );
    // The lock died with the process: a new server can use the directory.
    let again = serve(storage.command()).await;
    assert_eq!(again.terminate().await.0, Some(0));
}

async fn serve_logs_json_lines(backend: Backend) {
    let storage = Storage::new(backend).await;
    let mut command = storage.command();
    command.args(["--log-format", "json"]);
    let served = serve(command).await;
    let token = served.new_token.clone().expect("a new admin token");
    served
        .registry(&token)
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .expect("the server answers");
    let (code, stderr) = served.terminate().await;
    assert_eq!(code, Some(0), "stderr after start: {stderr:#?}");
    let logs: Vec<serde_json::Value> = stderr
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        logs.iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down"))),
        "{logs:#?}"
    );
}

async fn serve_rejects_bad_settings(backend: Backend) {
    let storage = Storage::new(backend).await;
    let mut command = storage.command();
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-delete-fraction",
        "1.5",
    ]);
    failure(&run(command).await, &["max_delete_fraction", "1.5"]);

    // An address already in use is reported with the address.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut command = storage.command();
    command.args(["serve", "--listen", &addr]);
    failure(&run(command).await, &["listening on", &addr]);
    let mut command = storage.command();
    command.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        &addr,
    ]);
    failure(&run(command).await, &["metrics: listening on", &addr]);

    // An unusable TLS certificate or key: the process exits with the reason
    // instead of serving nothing, and leaves the data directory free.
    let garbage = storage.data_dir.with_file_name("garbage.pem");
    std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let garbage = garbage.to_str().unwrap();
    let mut command = storage.command();
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    command.args(["--tls-cert", garbage, "--tls-key", garbage]);
    failure(&run(command).await, &["TLS certificate", garbage]);
    // A certificate without its key, however given, is refused by name.
    let mut command = storage.command();
    command.env("FEDREG_TLS_CERT", garbage);
    command.args(["serve", "--listen", "127.0.0.1:0"]);
    failure(
        &run(command).await,
        &["tls_cert", garbage, "needs --tls-key"],
    );
    let served = serve(storage.command()).await;
    assert_eq!(served.terminate().await.0, Some(0));
}

/// A call's log line carries its status message as the caller reads it,
/// not percent-encoded as it travels.
async fn call_log_lines_are_decoded(backend: Backend) {
    let storage = Storage::new(backend).await;
    let served = serve(storage.command()).await;
    let token = served.new_token.clone().expect("first admin token");
    let refused = served
        .registry(&token)
        .await
        .create_site(pb::CreateSiteRequest {
            login_base: "bad base".into(),
            name: "Bad".into(),
            ..Default::default()
        })
        .await;
    assert_status(refused, Code::InvalidArgument, &["login_base", "bad base"]);
    served
        .registry(&token)
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .expect("list sites");
    let (code, log) = served.terminate().await;
    assert_eq!(code, Some(0));
    let line = log
        .iter()
        .find(|l| l.contains("CreateSite") && l.contains("InvalidArgument"))
        .unwrap_or_else(|| panic!("a log line for the refused call: {log:#?}"));
    assert!(
        line.contains("login_base") && line.contains("bad base") && !line.contains('%'),
        "{line}"
    );
    // A call that succeeded says so in words too.
    let line = log
        .iter()
        .find(|l| l.contains("ListSites"))
        .unwrap_or_else(|| panic!("a log line for the listing: {log:#?}"));
    assert!(
        line.contains("status=Ok") && line.contains("answered"),
        "{line}"
    );
}

/// Started with a soft open-file limit of 256 (a service manager's usual
/// 1,024 would need a thousand connections to show it), `serve` raises it
/// to the hard limit and serves 300 connections at once, beyond both that
/// limit and the old default cap of 256.
async fn serve_raises_its_open_file_limit_and_serves_many_connections(backend: Backend) {
    const CONNECTIONS: usize = 300;
    let storage = Storage::new(backend).await;
    let served = serve(storage.command_with_open_file_limit(256)).await;
    let url = format!("http://{}", served.addr);
    // Every connection is served while all of them are open.
    let (channels, answers) = tokio::time::timeout(Duration::from_secs(60), async {
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            let endpoint = tonic::transport::Channel::from_shared(url.clone()).expect("url");
            channels.push(endpoint.connect().await.expect("connect"));
        }
        let checks = channels.iter().map(|channel| async move {
            tonic_health::pb::health_client::HealthClient::new(channel.clone())
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
        });
        let answers = futures_util::future::join_all(checks).await;
        (channels, answers)
    })
    .await
    .expect("every connection made and answered within a minute");
    let served_ok = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(
        served_ok,
        CONNECTIONS,
        "{:?}",
        answers.iter().find(|a| a.is_err())
    );
    drop(channels);
    let (code, _) = served.terminate().await;
    assert_eq!(code, Some(0));
}

/// How many migrations the backend has.
fn migration_count(backend: Backend) -> usize {
    let dir = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dir);
    std::fs::read_dir(path)
        .expect("migrations folder")
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_dir()))
        .count()
}

async fn migrate(backend: Backend) {
    let storage = Storage::new(backend).await;
    let expected = migration_count(backend);
    assert!(expected > 0);
    let mut command = storage.command();
    command.arg("migrate");
    assert_eq!(
        success(&run(command).await).trim(),
        format!("{expected} migration(s) applied")
    );
    let mut command = storage.command();
    command.arg("migrate");
    assert_eq!(
        success(&run(command).await).trim(),
        "0 migration(s) applied",
        "a second run has nothing to do"
    );
    // The migrated database serves.
    let served = serve(storage.command()).await;
    assert!(served.new_token.is_some());
    assert_eq!(served.terminate().await.0, Some(0));
}

async fn token_commands(backend: Backend) {
    let server = TestServer::start(backend).await;
    let database_url = (backend == Backend::Postgres).then(|| server.database_url.clone());
    let cli = || fedreg(server.data_dir.path(), database_url.clone());
    let token = |args: &[&str]| {
        let mut command = cli();
        command.arg("token").args(args);
        run(command)
    };

    let created = token(&["create", "--name", "cli-ops"]).await;
    let secret = success(&created).trim().to_owned();
    assert!(
        secret.starts_with("fr_"),
        "stdout is the secret alone: {secret:?}"
    );
    let note = stderr(&created);
    assert!(
        note.contains("role admin") && note.contains("shown only once"),
        "{note}"
    );
    // The new token is accepted by the running server.
    server
        .registry_as(Some(&secret))
        .await
        .list_sites(pb::ListRequest::default())
        .await
        .expect("a CLI-created admin token works");

    let peer_id = insert_peer(&server, "plc").await;
    let peer = token(&[
        "create",
        "--name",
        "plc",
        "--role",
        "peer",
        "--peer-id",
        &peer_id.to_string(),
    ])
    .await;
    let peer_secret = success(&peer).trim().to_owned();
    // A peer token can name its peer instead of giving its id.
    let by_name = token(&[
        "create", "--name", "plc-2", "--role", "peer", "--peer", "plc",
    ])
    .await;
    let by_name_secret = success(&by_name).trim().to_owned();
    failure(
        &token(&["create", "--role", "peer", "--peer", "nosuch"]).await,
        &["peername", "nosuch"],
    );

    let listed = success(&token(&["list"]).await);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 5, "a header and four tokens: {listed}");
    assert!(lines[0].contains("ID") && lines[0].contains("ROLE"));
    assert!(lines[1].contains("admin") && lines[1].ends_with("initial admin"));
    assert!(lines[2].contains("admin") && lines[2].ends_with("cli-ops"));
    for line in &lines[3..] {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1..3], ["peer", &peer_id.to_string()], "{line}");
    }
    for shown in [&server.admin_token, &secret, &peer_secret, &by_name_secret] {
        assert!(
            !listed.contains(shown.as_str()),
            "token list shows a secret"
        );
    }

    let id = lines[2].split_whitespace().next().expect("id column");
    assert_eq!(
        success(&token(&["revoke", id]).await).trim(),
        format!("token {id} revoked")
    );
    assert_status(
        server
            .registry_as(Some(&secret))
            .await
            .list_sites(pb::ListRequest::default())
            .await,
        Code::Unauthenticated,
        &["unknown or revoked token"],
    );
    failure(&token(&["revoke", id]).await, &["token_id", id]);

    // Validation errors name the field and the value, and store nothing.
    failure(
        &token(&["create", "--role", "root"]).await,
        &["role", "root"],
    );
    failure(&token(&["create", "--role", "peer"]).await, &["peer_id"]);
    failure(
        &token(&["create", "--role", "peer", "--peer-id", "9999"]).await,
        &["peer_id", "9999"],
    );
    let listed = success(&token(&["list"]).await);
    assert_eq!(
        listed.lines().count(),
        4,
        "a header and three tokens: {listed}"
    );
}

backend_tests!(
    serve_creates_data_dir_and_admin_token,
    second_serve_on_same_data_dir,
    sigterm_stops_cleanly,
    serve_logs_json_lines,
    serve_rejects_bad_settings,
    call_log_lines_are_decoded,
    serve_raises_its_open_file_limit_and_serves_many_connections,
    migrate,
    token_commands,
);

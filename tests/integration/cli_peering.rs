//! Peering from the command line: the real `fedreg` binary's `peer
//! add|list|show|update|rm` and `refresh` against real registries, peered
//! both ways with tokens; its errors (status code and message); the
//! mass-delete guard and `--force`; TLS on both sides; the outbound token
//! read from a file; the warning for plain http:// to another host; the
//! spinner only on a terminal. On both backends.

use std::path::Path;
use std::process::Output;

use crate::common::cli::{failure, failure_with, fedreg, run, stderr, stdout, success};
use crate::common::federation::{Counts, Populate, peer_one_way};
use crate::common::{Backend, TestServer};
use fedreg::proto::v1 as pb;
use tokio::process::Command;

/// `fedreg` as a client of `server`, with its data directory (and so its
/// `admin-token` file) and its URL.
fn client(server: &TestServer) -> Command {
    let mut command = fedreg(server.data_dir.path(), None);
    command.args(["--server", &server.url()]);
    command
}

/// Runs `fedreg <args> --server URL` against `server`.
async fn cli(server: &TestServer, args: &[&str]) -> Output {
    // Client options go after the subcommand.
    let mut command = fedreg(server.data_dir.path(), None);
    command.args(args).args(["--server", &server.url()]);
    run(command).await
}

/// `fedreg token create --role peer --peer NAME` on `server`'s database.
async fn peer_token(server: &TestServer, peer: &str) -> String {
    let database_url = (server.backend == Backend::Postgres).then(|| server.database_url.clone());
    let mut command = fedreg(server.data_dir.path(), database_url);
    command.args(["token", "create", "--role", "peer", "--peer", peer]);
    success(&run(command).await).trim().to_owned()
}

/// The cells of the first line of `text` whose first cell is `first`.
#[track_caller]
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == first))
        .unwrap_or_else(|| panic!("no line starting with {first:?} in:\n{text}"))
}

/// `text` from the line that starts with `header` on.
#[track_caller]
fn section<'a>(text: &'a str, header: &str) -> &'a str {
    let at = text
        .find(&format!("\n{header} "))
        .unwrap_or_else(|| panic!("no {header:?} section in:\n{text}"));
    &text[at + 1..]
}

/// The value of `label:` in `fedreg peer show` output.
#[track_caller]
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{label}:")))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"))
        .trim()
}

/// Asserts that `output` carries no terminal control characters.
#[track_caller]
fn plain(output: &Output) {
    for text in [stdout(output), stderr(output)] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b'),
            "terminal control characters in {text:?}"
        );
    }
}

async fn peer_commands_federate_two_registries(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    Populate::new("one")
        .sites(1)
        .persons(1)
        .keys_per_person(1)
        .on(&plc1)
        .await;
    Populate::new("two")
        .sites(2)
        .persons(3)
        .keys_per_person(1)
        .on(&plc2)
        .await;

    // Each side registers the other, then hands it a peer token.
    let added = cli(&plc2, &["peer", "add", "plc1", "--url", &plc1.url()]).await;
    let out = success(&added);
    assert!(out.starts_with("peer plc1 added with id "), "{out}");
    assert!(
        stderr(&added).contains("no outbound token yet"),
        "{}",
        stderr(&added)
    );
    let token_for_plc1 = peer_token(&plc2, "plc1").await;
    let out = success(
        &cli(
            &plc1,
            &[
                "peer",
                "add",
                "plc2",
                "--url",
                &plc2.url(),
                "--outbound-token",
                &token_for_plc1,
                "--max-delete-fraction",
                "0.25",
                "--shortname",
                "p2",
            ],
        )
        .await,
    );
    assert!(out.starts_with("peer plc2 added with id "), "{out}");
    let token_for_plc2 = peer_token(&plc1, "plc2").await;
    success(
        &cli(
            &plc2,
            &[
                "peer",
                "update",
                "plc1",
                "--outbound-token",
                &token_for_plc2,
            ],
        )
        .await,
    );

    // A refresh prints its report, without a spinner on a pipe.
    let refreshed = cli(&plc1, &["refresh", "plc2"]).await;
    plain(&refreshed);
    let report = success(&refreshed);
    assert!(report.starts_with("plc2: APPLIED in "), "{report}");
    assert_eq!(row(&report, "sites")[1..], ["2", "2", "0", "0", "0"]);
    assert_eq!(row(&report, "keys")[1..], ["3", "3", "0", "0", "0"]);
    assert_eq!(row(&report, "persons")[1..], ["3", "3", "0", "0", "0"]);
    assert_eq!(row(&report, "total")[1..3], ["8", "8"]);
    assert_eq!(row(&report, "person_keys")[1..], ["3", "0"]);
    assert_eq!(row(&report, "site_persons")[1..], ["3", "0"]);
    let timers = section(&report, "PHASE");
    for phase in [
        "transport",
        "peer_db",
        "sites",
        "pairs",
        "person_roles",
        "total",
    ] {
        assert_eq!(row(timers, phase).len(), 2, "a timer for {phase}");
    }
    assert!(report.ends_with("no warnings\n"), "{report}");
    assert_eq!(
        counts!(plc1, list_sites, sites),
        Counts {
            local: 1,
            foreign: 2
        }
    );

    // The other way, naming the peer by its id.
    let plc1_on_2 = row(&success(&cli(&plc2, &["peer", "list"]).await), "1")[0].clone();
    let back = success(&cli(&plc2, &["refresh", &plc1_on_2]).await);
    assert!(back.starts_with("plc1: APPLIED"), "{back}");
    assert_eq!(row(&back, "sites")[1..], ["1", "1", "0", "0", "0"]);
    assert_eq!(counts!(plc2, list_persons, persons).foreign, 1);

    // Nothing changed: the delta is empty, nothing is compared or written.
    let first = success(&cli(&plc1, &["peer", "show", "plc2"]).await);
    let checkpoint = field(&first, "checkpoint");
    let revision = checkpoint
        .strip_prefix("revision ")
        .unwrap_or_else(|| panic!("a checkpoint after a clean refresh: {first}"))
        .to_owned();
    let again = success(&cli(&plc1, &["refresh", "plc2"]).await);
    assert!(
        again.contains(&format!(
            "delta since revision {revision}, now at {revision}\n"
        )),
        "{again}"
    );
    assert!(!again.contains("CLASS"), "no class was compared: {again}");
    // A full refresh compares everything, and writes nothing either.
    let full = success(&cli(&plc1, &["refresh", "plc2", "--full"]).await);
    assert!(
        full.contains(&format!("full snapshot at revision {revision}\n")),
        "{full}"
    );
    assert_eq!(row(&full, "total")[1..], ["8", "0", "0", "0", "0"]);

    // A schedule set now starts from now (set at `add`, it would have
    // refreshed the peer at once, racing the refreshes above).
    success(
        &cli(
            &plc1,
            &["peer", "update", "plc2", "--refresh-interval", "3600"],
        )
        .await,
    );
    let listed = success(&cli(&plc1, &["peer", "list"]).await);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one peer: {listed}");
    assert!(lines[0].starts_with("ID  NAME"), "{listed}");
    let cells: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cells[1..5], ["plc2", &plc2.url(), "3600", "s"], "{listed}");
    assert_eq!(cells[cells.len() - 2..], ["APPLIED", "8"], "{listed}");

    let shown = success(&cli(&plc1, &["peer", "show", "plc2"]).await);
    assert_eq!(field(&shown, "name"), "plc2");
    assert_eq!(field(&shown, "shortname"), "p2");
    assert_eq!(field(&shown, "outbound token"), "set");
    assert_eq!(field(&shown, "refresh interval"), "3600 s");
    assert_eq!(field(&shown, "max delete fraction"), "0.25");
    assert_eq!(field(&shown, "last outcome"), "APPLIED");
    assert_eq!(
        field(&shown, "cached"),
        "2 sites, 3 keys, 3 persons, 0 nodes, 0 slices"
    );
    assert!(
        !shown.contains(&token_for_plc1),
        "the outbound token is never shown"
    );
    assert!(shown.contains("\nLast refresh:\nplc2: APPLIED"), "{shown}");
    assert_eq!(row(&shown, "sites")[1..], ["2", "0", "0", "0", "0"]);

    // Update by id: rename, stop the schedule.
    let id = field(&shown, "id").to_owned();
    let updated = success(
        &cli(
            &plc1,
            &[
                "peer",
                "update",
                &id,
                "--name",
                "plc2b",
                "--refresh-interval",
                "0",
            ],
        )
        .await,
    );
    assert!(
        updated.starts_with(&format!("peer plc2b (id {id}) updated")),
        "{updated}"
    );
    let peer = plc1
        .peers()
        .await
        .get_peer(pb::GetPeerRequest {
            key: Some(pb::get_peer_request::Key::Peername("plc2b".into())),
        })
        .await
        .expect("renamed peer")
        .into_inner();
    assert_eq!(peer.refresh_interval_seconds, 0);
    assert_eq!(peer.max_delete_fraction, Some(0.25), "left as it was");
    assert!(peer.has_outbound_token, "left as it was");
    assert_eq!(field(&updated, "refresh interval"), "manual");
    assert_eq!(field(&updated, "mode"), "manual");

    // Follow the peer: the mode says so, and the follow status shows.
    let following = success(&cli(&plc1, &["peer", "update", "plc2b", "--follow", "true"]).await);
    assert_eq!(field(&following, "mode"), "follow");
    assert!(field(&following, "follow").contains("lag"), "{following}");
    let listed = success(&cli(&plc1, &["peer", "list"]).await);
    assert!(listed.contains(" follow "), "{listed}");
    let bad = cli(&plc1, &["peer", "update", "plc2b", "--follow", "maybe"]).await;
    failure_with(&bad, 2, &["--follow", "maybe"]);

    // Removing the peer removes its cache, and says what went.
    let removed = success(&cli(&plc1, &["peer", "rm", "plc2b"]).await);
    assert_eq!(
        removed.trim(),
        format!(
            "peer plc2b (id {id}) removed, with its cached objects: 2 sites, 3 keys, 3 persons, 0 nodes, 0 slices"
        )
    );
    assert_eq!(
        counts!(plc1, list_sites, sites),
        Counts {
            local: 1,
            foreign: 0
        }
    );
    assert_eq!(
        success(&cli(&plc1, &["peer", "list"]).await)
            .lines()
            .count(),
        1,
        "only the header is left"
    );
}

async fn peer_command_errors(backend: Backend) {
    let server = TestServer::start(backend).await;

    // Unknown peers: NOT_FOUND naming the peer.
    failure(
        &cli(&server, &["refresh", "plc9"]).await,
        &["NOT_FOUND", "peername plc9"],
    );
    failure(
        &cli(&server, &["peer", "show", "42"]).await,
        &["NOT_FOUND", "peer_id 42"],
    );
    failure(
        &cli(&server, &["peer", "rm", "nope"]).await,
        &["NOT_FOUND", "nope"],
    );

    // Bad values: INVALID_ARGUMENT naming the field and the value.
    failure(
        &cli(&server, &["peer", "add", "bad", "--url", "ftp://x"]).await,
        &["INVALID_ARGUMENT", "peer_url", "ftp://x"],
    );
    failure(
        &cli(
            &server,
            &[
                "peer",
                "add",
                "bad",
                "--url",
                "http://127.0.0.1:1",
                "--refresh-interval",
                "5",
            ],
        )
        .await,
        &["INVALID_ARGUMENT", "refresh_interval_seconds", "5"],
    );
    failure(
        &cli(&server, &["peer", "add", "a b", "--url", "http://x:1"]).await,
        &["INVALID_ARGUMENT", "peername", "a b"],
    );
    // A peer (the server itself) is added once.
    let add = ["peer", "add", "plc", "--url", &server.url()];
    success(&cli(&server, &add).await);
    failure(&cli(&server, &add).await, &["ALREADY_EXISTS", "plc"]);
    // A peer without an outbound token cannot be refreshed.
    failure(
        &cli(&server, &["refresh", "plc"]).await,
        &["FAILED_PRECONDITION", "outbound token"],
    );
    // An update must change something (a usage error of the parser).
    let output = cli(&server, &["peer", "update", "plc"]).await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    // Nothing above was stored but the one peer.
    let listed = success(&cli(&server, &["peer", "list"]).await);
    assert_eq!(listed.lines().count(), 2, "{listed}");

    // No token: a data directory without admin-token, nothing given.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut command = fedreg(elsewhere.path(), None);
    command.args(["peer", "list", "--server", &server.url()]);
    failure(
        &run(command).await,
        &["UNAUTHENTICATED", "no token was sent", "admin-token"],
    );
    // A wrong token, then the right one, through --token and FEDREG_TOKEN.
    let mut command = client(&server);
    command.args(["peer", "list", "--token", "fr_bogus"]);
    failure(
        &run(command).await,
        &["UNAUTHENTICATED", "unknown or revoked token", "--token"],
    );
    let mut command = fedreg(elsewhere.path(), None);
    command
        .env("FEDREG_TOKEN", &server.admin_token)
        .env("FEDREG_SERVER", server.url())
        .args(["peer", "show", "plc"]);
    let shown = success(&run(command).await);
    assert_eq!(field(&shown, "last outcome"), "FAILED");

    // No server there, or the wrong scheme.
    let mut command = fedreg(server.data_dir.path(), None);
    command.args(["peer", "list", "--server", "http://127.0.0.1:1"]);
    failure(
        &run(command).await,
        &["UNAVAILABLE", "cannot reach http://127.0.0.1:1"],
    );
    let mut command = fedreg(server.data_dir.path(), None);
    command.args(["peer", "list", "--server", "https://127.0.0.1:1"]);
    failure(&run(command).await, &["server", "--cacert"]);
}

async fn refresh_refused_then_forced(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    peer_one_way(&plc1, "plc1", &plc2, "plc2").await;
    let made = Populate::new("two").sites(12).on(&plc2).await;
    success(&cli(&plc1, &["refresh", "plc2"]).await);

    let mut api2 = plc2.registry().await;
    for site_id in &made.sites[..10] {
        api2.delete_site(pb::DeleteRequest { id: *site_id })
            .await
            .expect("delete site");
    }
    // 10 of 12 cached objects would go: above the default limit of half.
    let refused = cli(&plc1, &["refresh", "plc2"]).await;
    failure_with(
        &refused,
        3,
        &[
            "refused",
            "nothing was applied",
            "fedreg refresh plc2 --force",
        ],
    );
    let report = stdout(&refused);
    assert!(report.starts_with("plc2: REFUSED"), "{report}");
    assert!(
        report.contains("reason: refused: this refresh would delete 10 of the 12 objects"),
        "{report}"
    );
    assert_eq!(counts!(plc1, list_sites, sites).foreign, 12, "unchanged");
    let shown = success(&cli(&plc1, &["peer", "show", "plc2"]).await);
    assert_eq!(field(&shown, "last outcome"), "REFUSED");

    // The delta holds the 10 deletions and nothing else.
    let forced = success(&cli(&plc1, &["refresh", "plc2", "--force"]).await);
    assert_eq!(row(&forced, "sites")[1..], ["0", "0", "0", "10", "0"]);
    assert_eq!(counts!(plc1, list_sites, sites).foreign, 2);
}

/// Writes a CA and a certificate for `localhost` and 127.0.0.1 signed by
/// it into `dir`, with the `openssl` command; returns (ca, cert, key).
fn tls_files(dir: &Path) -> [std::path::PathBuf; 3] {
    let path = |name: &str| dir.join(name);
    let script = "set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=fedreg-test-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
  -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -days 2 -extfile ext.cnf -out server.pem 2>/dev/null";
    let status = std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl made the test certificates");
    [path("ca.pem"), path("server.pem"), path("server.key")]
}

async fn tls_on_both_sides(backend: Backend) {
    let certs = tempfile::tempdir().unwrap();
    let [ca, cert, key] = tls_files(certs.path());
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_with(backend, |config| {
        config.registry_name = "plc2".into();
        config.tls = Some((cert.clone(), key.clone()));
    })
    .await;
    let plc2_url = format!("https://localhost:{}", plc2.addr().port());
    let ca_path = ca.to_str().unwrap();

    // The CLI talks to the TLS server with --cacert, and only with it.
    let over_tls = |args: &[&str], cacert: bool| {
        let mut command = fedreg(plc2.data_dir.path(), None);
        command.args(args).args(["--server", &plc2_url]);
        if cacert {
            command.args(["--cacert", ca_path]);
        }
        run(command)
    };
    failure(
        &over_tls(&["peer", "list"], false).await,
        &["server", "--cacert"],
    );
    let added = over_tls(&["peer", "add", "plc1", "--url", &plc1.url()], true).await;
    assert!(success(&added).starts_with("peer plc1 added"));
    let token = peer_token(&plc2, "plc1").await;

    // plc1 calls plc2 over TLS, verifying it with the CA on the peer record;
    // without the CA it cannot.
    let add = [
        "peer",
        "add",
        "plc2",
        "--url",
        &plc2_url,
        "--outbound-token",
        &token,
    ];
    success(&cli(&plc1, &add).await);
    failure(
        &cli(&plc1, &["refresh", "plc2"]).await,
        &["FAILED_PRECONDITION", "cacert"],
    );
    success(&cli(&plc1, &["peer", "update", "plc2", "--peer-cacert", ca_path]).await);
    let report = success(&cli(&plc1, &["refresh", "plc2"]).await);
    assert!(report.starts_with("plc2: APPLIED"), "{report}");
    let shown = success(&cli(&plc1, &["peer", "show", "plc2"]).await);
    assert_eq!(field(&shown, "CA certificate"), "set");
    assert_eq!(field(&shown, "url"), plc2_url);
}

async fn outbound_token_file_and_warnings(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    Populate::new("two").sites(2).on(&plc2).await;
    success(&cli(&plc2, &["peer", "add", "plc1", "--url", &plc1.url()]).await);
    let files = tempfile::tempdir().unwrap();
    let token_file = files.path().join("plc2.token");
    std::fs::write(
        &token_file,
        format!("{}\n", peer_token(&plc2, "plc1").await),
    )
    .unwrap();
    let token_path = token_file.to_str().unwrap();

    // The token comes from the file, never on the command line.
    let added = cli(
        &plc1,
        &[
            "peer",
            "add",
            "plc2",
            "--url",
            &plc2.url(),
            "--outbound-token-file",
            token_path,
            "--client-identity",
            "plc2.example.org",
        ],
    )
    .await;
    success(&added);
    assert!(!stderr(&added).contains("warning"), "{}", stderr(&added));
    let shown = success(&cli(&plc1, &["peer", "show", "plc2"]).await);
    assert_eq!(field(&shown, "outbound token"), "set");
    assert_eq!(field(&shown, "client identity"), "plc2.example.org");
    let report = success(&cli(&plc1, &["refresh", "plc2"]).await);
    assert!(report.starts_with("plc2: APPLIED"), "{report}");

    // A file that cannot be read, an empty one, or both ways at once.
    let missing = files.path().join("missing.token");
    let missing = missing.to_str().unwrap();
    failure(
        &cli(
            &plc1,
            &["peer", "update", "plc2", "--outbound-token-file", missing],
        )
        .await,
        &["outbound_token_file", missing, "cannot read it"],
    );
    let empty = files.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    failure(
        &cli(
            &plc1,
            &["peer", "update", "plc2", "--outbound-token-file", empty],
        )
        .await,
        &["outbound_token_file", empty, "empty"],
    );
    let both = [
        "peer",
        "update",
        "plc2",
        "--outbound-token",
        "x",
        "--outbound-token-file",
        token_path,
    ];
    failure_with(&cli(&plc1, &both).await, 2, &["cannot be used with"]);
    assert!(success(&cli(&plc1, &["refresh", "plc2"]).await).starts_with("plc2: APPLIED"));

    // Plain http:// to another host: the token would cross the network in
    // clear text.
    let far = "http://plc3.example.org:50051";
    let added = cli(&plc1, &["peer", "add", "plc3", "--url", far]).await;
    success(&added);
    assert!(
        stderr(&added).contains(&format!("warning: peer_url {far} is plain http://")),
        "{}",
        stderr(&added)
    );
}

backend_tests!(
    outbound_token_file_and_warnings,
    peer_commands_federate_two_registries,
    peer_command_errors,
    refresh_refused_then_forced,
    tls_on_both_sides,
);

/// On a terminal (a pseudo-terminal made by `script`), `refresh` draws a
/// spinner on stderr and erases it before the report.
async fn spinner_only_on_a_terminal() {
    let plc1 = TestServer::start_named(Backend::Sqlite, "plc1").await;
    let plc2 = TestServer::start_named(Backend::Sqlite, "plc2").await;
    peer_one_way(&plc1, "plc1", &plc2, "plc2").await;
    Populate::new("two").sites(1).on(&plc2).await;
    let line = format!(
        "{} --data-dir {} refresh plc2 --server {}",
        crate::common::cli::BIN,
        plc1.data_dir.path().display(),
        plc1.url()
    );
    let mut command = Command::new("script");
    command
        .args(["-qec", &line, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .env("FEDREG_LOG", "warn");
    let output = run(command).await;
    let text = success(&output);
    let spinner = text
        .find("refreshing plc2")
        .expect("a spinner on the terminal");
    let erased = text.find("\r\x1b[2K").expect("the spinner line is erased");
    let report = text.find("plc2: APPLIED").expect("the report");
    assert!(spinner < erased && erased < report, "{text:?}");
}

async_tests!(spinner_only_on_a_terminal);

//! Clients of a running server: the typed client of [`fedreg::client`]
//! (listings page after page, a refresh, a Follow stream, its connection
//! errors), and the `fedreg status` and `--json` read commands of the real
//! binary. Against real registries peered with tokens, on both backends.

use std::process::Output;

use futures_util::TryStreamExt;
use serde_json::Value;

use crate::common::cli::{fedreg, run, success};
use crate::common::federation::{create_sites, peer_one_way};
use crate::common::{Backend, PATIENCE, TestServer, eventually};
use fedreg::client::{Client, PeerKey};
use fedreg::error::Error;
use fedreg::proto::v1 as pb;

backend_tests!(
    the_client_lists_refreshes_and_follows,
    status_and_json_through_the_cli,
);

/// A client of `server` with its admin token.
async fn admin(server: &TestServer) -> Client {
    Client::connect(&server.url(), Some(&server.admin_token), None)
        .await
        .expect("connect")
}

async fn the_client_lists_refreshes_and_follows(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let local = create_sites(&plc1, "one", 2).await;
    let remote = create_sites(&plc2, "two", 5).await;
    let plc2_on_plc1 = peer_one_way(&plc1, "plc1", &plc2, "plc2").await;
    let client = admin(&plc1).await;

    // The peers, as a stream.
    let peers: Vec<pb::Peer> = client.list_peers().try_collect().await.unwrap();
    let names: Vec<&str> = peers.iter().map(|p| p.peername.as_str()).collect();
    assert_eq!(names, ["plc2"]);

    // A refresh by name returns the report.
    let report = client
        .refresh_peer(PeerKey::Name("plc2".into()), false, false)
        .await
        .unwrap();
    assert_eq!(report.outcome(), pb::RefreshOutcome::Applied);
    let sites = report.classes.iter().find(|c| c.class == "sites").unwrap();
    assert_eq!((sites.received, sites.added), (5, 5));
    // An unknown peer is the server's NOT_FOUND.
    let missing = client
        .refresh_peer(PeerKey::Name("nowhere".into()), false, false)
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound, "{missing:?}");

    // Every site, two per page: the local ones then the cached ones, each
    // once, in id order.
    let all: Vec<pb::Site> = client
        .sites(pb::ListRequest {
            page_size: 2,
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(all.len(), 7);
    let ids: Vec<i64> = all.iter().map(|s| s.site_id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(ids, sorted, "in id order, each once");
    assert_eq!(ids[..2], local[..]);
    // Only those cached from the peer, with their ids there.
    let cached: Vec<pb::Site> = client
        .sites(pb::ListRequest {
            peer_id: Some(plc2_on_plc1),
            page_size: 3,
            ..Default::default()
        })
        .try_collect()
        .await
        .unwrap();
    let origins: Vec<i64> = cached
        .iter()
        .map(|s| s.origin.expect("foreign").peer_object_id)
        .collect();
    assert_eq!(origins, remote);
    // A bad page size is the server's INVALID_ARGUMENT, as the stream's
    // only item.
    let bad: Result<Vec<pb::Site>, _> = client
        .sites(pb::ListRequest {
            page_size: -1,
            ..Default::default()
        })
        .try_collect()
        .await;
    let bad = bad.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("page_size"), "{bad:?}");

    // Following plc2: the current checkpoint, then an event for a commit.
    let plc2_client = admin(&plc2).await;
    let mut events = plc2_client.follow(None, 3600).await.unwrap();
    let first = tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("first event in time")
        .unwrap()
        .expect("an event");
    let at = first.checkpoint.expect("checkpoint").revision;
    create_sites(&plc2, "three", 1).await;
    let next = tokio::time::timeout(PATIENCE, events.message())
        .await
        .expect("an event in time")
        .unwrap()
        .expect("an event");
    assert!(!next.heartbeat);
    assert!(next.checkpoint.expect("checkpoint").revision > at);
    // A token the server does not know cannot follow.
    let stranger = Client::connect(&plc2.url(), Some("fr_bogus"), None)
        .await
        .unwrap();
    let refused = stranger.follow(None, 0).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}

async fn connect_errors_name_what_is_wrong() {
    let invalid = |result: Result<Client, Error>, needles: &[&str]| match result {
        Err(Error::InvalidArgument {
            field,
            value,
            reason,
        }) => {
            let text = format!("{field} {value} {reason}");
            for needle in needles {
                assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            }
        }
        other => panic!("expected an invalid argument, got {other:?}"),
    };
    invalid(
        Client::connect("ftp://127.0.0.1:1", None, None).await,
        &["server", "ftp://127.0.0.1:1", "http://host:port"],
    );
    invalid(
        Client::connect("https://127.0.0.1:1", None, None).await,
        &["server", "CA certificate"],
    );
    invalid(
        Client::connect("http://127.0.0.1:1", None, Some(b"pem")).await,
        &["server", "https:// servers only"],
    );
    invalid(
        Client::connect("http://127.0.0.1:1", Some("bad\ntoken"), None).await,
        &["token"],
    );
    match Client::connect("http://127.0.0.1:1", None, None).await {
        Err(Error::Unavailable(message)) => {
            assert!(
                message.contains("cannot reach http://127.0.0.1:1"),
                "{message}"
            );
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

/// Runs `fedreg <args> --server URL` against `server`, with its
/// `admin-token` file.
async fn cli(server: &TestServer, args: &[&str]) -> Output {
    let mut command = fedreg(server.data_dir.path(), None);
    command.args(args).args(["--server", &server.url()]);
    run(command).await
}

/// The JSON that `fedreg <args>` prints on `server`.
async fn cli_json(server: &TestServer, args: &[&str]) -> Value {
    let out = success(&cli(server, args).await);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// The cells of the line of `table` whose first cell is `first`.
#[track_caller]
fn row<'a>(table: &'a str, first: &str) -> Vec<&'a str> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        })
        .find(|cells| cells.first() == Some(&first))
        .unwrap_or_else(|| panic!("no line for {first:?} in:\n{table}"))
}

async fn status_and_json_through_the_cli(backend: Backend) {
    let plc1 = TestServer::start_named(backend, "plc1").await;
    let plc2 = TestServer::start_named(backend, "plc2").await;
    let plc3 = TestServer::start_named(backend, "plc3").await;
    create_sites(&plc2, "two", 3).await;
    create_sites(&plc3, "three", 1).await;

    // No peers yet.
    assert_eq!(success(&cli(&plc1, &["status"]).await), "no peers\n");
    assert_eq!(
        cli_json(&plc1, &["status", "--json"]).await,
        Value::Array(vec![])
    );

    // plc2 refreshed by hand; plc3 followed; "gone" never answers.
    peer_one_way(&plc1, "plc1", &plc2, "plc2").await;
    let plc3_id = peer_one_way(&plc1, "plc1", &plc3, "plc3").await;
    success(
        &cli(
            &plc1,
            &[
                "peer",
                "add",
                "gone",
                "--url",
                "http://127.0.0.1:1",
                "--outbound-token",
                "x",
            ],
        )
        .await,
    );
    let report = cli_json(&plc1, &["refresh", "plc2", "--json"]).await;
    assert_eq!(report["outcome"], "applied", "{report}");
    assert_eq!(report["mode"], "manual", "{report}");
    let sites = &report["classes"][0];
    assert_eq!(
        (&sites["class"], &sites["added"]),
        (&"sites".into(), &3.into()),
        "{report}"
    );
    let failed = cli(&plc1, &["refresh", "gone"]).await;
    assert!(!failed.status.success());
    success(&cli(&plc1, &["peer", "update", "plc3", "--follow", "true"]).await);
    eventually("plc3 followed and caught up", || async {
        let status = cli_json(&plc1, &["status", "--json"]).await;
        let plc3 = status
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peername"] == "plc3")
            .cloned();
        plc3.is_some_and(|p| {
            p["connected"] == true
                && p["lag_revisions"] == 0
                && p["last_refresh_outcome"] == "applied"
        })
    })
    .await;

    // One table line per peer: mode, last refresh, outcome, lag, error.
    let table = success(&cli(&plc1, &["status"]).await);
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_eq!(
        row(&table, "PEER"),
        [
            "PEER",
            "MODE",
            "LAST REFRESH",
            "OUTCOME",
            "LAG",
            "LAST ERROR"
        ]
    );
    let line = row(&table, "plc2");
    assert_eq!(
        [line[1], line[3], line[4], line[5]],
        ["manual", "APPLIED", "-", "-"],
        "{table}"
    );
    assert!(line[2].ends_with(" UTC"), "{table}");
    let line = row(&table, "plc3");
    assert_eq!(
        [line[1], line[3], line[4], line[5]],
        ["follow", "APPLIED", "0 rev, 0.0 s", "-"],
        "{table}"
    );
    let line = row(&table, "gone");
    assert_eq!([line[1], line[3]], ["manual", "FAILED"], "{table}");
    assert!(line[5].contains("127.0.0.1:1"), "{table}");

    // The same as JSON.
    let status = cli_json(&plc1, &["status", "--json"]).await;
    let status = status.as_array().unwrap();
    let names: Vec<&str> = status
        .iter()
        .map(|p| p["peername"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["plc2", "plc3", "gone"]);
    assert_eq!(status[0]["mode"], "manual");
    assert_eq!(status[0]["last_error"], Value::Null);
    assert_eq!(status[0]["lag_revisions"], Value::Null);
    assert!(
        status[0]["last_refresh_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(status[1]["peer_id"], plc3_id);
    assert_eq!(status[1]["mode"], "follow");
    assert_eq!(status[2]["last_refresh_outcome"], "failed");
    assert!(
        status[2]["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:1")
    );

    // peer list and peer show.
    let peers = cli_json(&plc1, &["peer", "list", "--json"]).await;
    let plc2_json = &peers[0];
    assert_eq!(plc2_json["peername"], "plc2");
    assert_eq!(plc2_json["has_outbound_token"], true);
    assert_eq!(plc2_json["cached"]["sites"], 3);
    assert_eq!(plc2_json["last_refresh_report"]["outcome"], "applied");
    assert_eq!(peers[1]["follow_status"]["connected"], true);
    assert_eq!(peers.as_array().unwrap().len(), 3);
    let shown = cli_json(&plc1, &["peer", "show", "plc2", "--json"]).await;
    assert_eq!(&shown, plc2_json);
    let shown = cli_json(&plc1, &["peer", "show", "gone", "--json"]).await;
    assert_eq!(shown["last_refresh_outcome"], "failed");
    assert_eq!(shown["follow_status"], Value::Null);

    // token list, on the database.
    let database_url = (backend == Backend::Postgres).then(|| plc1.database_url.clone());
    let mut command = fedreg(plc1.data_dir.path(), database_url);
    command.args(["token", "list", "--json"]);
    let out = success(&run(command).await);
    let tokens: Value = serde_json::from_str(&out).unwrap();
    let roles: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["admin"], "{tokens}");
    assert!(tokens[0]["created"].as_str().unwrap().ends_with('Z'));
    assert!(tokens[0]["last_used"].as_str().is_some(), "{tokens}");
    assert!(!out.contains(&plc1.admin_token), "no secret in {out}");

    // Errors are the same with --json: a status code, nothing on stdout.
    let missing = cli(&plc1, &["peer", "show", "nowhere", "--json"]).await;
    crate::common::cli::failure(&missing, &["NOT_FOUND", "nowhere"]);
    assert!(missing.stdout.is_empty());
}

async_tests!(connect_errors_name_what_is_wrong);

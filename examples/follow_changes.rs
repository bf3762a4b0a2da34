//! Follows a fedreg server's changes: prints each checkpoint the server
//! announces, then the sites it serves its peers when they changed.
//!
//! ```text
//! cargo run --example follow_changes -- http://127.0.0.1:50051 [TOKEN] [EVENTS]
//! ```
//!
//! The token (a peer or admin token) defaults to `FEDREG_TOKEN`; after
//! EVENTS events that announce a change (default: no limit) it stops.

use futures_util::TryStreamExt;

use fedreg::client::Client;
use fedreg::proto::v1 as pb;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let token = args.next().or_else(|| std::env::var("FEDREG_TOKEN").ok());
    let limit: Option<usize> = args.next().map(|n| n.parse()).transpose()?;
    let client = Client::connect(&url, token.as_deref(), None).await?;

    let mut events = client.follow(None, 10).await?;
    let mut since: Option<pb::Checkpoint> = None;
    let mut changes = 0;
    while let Some(event) = events.try_next().await? {
        let Some(checkpoint) = event.checkpoint else {
            continue;
        };
        if event.heartbeat {
            println!("heartbeat at revision {}", checkpoint.revision);
            continue;
        }
        match &since {
            None => println!(
                "at revision {} (epoch {})",
                checkpoint.revision, checkpoint.epoch
            ),
            Some(from) => {
                println!(
                    "changed: revision {} -> {}",
                    from.revision, checkpoint.revision
                );
                changes += 1;
            }
        }
        since = Some(checkpoint);
        if limit.is_some_and(|limit| changes >= limit) {
            break;
        }
    }
    Ok(())
}

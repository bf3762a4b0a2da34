//! Lists the sites of a fedreg server, local and cached from peers, page
//! after page as the listing is read.
//!
//! ```text
//! cargo run --example list_sites -- http://127.0.0.1:50051 [TOKEN] [CA.pem]
//! ```
//!
//! The token defaults to `FEDREG_TOKEN`; the CA certificate is for an
//! `https://` URL.

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
    let ca_pem = args.next().map(std::fs::read).transpose()?;
    let client = Client::connect(&url, token.as_deref(), ca_pem.as_deref()).await?;

    let mut sites = std::pin::pin!(client.sites(pb::ListRequest::default()));
    let mut count = 0;
    while let Some(site) = sites.try_next().await? {
        let origin = site
            .origin
            .map_or_else(|| "local".to_owned(), |o| format!("peer {}", o.peer_id));
        println!(
            "{:>6}  {:<20}  {:<8}  {}",
            site.site_id, site.login_base, origin, site.name
        );
        count += 1;
    }
    println!("{count} site(s)");
    Ok(())
}

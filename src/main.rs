//! The `fedreg` binary: parses the command line and runs it.

/// mimalloc instead of the system allocator: a registry moves many small
/// rows between the database's threads and the async ones, which glibc's
/// allocator serves poorly (a large share of GetPeerData's time went to it).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let ran = match fedreg::cli::config::parse() {
        Ok(cli) => {
            fedreg::cli::init_logging(cli.log_format);
            fedreg::cli::run(cli).await
        }
        Err(e) => Err(e),
    };
    match ran {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fedreg: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

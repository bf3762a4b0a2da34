//! The process's open-file limit. A server holds a descriptor per client
//! connection, so `serve` raises the soft limit to the hard one at start
//! (service managers often leave it at 1,024 with a far higher hard
//! limit), and serves no more connections than the limit leaves room for.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Descriptors kept for everything but client connections: the database,
/// the data directory's files, connections to peers, the metrics endpoint.
pub const RESERVED: u64 = 128;

/// Raises the soft limit on open files to the hard one; returns the soft
/// limit in force afterwards (`None`: unlimited).
pub fn raise_limit() -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        return limit.current;
    };
    if soft >= hard {
        return Some(soft);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: Some(hard),
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => Some(hard),
        Err(e) => {
            tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
            Some(soft)
        }
    }
}

/// The most connections to serve: `asked`, or fewer when an open-file
/// limit of `open_files` leaves no room for them besides [`RESERVED`].
pub fn connections_within(asked: usize, open_files: Option<u64>) -> usize {
    match open_files {
        None => asked,
        Some(limit) => {
            let room = usize::try_from(limit.saturating_sub(RESERVED)).unwrap_or(usize::MAX);
            asked.min(room.max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_the_reserved_descriptors() {
        assert_eq!(connections_within(4096, None), 4096);
        assert_eq!(connections_within(4096, Some(1 << 20)), 4096);
        assert_eq!(connections_within(4096, Some(1024)), 1024 - 128);
        assert_eq!(connections_within(10, Some(1024)), 10);
        assert_eq!(connections_within(4096, Some(100)), 1);
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let before = getrlimit(Resource::Nofile);
        let now = raise_limit();
        assert_eq!(getrlimit(Resource::Nofile).current, now);
        if let (Some(hard), Some(now)) = (before.maximum, now) {
            assert_eq!(now, hard);
        }
    }
}

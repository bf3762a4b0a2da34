//! What the server knows of the tokens in use: the tokens that
//! authenticated recently, and the peering streams open with each.
//!
//! A token that authenticated is remembered for [`Limits::token_cache`]:
//! the auth layer trusts it without the database when the database does
//! not answer in time (every connection busy), so that an admin reaches
//! the server, and `RevokeToken`, whatever the streams do.
//!
//! Each `GetPeerData` or `Follow` stream takes a [`StreamSlot`] of its
//! token, at most [`Limits::streams_per_token`] at a time. A slot carries
//! the token's revocation signal: `RevokeToken` fires it at once, and a
//! background check ([`run_revocation_check`]) every
//! [`Limits::token_cache`] fires it for tokens revoked by another process
//! (`fedreg token revoke`, another server on the same PostgreSQL
//! database), so a stream ends with its token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::auth::Principal;
use crate::error::{Error, Result};
use crate::store::{Store, tokens};

/// How much a token may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Concurrent `GetPeerData` and `Follow` streams per token.
    pub streams_per_token: usize,
    /// How long an authenticated token may be trusted when the database
    /// does not answer in time; also the period of the check for tokens
    /// revoked elsewhere.
    pub token_cache: Duration,
}

/// The tokens in use; shared by the auth layer and the services.
pub struct Sessions {
    limits: Limits,
    /// By token hash: who it is, and when it was read.
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
    /// By token id: the streams open with it.
    streams: Mutex<HashMap<i64, OpenStreams>>,
}

struct OpenStreams {
    count: usize,
    revoked: CancellationToken,
}

/// A stream's place among its token's streams; freed when dropped.
pub struct StreamSlot {
    sessions: Arc<Sessions>,
    token_id: i64,
    revoked: CancellationToken,
}

impl std::fmt::Debug for StreamSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSlot")
            .field("token_id", &self.token_id)
            .finish()
    }
}

impl StreamSlot {
    /// Completes when the slot's token is revoked.
    pub async fn revoked(&mut self) {
        self.revoked.cancelled().await;
    }

    /// The signal [`StreamSlot::revoked`] waits on, for a task of its own.
    pub fn revocation(&self) -> CancellationToken {
        self.revoked.clone()
    }

    /// The token the slot belongs to.
    pub fn token_id(&self) -> i64 {
        self.token_id
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.sessions.streams();
        if let Some(open) = streams.get_mut(&self.token_id) {
            open.count -= 1;
            if open.count == 0 {
                streams.remove(&self.token_id);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sessions {
    /// No token known yet.
    pub fn new(limits: Limits) -> Arc<Sessions> {
        Arc::new(Sessions {
            limits,
            cache: Mutex::default(),
            streams: Mutex::default(),
        })
    }

    fn streams(&self) -> MutexGuard<'_, HashMap<i64, OpenStreams>> {
        lock(&self.streams)
    }

    /// The principal of the token hashed as `hash`, if it authenticated
    /// less than [`Limits::token_cache`] ago.
    pub fn cached(&self, hash: &str) -> Option<Principal> {
        let mut cache = lock(&self.cache);
        match cache.get(hash) {
            Some((principal, read)) if read.elapsed() < self.limits.token_cache => {
                Some(principal.clone())
            }
            Some(_) => {
                cache.remove(hash);
                None
            }
            None => None,
        }
    }

    /// Remembers that the token hashed as `hash` is `principal`.
    pub fn remember(&self, hash: String, principal: Principal) {
        let mut cache = lock(&self.cache);
        // Expired entries go whenever the cache grows past what a busy
        // server uses, so that unknown tokens never pile up.
        if cache.len() >= 1024 {
            let ttl = self.limits.token_cache;
            cache.retain(|_, (_, read)| read.elapsed() < ttl);
        }
        cache.insert(hash, (principal, Instant::now()));
    }

    /// A slot for a new stream of `token_id`; `ResourceExhausted` when the
    /// token already has [`Limits::streams_per_token`] open.
    pub fn open_stream(self: &Arc<Self>, token_id: i64, call: &str) -> Result<StreamSlot> {
        let mut streams = self.streams();
        let open = streams.entry(token_id).or_insert_with(|| OpenStreams {
            count: 0,
            revoked: CancellationToken::new(),
        });
        if open.count >= self.limits.streams_per_token {
            return Err(Error::ResourceExhausted(format!(
                "token {token_id} already has {} GetPeerData/Follow streams open (the limit); \
                 {call} refused until one ends",
                open.count
            )));
        }
        open.count += 1;
        Ok(StreamSlot {
            sessions: self.clone(),
            token_id,
            revoked: open.revoked.clone(),
        })
    }

    /// Forgets `token_id` and ends its streams.
    pub fn revoke(&self, token_id: i64) {
        lock(&self.cache).retain(|_, (principal, _)| principal.token_id != token_id);
        if let Some(open) = self.streams().get(&token_id) {
            open.revoked.cancel();
        }
    }

    /// The tokens with streams open.
    fn streaming_tokens(&self) -> Vec<i64> {
        self.streams().keys().copied().collect()
    }
}

/// Every [`Limits::token_cache`], ends the streams of the tokens that no
/// longer exist (revoked by another process), until `stop` is cancelled.
pub async fn run_revocation_check(
    sessions: Arc<Sessions>,
    store: Store,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticks = tokio::time::interval(sessions.limits.token_cache);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let streaming = sessions.streaming_tokens();
        if streaming.is_empty() {
            continue;
        }
        let existing = async {
            let mut conn = store.read().await?;
            tokens::existing(&mut conn, &streaming).await
        };
        match existing.await {
            Ok(existing) => {
                for token_id in streaming.into_iter().filter(|t| !existing.contains(t)) {
                    tracing::info!(token_id, "token revoked: ending its streams");
                    sessions.revoke(token_id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "checking the tokens of open streams"),
        }
    }
}

//! API tokens: stored as SHA-256 hashes, each with a role and, for peer
//! tokens, the peer it authenticates.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::schema::tokens;
use super::{DbConn, now};
use crate::error::{Error, Result};
use crate::with_db;

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Reading this registry's data as the given peer.
    Peer,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Peer => "peer",
        }
    }

    /// Parses `admin` or `peer`.
    pub fn parse(s: &str) -> Result<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "peer" => Ok(Role::Peer),
            other => Err(Error::invalid("role", other, "must be admin or peer")),
        }
    }
}

/// A stored token (without its secret).
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = tokens)]
pub struct TokenRow {
    /// Id.
    pub token_id: i64,
    /// Label.
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub token_hash: String,
    /// `admin` or `peer`.
    pub role: String,
    /// For a peer token: the peer.
    pub peer_id: Option<i64>,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub last_used: Option<i64>,
}

#[derive(Insertable)]
#[diesel(table_name = tokens)]
struct NewToken<'a> {
    name: &'a str,
    token_hash: &'a str,
    role: &'a str,
    peer_id: Option<i64>,
    created: i64,
}

/// Hex SHA-256 of a token secret: the form in which tokens are stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new random secret: `fr_` and 256 random bits in hex.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("fr_{}", hex::encode(bytes))
}

/// Creates a token; returns its secret (shown once) and the stored row.
pub async fn create(
    conn: &mut DbConn,
    name: &str,
    role: Role,
    peer_id: Option<i64>,
) -> Result<(String, TokenRow)> {
    let secret = new_secret();
    let row = insert(conn, name, role, peer_id, &secret).await?;
    Ok((secret, row))
}

/// Stores a token whose secret, made by [`new_secret`], is `secret`
/// (already handed to its holder); returns the stored row.
pub async fn insert(
    conn: &mut DbConn,
    name: &str,
    role: Role,
    peer_id: Option<i64>,
    secret: &str,
) -> Result<TokenRow> {
    match (role, peer_id) {
        (Role::Peer, None) => {
            return Err(Error::invalid("peer_id", "", "a peer token needs a peer"));
        }
        (Role::Admin, Some(id)) => {
            return Err(Error::invalid(
                "peer_id",
                id,
                "an admin token is not bound to a peer",
            ));
        }
        _ => {}
    }
    if let Some(id) = peer_id {
        super::peers::require(conn, id).await?;
    }
    let hash = hash_secret(secret);
    let row = NewToken {
        name,
        token_hash: &hash,
        role: role.as_str(),
        peer_id,
        created: now(),
    };
    let stored = with_db!(conn, |c| {
        diesel::insert_into(tokens::table)
            .values(&row)
            .returning(TokenRow::as_returning())
            .get_result(c)
            .await
    })?;
    Ok(stored)
}

/// The token whose secret is `secret`, if any.
pub async fn find_by_secret(conn: &mut DbConn, secret: &str) -> Result<Option<TokenRow>> {
    let hash = hash_secret(secret);
    Ok(with_db!(conn, |c| {
        tokens::table
            .filter(tokens::token_hash.eq(&hash))
            .select(TokenRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// All tokens, by id.
pub async fn list(conn: &mut DbConn) -> Result<Vec<TokenRow>> {
    Ok(with_db!(conn, |c| {
        tokens::table
            .order(tokens::token_id)
            .select(TokenRow::as_select())
            .load(c)
            .await
    })?)
}

/// Whether any admin token exists.
pub async fn any_admin(conn: &mut DbConn) -> Result<bool> {
    let count: i64 = with_db!(conn, |c| {
        tokens::table
            .filter(tokens::role.eq(Role::Admin.as_str()))
            .count()
            .get_result(c)
            .await
    })?;
    Ok(count > 0)
}

/// Revokes a token.
pub async fn revoke(conn: &mut DbConn, token_id: i64) -> Result<()> {
    let deleted = with_db!(conn, |c| {
        diesel::delete(tokens::table.find(token_id))
            .execute(c)
            .await
    })?;
    if deleted == 0 {
        return Err(Error::not_found("token", "token_id", token_id));
    }
    Ok(())
}

/// Whether the token `token_id` still exists (was not revoked).
pub async fn exists(conn: &mut DbConn, token_id: i64) -> Result<bool> {
    let count: i64 = with_db!(conn, |c| {
        tokens::table
            .filter(tokens::token_id.eq(token_id))
            .count()
            .get_result(c)
            .await
    })?;
    Ok(count > 0)
}

/// Which of the tokens `token_ids` still exist (were not revoked).
pub async fn existing(conn: &mut DbConn, token_ids: &[i64]) -> Result<Vec<i64>> {
    let ids = token_ids.to_vec();
    Ok(with_db!(conn, |c| {
        tokens::table
            .filter(tokens::token_id.eq_any(&ids))
            .select(tokens::token_id)
            .load(c)
            .await
    })?)
}

/// Records that a token was used.
pub async fn touch(conn: &mut DbConn, token_id: i64) -> Result<()> {
    with_db!(conn, |c| {
        diesel::update(tokens::table.find(token_id))
            .set(tokens::last_used.eq(now()))
            .execute(c)
            .await
    })?;
    Ok(())
}

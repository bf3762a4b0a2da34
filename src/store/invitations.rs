//! Invitations to peer: the SHA-256 of each one's secret, the peer name
//! the joining registry gets, when it expires and when it was used.
//!
//! An invitation is used by [`claim`], one conditional `UPDATE` that
//! marks it used only while it is unused and unexpired: of two
//! enrolments with the same secret, one claims it and the other finds it
//! used, on both backends.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::schema::invitations;
use crate::error::Result;
use crate::with_db;

/// A stored invitation.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = invitations)]
pub struct InvitationRow {
    /// Id.
    pub invitation_id: i64,
    /// The name the joining registry's peer record gets.
    pub peername: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds: the invitation is good strictly before this.
    pub expires: i64,
    /// Unix seconds; `None` while unused.
    pub used: Option<i64>,
}

/// A new invitation.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = invitations)]
pub struct NewInvitation {
    /// The name the joining registry's peer record gets.
    pub peername: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds.
    pub expires: i64,
}

/// Stores an invitation; returns the stored row.
pub async fn insert(conn: &mut DbConn, invitation: &NewInvitation) -> Result<InvitationRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(invitations::table)
            .values(invitation)
            .returning(InvitationRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Marks the invitation whose secret hashes to `secret_hash` used at
/// `now`, if it is unused and expires after `now`; returns it then, and
/// `None` when no invitation was claimed (see [`by_hash`] for why).
pub async fn claim(
    conn: &mut DbConn,
    secret_hash: &str,
    now: i64,
) -> Result<Option<InvitationRow>> {
    Ok(with_db!(conn, |c| {
        diesel::update(
            invitations::table
                .filter(invitations::secret_hash.eq(secret_hash))
                .filter(invitations::used.is_null())
                .filter(invitations::expires.gt(now)),
        )
        .set(invitations::used.eq(now))
        .returning(InvitationRow::as_returning())
        .get_result(c)
        .await
        .optional()
    })?)
}

/// The invitation whose secret hashes to `secret_hash`, if any.
pub async fn by_hash(conn: &mut DbConn, secret_hash: &str) -> Result<Option<InvitationRow>> {
    Ok(with_db!(conn, |c| {
        invitations::table
            .filter(invitations::secret_hash.eq(secret_hash))
            .select(InvitationRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Every stored invitation, newest first.
pub async fn list(conn: &mut DbConn) -> Result<Vec<InvitationRow>> {
    Ok(with_db!(conn, |c| {
        invitations::table
            .order(invitations::invitation_id.desc())
            .select(InvitationRow::as_select())
            .load(c)
            .await
    })?)
}

/// The invitation `invitation_id`, if any.
pub async fn by_id(conn: &mut DbConn, invitation_id: i64) -> Result<Option<InvitationRow>> {
    Ok(with_db!(conn, |c| {
        invitations::table
            .find(invitation_id)
            .select(InvitationRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// Deletes invitation `invitation_id` if it is unused; returns it then.
pub async fn delete_unused(conn: &mut DbConn, invitation_id: i64) -> Result<Option<InvitationRow>> {
    Ok(with_db!(conn, |c| {
        diesel::delete(
            invitations::table
                .find(invitation_id)
                .filter(invitations::used.is_null()),
        )
        .returning(InvitationRow::as_returning())
        .get_result(c)
        .await
        .optional()
    })?)
}

/// Deletes the invitations that expired before `before`; returns how many.
pub async fn purge_expired(conn: &mut DbConn, before: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(invitations::table.filter(invitations::expires.lt(before)))
            .execute(c)
            .await
    })?)
}

//! Sites: rows, and the queries on them and on their relation ids.

use std::collections::HashMap;

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::DbConn;
use super::cache::{SiteFieldChanges, SiteFields};
use super::listing::{Listed, Page};
use super::schema::{nodes, person_site, sites, slices};
use crate::error::Result;
use crate::store::prepared::in_list;
use crate::{load_page, with_db};

/// A site as stored: its synced columns ([`SiteFields`]) with its ids and
/// time stamps.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = sites)]
pub struct SiteRow {
    pub site_id: i64,
    pub peer_id: Option<i64>,
    pub peer_site_id: Option<i64>,
    #[diesel(embed)]
    pub fields: SiteFields,
    pub date_created: i64,
    pub last_updated: i64,
}

/// A new site row.
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = sites, treat_none_as_default_value = false)]
pub struct NewSite {
    pub peer_id: Option<i64>,
    pub peer_site_id: Option<i64>,
    #[diesel(embed)]
    pub fields: SiteFields,
    pub date_created: i64,
    pub last_updated: i64,
}

/// Changes to a site; `None` leaves a column as it is.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = sites)]
pub struct SiteChanges {
    #[diesel(embed)]
    pub fields: SiteFieldChanges,
    pub last_updated: Option<i64>,
}

/// Relation ids of a site.
#[derive(Debug, Clone, Default)]
pub struct SiteRelations {
    pub person_ids: Vec<i64>,
    pub primary_person_ids: Vec<i64>,
    pub node_ids: Vec<i64>,
    pub slice_ids: Vec<i64>,
}

/// Inserts a site; returns the stored row.
pub async fn insert(conn: &mut DbConn, site: &NewSite) -> Result<SiteRow> {
    Ok(with_db!(conn, |c| {
        diesel::insert_into(sites::table)
            .values(site)
            .returning(SiteRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// The site with this id.
pub async fn by_id(conn: &mut DbConn, site_id: i64) -> Result<Option<SiteRow>> {
    Ok(with_db!(conn, |c| {
        sites::table
            .find(site_id)
            .select(SiteRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

/// The site with this login_base.
pub async fn by_login_base(conn: &mut DbConn, login_base: &str) -> Result<Option<SiteRow>> {
    Ok(with_db!(conn, |c| {
        sites::table
            .filter(sites::login_base.eq(login_base))
            .select(SiteRow::as_select())
            .first(c)
            .await
            .optional()
    })?)
}

impl Listed for SiteRow {
    type Relations = SiteRelations;

    fn id(&self) -> i64 {
        self.site_id
    }

    async fn page(conn: &mut DbConn, page: Page) -> Result<Vec<SiteRow>> {
        Ok(load_page!(conn, sites, site_id, SiteRow, page)?)
    }

    async fn relations(conn: &mut DbConn, ids: &[i64]) -> Result<HashMap<i64, SiteRelations>> {
        relations(conn, ids).await
    }
}

/// Applies `changes` to a site; returns the new row.
pub async fn update(conn: &mut DbConn, site_id: i64, changes: &SiteChanges) -> Result<SiteRow> {
    Ok(with_db!(conn, |c| {
        diesel::update(sites::table.find(site_id))
            .set(changes)
            .returning(SiteRow::as_returning())
            .get_result(c)
            .await
    })?)
}

/// Deletes a site; its nodes, slices and memberships go with it (cascades).
pub async fn delete(conn: &mut DbConn, site_id: i64) -> Result<usize> {
    Ok(with_db!(conn, |c| {
        diesel::delete(sites::table.find(site_id)).execute(c).await
    })?)
}

/// Relation ids of the given sites, in three queries whatever their number.
pub async fn relations(conn: &mut DbConn, site_ids: &[i64]) -> Result<HashMap<i64, SiteRelations>> {
    let mut out: HashMap<i64, SiteRelations> = site_ids
        .iter()
        .map(|&id| (id, SiteRelations::default()))
        .collect();
    let members: Vec<(i64, i64, bool)> = with_db!(conn, |c| {
        person_site::table
            .filter(in_list(person_site::site_id, site_ids))
            .select((
                person_site::site_id,
                person_site::person_id,
                person_site::is_primary,
            ))
            .order((person_site::site_id, person_site::person_id))
            .load(c)
            .await
    })?;
    for (site_id, person_id, primary) in members {
        let rel = out.entry(site_id).or_default();
        rel.person_ids.push(person_id);
        if primary {
            rel.primary_person_ids.push(person_id);
        }
    }
    let site_nodes: Vec<(i64, i64)> = with_db!(conn, |c| {
        nodes::table
            .filter(in_list(nodes::site_id, site_ids))
            .select((nodes::site_id, nodes::node_id))
            .order(nodes::node_id)
            .load(c)
            .await
    })?;
    for (site_id, node_id) in site_nodes {
        out.entry(site_id).or_default().node_ids.push(node_id);
    }
    let site_slices: Vec<(i64, i64)> = with_db!(conn, |c| {
        slices::table
            .filter(in_list(slices::site_id, site_ids))
            .select((slices::site_id, slices::slice_id))
            .order(slices::slice_id)
            .load(c)
            .await
    })?;
    for (site_id, slice_id) in site_slices {
        out.entry(site_id).or_default().slice_ids.push(slice_id);
    }
    Ok(out)
}

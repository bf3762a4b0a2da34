//! Sites: the translations of a site (a peer's message → its fields,
//! checked by the same rules as an admin's; fields → the message served to
//! peers and the admin API's message) and the admin API's operations
//! (create, read, update, delete).

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::{self, validate};
use crate::store::cache::{SiteFieldChanges, SiteFields};
use crate::store::sites::{self, NewSite, SiteChanges, SiteRelations, SiteRow};
use crate::store::slices;
use crate::store::{DbConn, Store, now};

/// Longest name, abbreviated name and url.
const MAX_NAME: usize = 254;
const MAX_ABBREVIATED_NAME: usize = 50;
const MAX_URL: usize = 254;

/// Builds `$target` from `$src`, copying the columns a site's fields share
/// by name and type with its peer and admin messages and its create
/// request (and, as `optional`, its update request).
macro_rules! site_fields {
    ($src:ident => $($target:tt)*) => {
        copy_fields!([login_base, name, abbreviated_name, url] $src => $($target)*)
    };
}

/// A site's fields checked by the rules every site obeys, whether an admin
/// writes it or a peer sends it; normalised.
pub fn checked(mut f: SiteFields) -> Result<SiteFields> {
    f.login_base = validate::login_base(&f.login_base)?;
    f.name = validate::required_text("name", &f.name, MAX_NAME)?;
    f.abbreviated_name = validate::optional_text(
        "abbreviated_name",
        &f.abbreviated_name,
        MAX_ABBREVIATED_NAME,
    )?;
    f.max_slices = validate::non_negative("max_slices", f.max_slices)?;
    f.max_slivers = validate::non_negative("max_slivers", f.max_slivers)?;
    f.latitude = f.latitude.map(validate::latitude).transpose()?;
    f.longitude = f.longitude.map(validate::longitude).transpose()?;
    f.url = validate::optional_text("url", &f.url, MAX_URL)?;
    Ok(f)
}

/// The fields of a site a peer sent, [`checked`].
pub fn from_peer(s: pb::ExportedSite) -> Result<SiteFields> {
    checked(site_fields!(s => SiteFields {
        sync_digest: None,
        enabled: s.enabled,
        is_public: s.is_public,
        max_slices: s.max_slices,
        max_slivers: s.max_slivers,
        latitude: s.latitude,
        longitude: s.longitude,
        ext_consortium_id: s.ext_consortium_id,
    }))
}

/// A local site as it is served to peers.
pub fn to_peer(site_id: i64, f: SiteFields) -> pb::ExportedSite {
    site_fields!(f => pb::ExportedSite {
        site_id,
        enabled: f.enabled,
        is_public: f.is_public,
        max_slices: f.max_slices,
        max_slivers: f.max_slivers,
        latitude: f.latitude,
        longitude: f.longitude,
        ext_consortium_id: f.ext_consortium_id,
    })
}

/// The admin API's message of a stored site with its relations.
pub fn to_message(row: SiteRow, rel: SiteRelations) -> pb::Site {
    let f = row.fields;
    site_fields!(f => pb::Site {
        site_id: row.site_id,
        enabled: f.enabled,
        is_public: f.is_public,
        max_slices: f.max_slices,
        max_slivers: f.max_slivers,
        latitude: f.latitude,
        longitude: f.longitude,
        ext_consortium_id: f.ext_consortium_id,
        origin: registry::origin(row.peer_id, row.peer_site_id),
        date_created: registry::timestamp(row.date_created),
        last_updated: registry::timestamp(row.last_updated),
        person_ids: rel.person_ids,
        primary_person_ids: rel.primary_person_ids,
        node_ids: rel.node_ids,
        slice_ids: rel.slice_ids,
    })
}

/// Reads a site and its relations as a message.
pub async fn load(conn: &mut DbConn, row: SiteRow) -> Result<pb::Site> {
    let mut rels = sites::relations(conn, &[row.site_id]).await?;
    let rel = rels.remove(&row.site_id).unwrap_or_default();
    Ok(to_message(row, rel))
}

/// The site with this id, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, site_id: i64) -> Result<SiteRow> {
    sites::by_id(conn, site_id)
        .await?
        .ok_or_else(|| Error::not_found("site", "site_id", site_id))
}

async fn ensure_login_base_free(conn: &mut DbConn, login_base: &str) -> Result<()> {
    match sites::by_login_base(conn, login_base).await? {
        Some(_) => Err(Error::exists("login_base", login_base)),
        None => Ok(()),
    }
}

/// Creates a local site.
pub async fn create(store: &Store, req: pb::CreateSiteRequest) -> Result<pb::Site> {
    let now = now();
    let site = NewSite {
        peer_id: None,
        peer_site_id: None,
        fields: checked(site_fields!(req => SiteFields {
        sync_digest: None,
            enabled: req.enabled.unwrap_or(true),
            is_public: req.is_public.unwrap_or(true),
            max_slices: req.max_slices.unwrap_or(10),
            max_slivers: req.max_slivers.unwrap_or(1000),
            latitude: req.latitude,
            longitude: req.longitude,
            ext_consortium_id: req.ext_consortium_id,
        }))?,
        date_created: now,
        last_updated: now,
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            ensure_login_base_free(c, &site.fields.login_base).await?;
            let row = sites::insert(c, &site).await?;
            load(c, row).await
        })
    })
    .await
}

/// Gets a site by id or login_base.
pub async fn get(store: &Store, req: pb::GetSiteRequest) -> Result<pb::Site> {
    let mut conn = store.read().await?;
    let row = match req.key {
        Some(pb::get_site_request::Key::SiteId(id)) => require(&mut conn, id).await?,
        Some(pb::get_site_request::Key::LoginBase(lb)) => sites::by_login_base(&mut conn, &lb)
            .await?
            .ok_or_else(|| Error::not_found("site", "login_base", lb))?,
        None => return Err(Error::invalid("key", "", "set site_id or login_base")),
    };
    load(&mut conn, row).await
}

/// Lists sites.
pub async fn list(store: &Store, req: pb::ListRequest) -> Result<pb::ListSitesResponse> {
    let (sites, next_page_token) = registry::list::<SiteRow, _>(store, &req, to_message).await?;
    Ok(pb::ListSitesResponse {
        sites,
        next_page_token,
    })
}

/// Changes a local site.
pub async fn update(store: &Store, mut req: pb::UpdateSiteRequest) -> Result<pb::Site> {
    // The new values are checked in place, by the rules of `checked`.
    req.login_base = req
        .login_base
        .as_deref()
        .map(validate::login_base)
        .transpose()?;
    req.name = req
        .name
        .as_deref()
        .map(|v| validate::required_text("name", v, MAX_NAME))
        .transpose()?;
    req.abbreviated_name = req
        .abbreviated_name
        .as_deref()
        .map(|v| validate::optional_text("abbreviated_name", v, MAX_ABBREVIATED_NAME))
        .transpose()?;
    req.max_slices = req
        .max_slices
        .map(|v| validate::non_negative("max_slices", v))
        .transpose()?;
    req.max_slivers = req
        .max_slivers
        .map(|v| validate::non_negative("max_slivers", v))
        .transpose()?;
    req.latitude = req.latitude.map(validate::latitude).transpose()?;
    req.longitude = req.longitude.map(validate::longitude).transpose()?;
    req.url = req
        .url
        .as_deref()
        .map(|v| validate::optional_text("url", v, MAX_URL))
        .transpose()?;
    let site_id = req.site_id;
    let changes = SiteChanges {
        fields: site_fields!(req => SiteFieldChanges {
                sync_digest: None,
            enabled: req.enabled,
            is_public: req.is_public,
            max_slices: req.max_slices,
            max_slivers: req.max_slivers,
            latitude: req.latitude.map(Some),
            longitude: req.longitude.map(Some),
            ext_consortium_id: req.ext_consortium_id.map(Some),
        }),
        last_updated: Some(now()),
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require(c, site_id).await?;
            registry::require_local("site", &current.fields.login_base, current.peer_id)?;
            if let Some(lb) = &changes.fields.login_base
                && *lb != current.fields.login_base
            {
                ensure_login_base_free(c, lb).await?;
                rename_slices(c, site_id, &current.fields.login_base, lb).await?;
            }
            let row = sites::update(c, site_id, &changes).await?;
            load(c, row).await
        })
    })
    .await
}

/// Renames the slices of a site whose login_base changes from `old` to
/// `new`: a slice's name starts with its site's login_base, always (a
/// peer's slice that does not is skipped). Fails, naming the slice, when a
/// new name would not be a valid slice name.
async fn rename_slices(conn: &mut DbConn, site_id: i64, old: &str, new: &str) -> Result<()> {
    let prefix = format!("{old}_");
    for name in slices::names_at_site(conn, site_id).await? {
        if let Some(rest) = name.strip_prefix(&prefix) {
            validate::slice_name(&format!("{new}_{rest}")).map_err(|e| {
                Error::invalid(
                    "login_base",
                    new,
                    format!("its slice {name} would be renamed to an invalid name: {e}"),
                )
            })?;
        }
    }
    slices::rename_prefix(conn, site_id, old, new).await?;
    Ok(())
}

/// Deletes a local site with its nodes and slices.
pub async fn delete(store: &Store, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require(c, req.id).await?;
            registry::require_local("site", &current.fields.login_base, current.peer_id)?;
            sites::delete(c, req.id).await?;
            Ok(pb::DeleteResponse {})
        })
    })
    .await
}

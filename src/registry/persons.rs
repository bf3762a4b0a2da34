//! Persons: the translations of a person (a peer's message → its fields,
//! checked by the same rules as an admin's; fields → the message served to
//! peers and the admin API's message) and the admin API's operations
//! (create, read, update, delete, and the site and role memberships).
//!
//! E-mail addresses are unique among local persons only: a peer's persons
//! may use an address a local person uses. Passwords are stored as argon2
//! hashes and never returned.

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::proto::v1 as pb;
use crate::registry::{self, sites, validate};
use crate::store::cache::{PersonFieldChanges, PersonFields};
use crate::store::memberships;
use crate::store::persons::{self, NewPerson, PersonChanges, PersonRelations, PersonRow};
use crate::store::{DbConn, Store, now};

/// Longest names, title, phone, url and bio (PLCAPI's limits).
const MAX_NAME: usize = 128;
const MAX_PHONE: usize = 64;
const MAX_TEXT: usize = 254;

/// Builds `$target` from `$src`, copying the columns a person's fields
/// share by name and type with its peer and admin messages and its create
/// request (and, as `optional`, its update request).
macro_rules! person_fields {
    ($src:ident => $($target:tt)*) => {
        copy_fields!([email, first_name, last_name, title, phone, url, bio] $src => $($target)*)
    };
}

/// A person's fields checked by the rules every person obeys, whether an
/// admin writes it or a peer sends it; normalised.
pub fn checked(mut f: PersonFields) -> Result<PersonFields> {
    f.email = validate::email(&f.email)?;
    f.first_name = validate::required_text("first_name", &f.first_name, MAX_NAME)?;
    f.last_name = validate::required_text("last_name", &f.last_name, MAX_NAME)?;
    f.title = validate::optional_text("title", &f.title, MAX_NAME)?;
    f.phone = validate::optional_text("phone", &f.phone, MAX_PHONE)?;
    f.url = validate::optional_text("url", &f.url, MAX_TEXT)?;
    f.bio = validate::optional_text("bio", &f.bio, MAX_TEXT)?;
    Ok(f)
}

/// The fields of a person a peer sent, [`checked`] (its memberships are
/// reconciled apart).
pub fn from_peer(p: pb::ExportedPerson) -> Result<PersonFields> {
    checked(person_fields!(p => PersonFields {
        sync_digest: None,
        enabled: p.enabled,
    }))
}

/// A local person as it is served to peers, without memberships: the
/// caller reads those in bulk and sets `key_ids`, `role_ids`, `site_ids`
/// and `primary_site_id`.
pub fn to_peer(person_id: i64, f: PersonFields) -> pb::ExportedPerson {
    person_fields!(f => pb::ExportedPerson {
        person_id,
        enabled: f.enabled,
        key_ids: Vec::new(),
        role_ids: Vec::new(),
        site_ids: Vec::new(),
        primary_site_id: None,
    })
}

/// The admin API's message of a stored person with its relations; secrets
/// stay out.
pub fn to_message(row: PersonRow, rel: PersonRelations) -> pb::Person {
    let f = row.fields;
    person_fields!(f => pb::Person {
        person_id: row.person_id,
        enabled: f.enabled,
        origin: registry::origin(row.peer_id, row.peer_person_id),
        date_created: registry::timestamp(row.date_created),
        last_updated: registry::timestamp(row.last_updated),
        role_ids: rel.role_ids,
        site_ids: rel.site_ids,
        primary_site_id: rel.primary_site_id,
        key_ids: rel.key_ids,
        slice_ids: rel.slice_ids,
    })
}

/// Reads a person's relations and returns the person as a message.
pub async fn load(conn: &mut DbConn, row: PersonRow) -> Result<pb::Person> {
    let mut rels = persons::relations(conn, &[row.person_id]).await?;
    let rel = rels.remove(&row.person_id).unwrap_or_default();
    Ok(to_message(row, rel))
}

/// The person with this id, or NOT_FOUND.
pub async fn require(conn: &mut DbConn, person_id: i64) -> Result<PersonRow> {
    persons::by_id(conn, person_id)
        .await?
        .ok_or_else(|| Error::not_found("person", "person_id", person_id))
}

/// The local person with this id: NOT_FOUND if there is none,
/// FAILED_PRECONDITION if the person is cached from a peer.
pub async fn require_local(conn: &mut DbConn, person_id: i64) -> Result<PersonRow> {
    let row = require(conn, person_id).await?;
    registry::require_local("person", &row.fields.email, row.peer_id)?;
    Ok(row)
}

async fn ensure_email_free(conn: &mut DbConn, email: &str) -> Result<()> {
    match persons::local_by_email(conn, email).await? {
        Some(_) => Err(Error::exists("email", email)),
        None => Ok(()),
    }
}

/// The argon2 hash (PHC string) of `password`, with a fresh random salt.
/// Runs on the blocking pool: hashing is deliberately slow.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| Error::Internal(format!("password salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::Internal(format!("password hash: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(format!("password hash task: {e}")))?
}

/// The stored form of a password: `None` when it is empty.
async fn stored_password(password: &str) -> Result<Option<String>> {
    let password = validate::password(password)?;
    if password.is_empty() {
        Ok(None)
    } else {
        hash_password(password.to_owned()).await.map(Some)
    }
}

/// Creates a local person.
pub async fn create(store: &Store, req: pb::CreatePersonRequest) -> Result<pb::Person> {
    let now = now();
    let person = NewPerson {
        peer_id: None,
        peer_person_id: None,
        fields: checked(person_fields!(req => PersonFields {
        sync_digest: None,
            enabled: req.enabled.unwrap_or(false),
        }))?,
        password_hash: stored_password(&req.password).await?,
        date_created: now,
        last_updated: now,
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            ensure_email_free(c, &person.fields.email).await?;
            let row = persons::insert(c, &person).await?;
            load(c, row).await
        })
    })
    .await
}

/// Gets a person by id or e-mail; by e-mail, the local person when
/// several authorities use the address.
pub async fn get(store: &Store, req: pb::GetPersonRequest) -> Result<pb::Person> {
    let mut conn = store.read().await?;
    let row = match req.key {
        Some(pb::get_person_request::Key::PersonId(id)) => require(&mut conn, id).await?,
        Some(pb::get_person_request::Key::Email(email)) => {
            persons::by_email(&mut conn, &email.trim().to_ascii_lowercase())
                .await?
                .ok_or_else(|| Error::not_found("person", "email", email))?
        }
        None => return Err(Error::invalid("key", "", "set person_id or email")),
    };
    load(&mut conn, row).await
}

/// Lists persons.
pub async fn list(store: &Store, req: pb::ListRequest) -> Result<pb::ListPersonsResponse> {
    let (persons, next_page_token) =
        registry::list::<PersonRow, _>(store, &req, to_message).await?;
    Ok(pb::ListPersonsResponse {
        persons,
        next_page_token,
    })
}

/// Changes a local person.
pub async fn update(store: &Store, mut req: pb::UpdatePersonRequest) -> Result<pb::Person> {
    let text = |field, value: &Option<String>, max| {
        value
            .as_deref()
            .map(|v| validate::optional_text(field, v, max))
            .transpose()
    };
    let required = |field, value: &Option<String>| {
        value
            .as_deref()
            .map(|v| validate::required_text(field, v, MAX_NAME))
            .transpose()
    };
    let password_hash = match req.password.as_deref() {
        Some(password) => Some(stored_password(password).await?),
        None => None,
    };
    // The new values are checked in place, by the rules of `checked`.
    req.email = req.email.as_deref().map(validate::email).transpose()?;
    req.first_name = required("first_name", &req.first_name)?;
    req.last_name = required("last_name", &req.last_name)?;
    req.title = text("title", &req.title, MAX_NAME)?;
    req.phone = text("phone", &req.phone, MAX_PHONE)?;
    req.url = text("url", &req.url, MAX_TEXT)?;
    req.bio = text("bio", &req.bio, MAX_TEXT)?;
    let person_id = req.person_id;
    let changes = PersonChanges {
        fields: person_fields!(req => PersonFieldChanges {
                sync_digest: None,
            enabled: req.enabled,
        }),
        password_hash,
        last_updated: Some(now()),
    };
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            let current = require_local(c, person_id).await?;
            if let Some(email) = &changes.fields.email
                && *email != current.fields.email
            {
                ensure_email_free(c, email).await?;
            }
            let row = persons::update(c, person_id, &changes).await?;
            load(c, row).await
        })
    })
    .await
}

/// Deletes a local person with the person's keys and memberships.
pub async fn delete(store: &Store, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            require_local(c, req.id).await?;
            persons::delete(c, req.id).await?;
            Ok(pb::DeleteResponse {})
        })
    })
    .await
}

/// A local person and a local site, for a change of their link: NOT_FOUND
/// when either is missing, FAILED_PRECONDITION when either is foreign.
async fn require_local_pair(conn: &mut DbConn, person_id: i64, site_id: i64) -> Result<()> {
    require_local(conn, person_id).await?;
    let site = sites::require(conn, site_id).await?;
    registry::require_local("site", &site.fields.login_base, site.peer_id)
}

/// Marks a person changed and returns it after a change of its memberships.
async fn touched(conn: &mut DbConn, person_id: i64) -> Result<pb::Person> {
    persons::touch(conn, person_id, now()).await?;
    let row = require(conn, person_id).await?;
    load(conn, row).await
}

/// Affiliates a local person with a local site. With `is_primary` the site
/// becomes the person's primary site and the previous one is demoted, in
/// the same transaction. Adding an existing affiliation succeeds (and
/// changes the primary site when asked to).
pub async fn add_to_site(store: &Store, req: pb::PersonSiteRequest) -> Result<pb::Person> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            require_local_pair(c, req.person_id, req.site_id).await?;
            memberships::add_person_site(c, req.person_id, req.site_id, req.is_primary).await?;
            touched(c, req.person_id).await
        })
    })
    .await
}

/// Removes a local person from a local site; removing an absent
/// affiliation succeeds and changes nothing.
pub async fn remove_from_site(store: &Store, req: pb::PersonSiteRequest) -> Result<pb::Person> {
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            require_local_pair(c, req.person_id, req.site_id).await?;
            memberships::remove_person_site(c, req.person_id, req.site_id).await?;
            touched(c, req.person_id).await
        })
    })
    .await
}

/// Grants a role to a local person; granting a role held succeeds and
/// changes nothing.
pub async fn add_role(store: &Store, req: pb::PersonRoleRequest) -> Result<pb::Person> {
    let role_id = validate::role_id(req.role_id)?;
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            require_local(c, req.person_id).await?;
            memberships::add_person_role(c, req.person_id, role_id).await?;
            touched(c, req.person_id).await
        })
    })
    .await
}

/// Revokes a role from a local person; revoking a role not held succeeds
/// and changes nothing.
pub async fn remove_role(store: &Store, req: pb::PersonRoleRequest) -> Result<pb::Person> {
    let role_id = validate::role_id(req.role_id)?;
    let mut conn = store.write().await?;
    conn.transaction(|c| {
        Box::pin(async move {
            require_local(c, req.person_id).await?;
            memberships::remove_person_role(c, req.person_id, role_id).await?;
            touched(c, req.person_id).await
        })
    })
    .await
}

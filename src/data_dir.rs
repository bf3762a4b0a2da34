//! The data directory and the files in it that hold secrets.
//!
//! The SQLite database holds the outbound peer tokens in plain text and the
//! password hashes, and `admin-token` holds an admin token: other local
//! users must not read them. [`prepare`] creates the data directory with
//! mode 0700 and the SQLite database (and its `-wal`, `-shm` and `-journal`
//! files, which SQLite creates with the database's mode) with mode 0600;
//! looser modes found on existing ones (and on `admin-token`) are
//! tightened, with a warning.
//! [`write_private`] writes a new file with mode 0600. Outside Unix the
//! modes are left to the platform. [`try_lock`] takes the fs4 (flock) lock
//! of a file, which the operating system releases when its holder dies.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// File in the data directory holding the first admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Mode of the data directory: its owner only.
const DIR_MODE: u32 = 0o700;
/// Mode of a file holding secrets: read and written by its owner only.
const FILE_MODE: u32 = 0o600;
/// Files SQLite keeps beside the database, by suffix.
const SQLITE_SIDE_FILES: &[&str] = &["-wal", "-shm", "-journal"];

/// Creates the data directory private to its owner (or tightens an existing
/// one) and, when the database is an SQLite file (`database_url` is not a
/// `postgres://` URL), makes that file and its side files private too,
/// creating the database file empty if it does not exist yet.
pub fn prepare(data_dir: &Path, database_url: &str) -> Result<()> {
    create_private_dir(data_dir)?;
    tighten(&data_dir.join(ADMIN_TOKEN_FILE), FILE_MODE)?;
    // A plain path: `file:` URIs and `:memory:` are the operator's business.
    let plain_path = !database_url.starts_with("file:") && database_url != ":memory:";
    if !crate::store::is_postgres_url(database_url) && plain_path {
        let db = Path::new(database_url);
        create_private_file(db)?;
        for suffix in SQLITE_SIDE_FILES {
            let mut side = db.as_os_str().to_owned();
            side.push(suffix);
            tighten(Path::new(&side), FILE_MODE)?;
        }
    }
    Ok(())
}

/// Writes `contents` to a new file readable and writable by its owner only
/// (an existing file is truncated and its mode tightened).
pub fn write_private(path: &Path, contents: &str) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    let mut file = options
        .open(path)
        .map_err(|e| Error::Unavailable(format!("writing {}: {e}", path.display())))?;
    // An existing file keeps its mode on open: tighten it too.
    tighten(path, FILE_MODE)?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Error::Unavailable(format!("writing {}: {e}", path.display())))
}

/// Locks the file at `path` (creating it) with an exclusive fs4 lock,
/// held as long as the returned file is open; `None` when another holder
/// has it.
pub fn try_lock(path: &Path) -> Result<Option<File>> {
    let file = File::create(path)
        .map_err(|e| Error::Unavailable(format!("creating {}: {e}", path.display())))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(Some(file)),
        Err(fs4::TryLockError::WouldBlock) => Ok(None),
        Err(fs4::TryLockError::Error(e)) => Err(Error::Unavailable(format!(
            "locking {}: {e}",
            path.display()
        ))),
    }
}

/// Creates `dir` (and missing parents) with mode 0700, or tightens it.
fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir).map_err(|e| {
        Error::Unavailable(format!("creating data directory {}: {e}", dir.display()))
    })?;
    tighten(dir, DIR_MODE)
}

/// Creates `path` empty with mode 0600 when it does not exist, or tightens it.
fn create_private_file(path: &Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
        .open(path)
        .map_err(|e| Error::Unavailable(format!("creating {}: {e}", path.display())))?;
    tighten(path, FILE_MODE)
}

/// Gives `path`, when it exists and other users have any permission on it,
/// the mode `mode`, with a warning naming the file and both modes.
fn tighten(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let found = match std::fs::metadata(path) {
            Ok(meta) => meta.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "reading the mode of {}: {e}",
                    path.display()
                )));
            }
        };
        if found & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| Error::Unavailable(format!("restricting {}: {e}", path.display())))?;
            tracing::warn!(
                "{} was open to other users (mode {found:o}): changed to {mode:o}",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

//! Pointing an alias at a replayed shadow target in one atomic step.

use super::shadow::{same_path, shadow_collection, target_mismatch, ShadowTarget};
use crate::config::Config;
use crate::error::{bail, Context};
use crate::sink::qdrant::QdrantSink;
use crate::sink::SinkConfig;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// One alias a swap set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasSwap {
    /// The Qdrant alias name, or the symlink path (embedded).
    pub alias: String,
    /// What it points at now: the shadow collection, or the shadow directory.
    pub target: String,
    /// What it pointed at before, when it existed.
    pub previous: Option<String>,
    /// Whether `previous` was deleted (no `--keep-old`).
    pub removed: bool,
}

/// Check, before a replay, that `alias` can afterwards be pointed at `target`, so that a
/// long replay does not end in a refused swap. Also refuses an alias that already points
/// at the target (the replay would write into the live store).
///
/// # Errors
/// When the sink kind has no aliases (jsonl), the alias path is a directory or file rather
/// than a symlink, the alias name does not fit the mappings, or (server) the alias is the
/// name of a collection.
pub async fn check_alias(
    config: &Config,
    target: &ShadowTarget,
    alias: &str,
) -> crate::error::Result<()> {
    match (&config.sink, target) {
        (SinkConfig::Embedded { .. }, ShadowTarget::Directory(dir)) => {
            check_directory_alias(Path::new(alias), dir)
        }
        (SinkConfig::Qdrant { .. }, ShadowTarget::Suffix(suffix)) => {
            let (pairs, server) = server_and_pairs(config, alias, suffix)?;
            let collections = server.collection_names().await?;
            let aliases = server.aliases().await?;
            for (alias, shadow) in &pairs {
                if collections.contains(alias) {
                    bail!(
                        Invalid,
                        "--swap-alias: {alias:?} is a collection, not an alias, and Qdrant cannot \
                         give an alias the name of a collection; move to an alias once (see the \
                         README, \"Replay\")"
                    );
                }
                if aliases.get(alias) == Some(shadow) {
                    bail!(
                        Invalid,
                        "--swap-alias: {alias:?} already points at {shadow:?}, the live \
                         collection: choose a new --target-suffix"
                    );
                }
            }
            Ok(())
        }
        (sink, _) => Err(no_alias_for(sink)),
    }
}

/// Point `alias` at the shadow `target` of a finished replay, atomically: one Qdrant
/// `UpdateAliases` request holding a delete and a create per alias (server), or a symlink
/// renamed over the alias path (embedded). Unless `keep_old`, then deletes what the alias
/// pointed at before, when that is not the new target (and, on the server, no other alias
/// still points at it).
///
/// Server: `alias` must be the mappings' collection name, or `{collection}` for each of
/// several (point ids derive from that name). Embedded: `alias` is a path; point
/// `[sink] path` of processors and readers at it.
///
/// # Errors
/// As [`check_alias`]; when the server or the file system refuses the swap or the removal.
pub async fn swap_alias(
    config: &Config,
    target: &ShadowTarget,
    alias: &str,
    keep_old: bool,
) -> crate::error::Result<Vec<AliasSwap>> {
    match (&config.sink, target) {
        (SinkConfig::Embedded { .. }, ShadowTarget::Directory(dir)) => {
            Ok(vec![swap_directory_alias(Path::new(alias), dir, keep_old)?])
        }
        (SinkConfig::Qdrant { .. }, ShadowTarget::Suffix(suffix)) => {
            let (pairs, server) = server_and_pairs(config, alias, suffix)?;
            let previous = server.swap_aliases(&pairs).await?;
            let now = server.aliases().await?;
            let mut swaps = Vec::with_capacity(pairs.len());
            for ((alias, target), previous) in pairs.into_iter().zip(previous) {
                let mut removed = false;
                if let Some(old) = previous.as_ref().filter(|old| !keep_old && **old != target) {
                    if let Some((other, _)) = now.iter().find(|(_, c)| *c == old) {
                        tracing::warn!(collection = %old, alias = %other, "previous collection kept: another alias points at it");
                    } else {
                        server.delete_collection(old).await?;
                        removed = true;
                    }
                }
                swaps.push(AliasSwap {
                    alias,
                    target,
                    previous,
                    removed,
                });
            }
            Ok(swaps)
        }
        (sink, _) => Err(no_alias_for(sink)),
    }
}

/// Why `--swap-alias` cannot be used with this sink and target.
fn no_alias_for(sink: &SinkConfig) -> crate::error::Error {
    match sink {
        SinkConfig::Jsonl { .. } => crate::error::err!(Invalid,
            "--swap-alias: the jsonl sink has no aliases (it is an export, not a store readers open)"
        ),
        _ => target_mismatch(sink),
    }
}

/// The (alias, shadow collection) pairs of a server-side swap, and the server.
fn server_and_pairs(
    config: &Config,
    alias: &str,
    suffix: &str,
) -> crate::error::Result<(Vec<(String, String)>, QdrantSink)> {
    let pairs = server_aliases(&live_collections(config), alias, suffix)?;
    Ok((pairs, QdrantSink::from_config(&config.sink)?))
}

/// The distinct collection names of the mappings.
pub(super) fn live_collections(config: &Config) -> Vec<&str> {
    config
        .mappings
        .iter()
        .map(|m| m.collection.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `(alias, shadow collection)` per live collection. The alias must be the collection's
/// own name (`{collection}` stands for it): point ids derive from the name in the
/// mappings, so a processor writing through any other name would store every entity
/// under a second id.
pub(super) fn server_aliases(
    collections: &[&str],
    alias: &str,
    suffix: &str,
) -> crate::error::Result<Vec<(String, String)>> {
    if collections.len() > 1 && !alias.contains("{collection}") {
        bail!(Invalid,
            "--swap-alias: the mappings write {} collections ({}): give --swap-alias '{{collection}}' \
             to point each one's alias at its shadow collection",
            collections.len(),
            collections.join(", ")
        );
    }
    collections
        .iter()
        .map(|c| {
            let name = alias.replace("{collection}", c);
            if name != *c {
                bail!(Invalid,
                    "--swap-alias {name:?}: the alias must be the collection name of the mappings \
                     ({c:?}), which point ids derive from; a processor writing through another \
                     name would store every entity twice. Give --swap-alias {c:?} (or '{{collection}}')"
                );
            }
            Ok((name, shadow_collection(c, suffix)))
        })
        .collect()
}

/// The directory holding `path` (`.` for a bare name).
pub(super) fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The alias path must be absent or a symlink, in an existing directory, and not point at
/// the shadow directory already.
pub(super) fn check_directory_alias(alias: &Path, shadow: &Path) -> crate::error::Result<()> {
    let dir = parent_dir(alias);
    if !dir.is_dir() {
        bail!(
            Invalid,
            "--swap-alias: {} is not a directory (the alias symlink goes there)",
            dir.display()
        );
    }
    match std::fs::symlink_metadata(alias) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("--swap-alias: {}", alias.display())),
        Ok(meta) if !meta.file_type().is_symlink() => bail!(Invalid,
            "--swap-alias: {a} exists and is not a symlink; move it once (mv {a} {a}-0 && ln -s {a}-0 {a}), \
             then swap",
            a = alias.display()
        ),
        Ok(_) if same_path(alias, shadow) => bail!(Invalid,
            "--swap-alias: {} already points at {}, the live store: choose a new --target-path",
            alias.display(),
            shadow.display()
        ),
        Ok(_) => Ok(()),
    }
}

/// Point the symlink `alias` at `target` atomically: a new symlink next to it, renamed
/// over it. `rename` replaces the directory entry in one step (POSIX), so a reader
/// resolving `alias` meanwhile sees the old or the new target, never nothing. `target` is
/// stored as given (a relative one resolves against the alias's directory). Returns the
/// link's previous content; `None` when `alias` did not exist.
///
/// # Errors
/// When `alias` exists and is not a symlink, or the file system refuses.
#[cfg(unix)]
pub fn swap_symlink(alias: &Path, target: &Path) -> std::io::Result<Option<PathBuf>> {
    use std::io::{Error, ErrorKind};
    let previous = match std::fs::symlink_metadata(alias) {
        Ok(meta) if meta.file_type().is_symlink() => Some(std::fs::read_link(alias)?),
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("{} exists and is not a symlink", alias.display()),
            ))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let name = alias.file_name().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("{} has no file name", alias.display()),
        )
    })?;
    let dir = parent_dir(alias);
    let temp = dir.join(format!(
        ".{}.{}.swap",
        name.to_string_lossy(),
        Uuid::new_v4().simple()
    ));
    std::os::unix::fs::symlink(target, &temp)?;
    if let Err(e) = std::fs::rename(&temp, alias) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // Make the rename durable (best effort: not every file system syncs a directory).
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(previous)
}

/// Symlink aliases need a POSIX file system.
///
/// # Errors
/// Always.
#[cfg(not(unix))]
pub fn swap_symlink(alias: &Path, _target: &Path) -> std::io::Result<Option<PathBuf>> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{}: symlink aliases need a POSIX system", alias.display()),
    ))
}

/// The embedded swap: `alias` (a symlink path) to the shadow directory, then the old
/// target removed unless `keep_old`.
pub(super) fn swap_directory_alias(
    alias: &Path,
    shadow: &Path,
    keep_old: bool,
) -> crate::error::Result<AliasSwap> {
    let shadow = std::fs::canonicalize(shadow)
        .with_context(|| format!("--swap-alias: the shadow directory {}", shadow.display()))?;
    if !shadow.is_dir() {
        bail!(
            Invalid,
            "--swap-alias: {} is not a directory",
            shadow.display()
        );
    }
    let alias_dir = std::fs::canonicalize(parent_dir(alias))
        .with_context(|| format!("--swap-alias: the directory of {}", alias.display()))?;
    // A relative link when the shadow sits next to the alias, so both can move together.
    let link = match shadow.file_name() {
        Some(name) if shadow.parent() == Some(alias_dir.as_path()) => PathBuf::from(name),
        _ => shadow.clone(),
    };
    let previous = swap_symlink(alias, &link)
        .with_context(|| {
            format!(
                "--swap-alias: pointing {} at {}",
                alias.display(),
                shadow.display()
            )
        })?
        .map(|p| {
            if p.is_relative() {
                alias_dir.join(p)
            } else {
                p
            }
        });
    let removed = match &previous {
        Some(old) if !keep_old => remove_old_store(old, &shadow, &alias_dir)?,
        _ => false,
    };
    tracing::info!(alias = %alias.display(), target = %shadow.display(), removed, "alias swapped");
    Ok(AliasSwap {
        alias: alias.display().to_string(),
        target: shadow.display().to_string(),
        previous: previous.map(|p| p.display().to_string()),
        removed,
    })
}

/// Remove the directory the alias pointed at before; keeps it (with a warning) when it is,
/// contains or holds the new target or the alias, or is not a directory.
pub(super) fn remove_old_store(
    old: &Path,
    new: &Path,
    alias_dir: &Path,
) -> crate::error::Result<bool> {
    let Ok(old) = std::fs::canonicalize(old) else {
        tracing::warn!(previous = %old.display(), "the alias pointed at a missing directory: nothing to remove");
        return Ok(false);
    };
    if new.starts_with(&old) || alias_dir.starts_with(&old) || !old.is_dir() {
        tracing::warn!(previous = %old.display(), "previous target kept: it holds the new target or the alias, or is not a directory");
        return Ok(false);
    }
    std::fs::remove_dir_all(&old).with_context(|| {
        format!(
            "--swap-alias: removing the previous store {}",
            old.display()
        )
    })?;
    Ok(true)
}

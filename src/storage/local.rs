//! Local directory store: the embedded default, no cloud needed.
//!
//! Durability: every object is written to a temporary name in its final
//! directory, fsynced, then moved into place and the directory fsynced, so a
//! crash leaves either the whole object or none (plus, at worst, a
//! temporary file that `list_incomplete` reports). Create-only puts link the
//! temporary file to the final name, which the kernel refuses atomically
//! when the name exists: two writers can never both "create" one key.
//!
//! Ownership: the repository directory's owner and group own everything in
//! it. A strata running as root (a backup from root's crontab) gives each
//! directory and file it creates the repository directory's owner and group,
//! so the `postgres` user's `archive_command` can still write beside them
//! (`chown -R postgres: DIR` once, or `strata init --owner postgres`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Body, Capabilities, IncompleteUpload, ObjectMeta, ObjectReader, PutMode, Storage, StorageError,
    StorageResult, validate_key,
};

/// Temporary files carry this marker; `list` never shows them.
const TMP_MARK: &str = ".strata-tmp-";

#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// Whom what root creates is given to (see the module docs); read
    /// from the repository directory once.
    owner: std::sync::Arc<std::sync::OnceLock<Option<(u32, u32)>>>,
}

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> LocalStorage {
        LocalStorage {
            root: root.into(),
            owner: Default::default(),
        }
    }

    /// The repository directory's owner and group when strata runs as
    /// root and they are not root's: what new files and directories get.
    fn owner(&self) -> Option<(u32, u32)> {
        *self.owner.get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return None;
            }
            let md = fs::metadata(&self.root).ok()?;
            (md.uid() != 0 || md.gid() != 0).then_some((md.uid(), md.gid()))
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> StorageResult<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }
}

fn io_err(op: &'static str, key: &str, e: io::Error) -> StorageError {
    match e.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound { key: key.into() },
        io::ErrorKind::AlreadyExists => StorageError::AlreadyExists { key: key.into() },
        _ => StorageError::Permanent {
            op,
            key: key.into(),
            message: e.to_string(),
        },
    }
}

fn meta_of(key: String, md: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        key,
        size: md.len(),
        modified: md.modified().ok().map(DateTime::<Utc>::from),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its parents, fsyncing each new directory's parent so
/// the new entries survive a crash too; each new directory is given to
/// `owner` (see the module docs).
fn create_dirs_durable(dir: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durable(parent, owner)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Creates the temporary file of a put, owned by `owner` when given.
fn create_tmp(dir: &Path, tmp: &Path, owner: Option<(u32, u32)>) -> io::Result<fs::File> {
    create_dirs_durable(dir, owner)?;
    let file = match fs::File::create(tmp) {
        // a concurrent delete removed the directory it had just
        // emptied (see `remove_empty_parents`): make it again
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dirs_durable(dir, owner)?;
            fs::File::create(tmp)
        }
        r => r,
    }?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    Ok(file)
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_create: true,
        }
    }

    async fn put(&self, key: &str, mut body: Body, mode: PutMode) -> StorageResult<ObjectMeta> {
        let path = self.path(key)?;
        let dir = path
            .parent()
            .expect("validated key has a parent")
            .to_path_buf();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = dir.join(format!(
            ".{name}{TMP_MARK}{}",
            hex::encode(rand::random::<[u8; 6]>())
        ));
        if mode == PutMode::Create && path.exists() {
            return Err(StorageError::AlreadyExists { key: key.into() });
        }
        let (dir2, tmp2, owner) = (dir.clone(), tmp.clone(), self.owner());
        let mut file = tokio::task::spawn_blocking(move || create_tmp(&dir2, &tmp2, owner))
            .await
            .expect("blocking task")
            .map_err(|e| io_err("create", key, e))?;
        crate::crashpoint::step(format_args!("put-created {key}"));

        // Chunks are written on a blocking thread one at a time: the
        // bounded body channel keeps memory flat however large the object.
        let written: Result<(), StorageError> = async {
            loop {
                let chunk = match body.next_chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(source) => {
                        return Err(StorageError::Aborted {
                            key: key.into(),
                            source,
                        });
                    }
                };
                file = tokio::task::spawn_blocking(move || file.write_all(&chunk).map(|_| file))
                    .await
                    .expect("blocking task")
                    .map_err(|e| io_err("write", key, e))?;
            }
            let (p, t, d, k) = (path.clone(), tmp.clone(), dir.clone(), key.to_owned());
            tokio::task::spawn_blocking(move || -> io::Result<()> {
                file.sync_all()?;
                crate::crashpoint::step(format_args!("put-synced {k}"));
                drop(file);
                match mode {
                    PutMode::Overwrite => fs::rename(&t, &p)?,
                    PutMode::Create => {
                        // link(2) fails with EEXIST if the name exists: atomic create.
                        fs::hard_link(&t, &p)?;
                        crate::crashpoint::step(format_args!("put-linked {k}"));
                        fs::remove_file(&t)?;
                    }
                }
                crate::crashpoint::step(format_args!("put-in-place {k}"));
                fsync_dir(&d)?;
                crate::crashpoint::step(format_args!("put-dir-synced {k}"));
                Ok(())
            })
            .await
            .expect("blocking task")
            .map_err(|e| io_err("commit", key, e))
        }
        .await;
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let md = fs::metadata(&path).map_err(|e| io_err("stat", key, e))?;
        Ok(meta_of(key.into(), &md))
    }

    async fn get(&self, key: &str) -> StorageResult<ObjectReader> {
        self.get_from(key, 0).await
    }

    async fn get_from(&self, key: &str, offset: u64) -> StorageResult<ObjectReader> {
        use tokio::io::AsyncSeekExt;
        let path = self.path(key)?;
        let mut f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_err("open", key, e))?;
        if offset > 0 {
            f.seek(io::SeekFrom::Start(offset))
                .await
                .map_err(|e| io_err("seek", key, e))?;
        }
        Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 20, f)))
    }

    async fn head(&self, key: &str) -> StorageResult<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(md) if md.is_file() => Ok(Some(meta_of(key.into(), &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &walk_start(&root, &prefix), &mut |rel, md| {
                if rel.starts_with(&prefix) && !rel.contains(TMP_MARK) {
                    out.push(meta_of(rel, md));
                }
            })
            .map_err(|e| io_err("list", &prefix, e))?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .expect("blocking task")
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = self.path(key)?;
        crate::crashpoint::step(format_args!("delete {key}"));
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("delete", key, e)),
        }
        self.remove_empty_parents(&path);
        Ok(())
    }

    async fn list_incomplete(&self, prefix: &str) -> StorageResult<Vec<IncompleteUpload>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &walk_start(&root, &prefix), &mut |rel, md| {
                if let Some(pos) = rel.find(TMP_MARK) {
                    // ".name.strata-tmp-XXXX" in dir "a/b" was for key "a/b/name".
                    let (dir, file) = rel[..pos].rsplit_once('/').unwrap_or(("", &rel[..pos]));
                    let name = file.strip_prefix('.').unwrap_or(file);
                    let key = if dir.is_empty() {
                        name.to_string()
                    } else {
                        format!("{dir}/{name}")
                    };
                    if key.starts_with(&prefix) {
                        out.push(IncompleteUpload {
                            key,
                            handle: rel.clone(),
                            started: md.modified().ok().map(DateTime::<Utc>::from),
                        });
                    }
                }
            })
            .map_err(|e| io_err("list", &prefix, e))?;
            Ok(out)
        })
        .await
        .expect("blocking task")
    }

    async fn abort_incomplete(&self, upload: &IncompleteUpload) -> StorageResult<()> {
        crate::crashpoint::step(format_args!("abort {}", upload.handle));
        if !upload.handle.contains(TMP_MARK) {
            return Err(StorageError::Permanent {
                op: "abort",
                key: upload.key.clone(),
                message: format!("{} is not a temporary file", upload.handle),
            });
        }
        let path = self.path(&upload.handle)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("abort", &upload.key, e)),
        }
        // a killed backup's directory held only this temporary file
        self.remove_empty_parents(&path);
        Ok(())
    }
}

impl LocalStorage {
    /// Removes the directories above `path` that are left empty, up to
    /// (not including) the root: deleted backups and swept temporary
    /// files leave no empty directories behind.
    fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
}

/// The deepest directory that holds every key starting with `prefix`, so a
/// listing of one backup's or one timeline's objects reads only that part.
fn walk_start(root: &Path, prefix: &str) -> PathBuf {
    match prefix.rsplit_once('/') {
        Some((dir, _)) if !dir.is_empty() => root.join(dir),
        _ => root.to_path_buf(),
    }
}

/// Visits every regular file below `dir`, with its key relative to `root`.
fn walk(root: &Path, dir: &Path, f: &mut dyn FnMut(String, &fs::Metadata)) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // deleted since read_dir saw it (another process's delete, a
        // finished temporary file): not part of the listing
        let md = match entry.metadata() {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let path = entry.path();
        if md.is_dir() {
            walk(root, &path, f)?;
        } else if md.is_file() {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            f(rel, &md);
        }
    }
    Ok(())
}

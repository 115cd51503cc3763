//! Real storage faults for the store tests: a small tmpfs that can be
//! filled and freed, and a PostgreSQL database of a test's own, placed on
//! such a tmpfs (a tablespace) or shut out for a while.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size mounted on a fresh directory for the guard's
/// life: a real filesystem that really fills. Unmounted on drop, panics
/// included (lazily if something still holds a file in it).
#[derive(Debug)]
pub struct Tmpfs {
    /// Holds the mount point; removed after the unmount.
    _parent: tempfile::TempDir,
    root: PathBuf,
    filler: Option<PathBuf>,
}

impl Tmpfs {
    /// Mounts `size` (as `mount -o size=` takes it, e.g. `16m`) with extra
    /// `options`; why not, when it cannot (not root).
    pub fn mount(size: &str, options: &str) -> Result<Self, String> {
        Self::mount_at("disk", size, options)
    }

    /// [`Tmpfs::mount`] at `relative` (directories made) in a temporary
    /// directory: a kubelet-shaped volume path, say.
    pub fn mount_at(relative: &str, size: &str, options: &str) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("needs root (mounts a tmpfs to fill)".into());
        }
        let parent = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
        // Traversable by other users (PostgreSQL's server runs as its own).
        std::fs::set_permissions(parent.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| format!("chmod {}: {e}", parent.path().display()))?;
        let root = parent.path().join(relative);
        std::fs::create_dir_all(&root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        let mut all = format!("size={size}");
        if !options.is_empty() {
            all = format!("{all},{options}");
        }
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &all, "tmpfs"])
            .arg(&root)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self {
            _parent: parent,
            root,
            filler: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Fills the filesystem to the last block with a file of its own.
    pub fn fill(&mut self) {
        let path = self.root.join("filler");
        let mut file = std::fs::File::create(&path).expect("create the filler");
        // Big writes, then page-sized ones for the last pages.
        for chunk in [1 << 20, 4096] {
            let block = vec![0xa5u8; chunk];
            while file.write_all(&block).is_ok() {}
        }
        drop(file);
        self.filler = Some(path);
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&mut self) {
        if let Some(path) = self.filler.take() {
            std::fs::remove_file(&path).expect("remove the filler");
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.root)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a process we started is still closing): detach it
            // now, the kernel frees it when the last file closes.
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

/// Skips the calling test, saying why, when a tmpfs cannot be mounted.
#[macro_export]
macro_rules! tmpfs_or_skip {
    ($size:expr) => {
        $crate::tmpfs_or_skip!($size, "")
    };
    ($size:expr, $options:expr) => {
        match $crate::faults::Tmpfs::mount($size, $options) {
            Ok(disk) => disk,
            Err(reason) => {
                eprintln!("SKIPPED {}: {reason}", module_path!());
                return;
            }
        }
    };
}

/// The PostgreSQL server for tests: `OOMLENS_TEST_POSTGRES`, or the one
/// `.ci/run` creates. None (with the reason printed) when unreachable,
/// unless `OOMLENS_REQUIRE_POSTGRES=1` (CI), which makes that a failure.
pub async fn postgres_url(test: &str) -> Option<String> {
    use sqlx::Connection as _;
    let url = std::env::var("OOMLENS_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://oomlens:oomlens@127.0.0.1:5432/oomlens_test".to_owned());
    let attempt = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sqlx::postgres::PgConnection::connect(&url),
    )
    .await
    .unwrap_or(Err(sqlx::Error::PoolTimedOut));
    match attempt {
        Ok(connection) => {
            let _ = connection.close().await;
            Some(url)
        }
        Err(error) => {
            assert!(
                !postgres_required(),
                "{test}: PostgreSQL required but unreachable at {url}: {error}"
            );
            eprintln!("SKIPPED {test}: no PostgreSQL at {url} ({error}); .ci/run starts one");
            None
        }
    }
}

/// `OOMLENS_REQUIRE_POSTGRES=1`: what needs PostgreSQL fails rather than skips.
pub fn postgres_required() -> bool {
    std::env::var("OOMLENS_REQUIRE_POSTGRES").as_deref() == Ok("1")
}

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    match url.rfind('/') {
        Some(slash) => format!("{}/{database}", &url[..slash]),
        None => panic!("database URL without a database: {url}"),
    }
}

/// Runs `sql` as the server's superuser through `psql` on its Unix
/// socket (`runuser -u postgres`): only for a server on this machine.
pub fn superuser_sql(sql: &str) -> Result<String, String> {
    let out = Command::new("runuser")
        .args([
            "-u",
            "postgres",
            "--",
            "psql",
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-d", "postgres", "-c", sql])
        .output()
        .map_err(|e| format!("runuser psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

/// A database of a test's own in a tablespace on a small tmpfs: the
/// server's real "no space left on device" for that database alone (its
/// write-ahead log stays where it was, so the server itself keeps
/// running). Dropped with the tablespace and the tmpfs.
#[derive(Debug)]
pub struct FullablePostgres {
    pub url: String,
    pub disk: Tmpfs,
    database: String,
    tablespace: String,
}

impl FullablePostgres {
    /// Needs root, the server on this machine, and `runuser`; why not
    /// otherwise.
    pub fn create(server_url: &str, name: &str, size: &str) -> Result<Self, String> {
        let database = format!("oomlens_t_{name}");
        let tablespace = format!("oomlens_ts_{name}");
        let uid = match nix::unistd::User::from_name("postgres") {
            Ok(Some(user)) => user.uid,
            _ => return Err("no postgres user on this machine".into()),
        };
        superuser_sql("SELECT 1").map_err(|e| format!("no superuser access to a local PostgreSQL: {e}"))?;
        // A run killed half-way leaves these behind.
        superuser_sql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))?;
        superuser_sql(&format!("DROP TABLESPACE IF EXISTS {tablespace}"))?;
        let disk = Tmpfs::mount(size, &format!("uid={uid},mode=0700"))?;
        let location = disk.path().display().to_string();
        superuser_sql(&format!(
            "CREATE TABLESPACE {tablespace} OWNER oomlens LOCATION '{location}'"
        ))?;
        // The whole database there: catalogs and events alike.
        superuser_sql(&format!(
            "CREATE DATABASE {database} OWNER oomlens TABLESPACE {tablespace}"
        ))?;
        Ok(Self {
            url: with_database(server_url, &database),
            disk,
            database,
            tablespace,
        })
    }
}

impl Drop for FullablePostgres {
    fn drop(&mut self) {
        self.disk.free();
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database),
            format!("DROP TABLESPACE IF EXISTS {}", self.tablespace),
        ] {
            if let Err(error) = superuser_sql(&sql) {
                eprintln!("cleanup: {sql}: {error}");
            }
        }
    }
}

/// A fresh database of a test's own, owned by the test role: dropped and
/// created afresh; returns its URL.
pub async fn fresh_database(url: &str, name: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.expect("connect to PostgreSQL");
    let database = format!("oomlens_t_{name}");
    for sql in [
        format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"),
        format!("CREATE DATABASE {database}"),
    ] {
        sqlx::raw_sql(&sql)
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;
    with_database(url, &database)
}

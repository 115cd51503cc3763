//! A small tmpfs of our own (root only): a real filesystem that fills up,
//! or is read-only, for the tests of full and unwritable disks.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh temporary directory; unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts `size` (as `mount -o size=`, e.g. `1m`) with extra `options`
    /// (e.g. `ro`).
    pub fn mount(size: &str, options: &str) -> Self {
        let dir = tempfile::tempdir().expect("mount point");
        let mut all = format!("size={size},mode=0700");
        if !options.is_empty() {
            all = format!("{all},{options}");
        }
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &all, "oomlens-test"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs -o {all}: {status}");
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Remounts with `options` (`ro`, `rw`).
    pub fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount {options}: {status}");
    }

    /// Writes a file until the filesystem is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let block = vec![0xa5u8; 4096];
        loop {
            match file.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) if error.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(error) => panic!("filling {}: {error}", path.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

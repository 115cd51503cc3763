//! A small VM under QEMU's software emulation, for what the host cannot
//! give: cgroup v2 with the memory controller, and whole-node OOMs.
//!
//! The guest kernel comes from Debian's `linux-image-6.1.0-*-amd64`
//! package (downloaded and unpacked, not installed); the initramfs holds
//! busybox, the binaries under test with their libraries, and a shell
//! `/init` that runs the scenarios and prints results between marker lines
//! on the serial console. Everything is cached under the target directory.
//! Facts behind the choices: ../shared/DESIGN.md ("Real cgroup v2 and
//! whole-node OOMs in a VM"); notably `-accel tcg` (KVM here hangs).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Why the VM cannot run here, if it cannot.
pub fn vm_unavailable() -> Option<String> {
    for (tool, package) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("dpkg", "dpkg"),
    ] {
        if !on_path(tool) {
            return Some(format!(
                "needs {tool} (Debian package {package}; .ci/run installs it)"
            ));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Some(
            "needs a static /bin/busybox (Debian package busybox-static; .ci/run installs it)".into(),
        );
    }
    None
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn run(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The guest kernel: the newest `linux-image-6.1.0-N-amd64` Debian offers,
/// unpacked once into `cache`.
pub fn kernel(cache: &Path) -> Result<PathBuf, String> {
    let vmlinuz = cache.join("vmlinuz");
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let search = run(
        Command::new("apt-cache").args(["search", "--names-only", r"^linux-image-6\.1\.0-[0-9]+-amd64$"]),
        "apt-cache search",
    )?;
    let package = search
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .max_by_key(|name| {
            name.split('-')
                .nth(4)
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(0)
        })
        .ok_or("no linux-image-6.1.0-*-amd64 package in the apt index")?
        .to_owned();
    run(
        Command::new("apt-get")
            .args(["download", "-q", &package])
            .current_dir(cache),
        "apt-get download",
    )?;
    let deb = std::fs::read_dir(cache)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&package))
        })
        .ok_or("the downloaded kernel package is missing")?;
    let unpacked = cache.join("unpacked");
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked), "dpkg -x")?;
    let image = std::fs::read_dir(unpacked.join("boot"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .ok_or("no vmlinuz in the kernel package")?;
    std::fs::copy(&image, &vmlinuz).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&unpacked);
    let _ = std::fs::remove_file(&deb);
    Ok(vmlinuz)
}

/// Copies `binary` (stripped) to `/NAME` in `root`, with the shared
/// libraries and loader `ldd` lists at their own paths.
fn add_binary(root: &Path, binary: &Path) -> Result<(), String> {
    let name = binary.file_name().ok_or("binary without a name")?;
    let target = root.join(name);
    std::fs::copy(binary, &target).map_err(|e| format!("{}: {e}", binary.display()))?;
    run(Command::new("strip").arg(&target), "strip")?;
    let ldd = run(Command::new("ldd").arg(binary), "ldd")?;
    for line in ldd.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`
        let path = line
            .split("=>")
            .last()
            .and_then(|rest| rest.split_whitespace().next());
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            let inside = root.join(path.trim_start_matches('/'));
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::copy(path, &inside).map_err(|e| format!("{path}: {e}"))?;
        }
    }
    Ok(())
}

/// Builds a gzip cpio initramfs at `out` with busybox, `binaries` and the
/// `init` script.
pub fn initramfs(out: &Path, binaries: &[&Path], init: &str) -> Result<(), String> {
    let staging = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = staging.path();
    for dir in ["bin", "sbin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(|e| format!("/bin/busybox: {e}"))?;
    for binary in binaries {
        add_binary(root, binary)?;
    }
    let init_path = root.join("init");
    std::fs::write(&init_path, init).map_err(|e| e.to_string())?;
    run(Command::new("chmod").arg("755").arg(&init_path), "chmod")?;
    let archive = format!("find . | cpio -o -H newc --quiet | gzip -1 > '{}'", out.display());
    run(
        Command::new("sh").arg("-c").arg(archive).current_dir(root),
        "cpio",
    )?;
    Ok(())
}

/// Boots `kernel` with `initramfs` and returns the serial console's text.
/// QEMU is killed if it runs past `timeout`.
pub fn boot(kernel: &Path, initramfs: &Path, memory_mib: u32, timeout: Duration) -> Result<String, String> {
    let serial = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-m",
            &memory_mib.to_string(),
            "-smp",
            "1",
            "-no-reboot",
            "-display",
            "none",
        ])
        .args(["-nodefaults", "-cpu", "max"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 quiet loglevel=1 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.path().display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = qemu.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = qemu.kill();
            let _ = qemu.wait();
            let console = std::fs::read_to_string(serial.path()).unwrap_or_default();
            return Err(format!(
                "the VM did not finish within {timeout:?}; console so far:\n{console}"
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let console = std::fs::read_to_string(serial.path()).map_err(|e| e.to_string())?;
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = qemu.stderr.take() {
            use std::io::Read as _;
            let _ = pipe.read_to_string(&mut stderr);
        }
        return Err(format!(
            "qemu exited with {status}: {stderr}\nconsole:\n{console}"
        ));
    }
    Ok(console)
}

/// The lines between `BEGIN` and `END` marker lines of the console.
pub fn section<'a>(console: &'a str, name: &str) -> Vec<&'a str> {
    let begin = format!("OOMLENS-{name}-BEGIN");
    let end = format!("OOMLENS-{name}-END");
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .skip_while(|l| *l != begin)
        .skip(1)
        .take_while(|l| *l != end)
        .collect()
}

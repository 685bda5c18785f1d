//! A throwaway Debian 12 root for installing the packages for real: a copy of the minimal root
//! that `scripts/setup_packaging.sh --debian-root` made with debootstrap, with `/proc` mounted,
//! where `apt-get install ./PKG.deb` runs the maintainer scripts and the installed programs run
//! as the packages' users, without changing this machine. Needs root (chroot, mount), as the
//! test command runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{cache_dir, Process};

/// A copy of the base root, unmounted and deleted when dropped.
pub struct DebianRoot {
    dir: tempfile::TempDir,
}

impl DebianRoot {
    /// Copies the base root made by the set-up into a fresh temporary folder (and mounts /proc).
    pub fn copy_of_base() -> DebianRoot {
        let base = cache_dir().join("debian-root/bookworm");
        assert!(
            base.join("usr/bin/apt-get").is_file(),
            "{} is missing: run scripts/setup_packaging.sh --debian-root (the test command does)",
            base.display()
        );
        let dir = tempfile::tempdir().expect("temporary folder");
        let root = DebianRoot { dir };
        let status = Command::new("cp")
            .arg("-a")
            .arg(&base)
            .arg(root.path())
            .status()
            .expect("run cp");
        assert!(status.success(), "cannot copy {}", base.display());
        let status = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(root.path().join("proc"))
            .status()
            .expect("run mount");
        assert!(status.success(), "cannot mount /proc in the Debian root");
        root
    }

    /// The root folder, as this machine sees it.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("bookworm")
    }

    /// A path inside the root (`/var/lib/…`), as this machine sees it.
    pub fn file(&self, inside: &str) -> PathBuf {
        self.path().join(inside.trim_start_matches('/'))
    }

    /// `chroot ROOT PROGRAM ARGS` as root, with a plain environment.
    pub fn command(&self, program_and_args: &[&str]) -> Command {
        self.chroot(&[], program_and_args)
    }

    /// `chroot [OPTIONS] ROOT PROGRAM ARGS` with a plain environment.
    fn chroot(&self, options: &[&str], program_and_args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.args(options)
            .arg(self.path())
            .args(program_and_args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("HOME", "/root");
        cmd
    }

    /// Runs a command inside the root as root.
    pub fn run(&self, program_and_args: &[&str]) -> Output {
        self.command(program_and_args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run chroot {program_and_args:?}: {e}"))
    }

    /// Runs a command inside the root as root, asserts success, returns stdout and stderr.
    pub fn run_ok(&self, program_and_args: &[&str]) -> String {
        let out = self.run(program_and_args);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{program_and_args:?} failed in the Debian root ({}):\n{said}",
            out.status
        );
        said
    }

    /// `apt-get install ./PKG.deb`, as a user installs a package they downloaded: dpkg runs
    /// its maintainer scripts; dependencies come from what the root already has.
    pub fn install(&self, deb: &Path) -> String {
        let name = deb.file_name().expect("a package file").to_string_lossy();
        std::fs::copy(deb, self.file("/tmp").join(&*name)).expect("copy the package in");
        let said = self.run_ok(&[
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            &format!("/tmp/{name}"),
        ]);
        let _ = std::fs::remove_file(self.file("/tmp").join(&*name));
        said
    }

    /// The numeric id of a user of the root (from its own /etc/passwd), if it exists.
    pub fn uid(&self, user: &str) -> Option<u32> {
        let passwd = std::fs::read_to_string(self.file("/etc/passwd")).ok()?;
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&user)).then(|| fields.get(2)?.parse().ok())?
        })
    }

    /// Runs a program inside the root as `user` (its own group too) to its end.
    pub fn run_as(&self, user: &str, program_and_args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command_as(user, program_and_args, env)
            .output()
            .unwrap_or_else(|e| panic!("cannot run chroot {program_and_args:?} as {user}: {e}"))
    }

    fn command_as(&self, user: &str, program_and_args: &[&str], env: &[(&str, &str)]) -> Command {
        let userspec = format!("--userspec={user}:{user}");
        let mut cmd = self.chroot(&[&userspec, "--groups="], program_and_args);
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Starts a program inside the root as `user` (its own group too), as a unit's `User=` and
    /// `Group=` would; stderr goes to `log`, stdout is piped.
    pub fn spawn_as(
        &self,
        user: &str,
        program_and_args: &[&str],
        env: &[(&str, &str)],
        log: &Path,
    ) -> Process {
        let mut cmd = self.command_as(user, program_and_args, env);
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log file"));
        Process {
            child: cmd.spawn().expect("start a program in the Debian root"),
            log: log.to_path_buf(),
        }
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        // Lazily: a process still dying may hold it for a moment.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.path().join("proc"))
            .status();
    }
}

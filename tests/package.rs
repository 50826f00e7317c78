//! The Debian package (README: Running it as a service): `cargo deb` builds it from the
//! one release build, and what it holds is checked with `dpkg-deb`: the binary, the
//! unit, the example schedules (every job disabled), the `chime` system user through
//! sysusers.d, and maintainer scripts that create the user but enable nothing.
//!
//! Needs `cargo-deb` (`cargo install cargo-deb --locked`, as `.ci/run` does) and
//! `dpkg-deb`; without them the test says so on stderr and passes as skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn cargo() -> Command {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(root());
    command
}

fn succeeds(output: std::io::Result<Output>) -> bool {
    output.is_ok_and(|out| out.status.success())
}

/// Runs a command that must succeed; returns its stdout.
#[track_caller]
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} did not start: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skip(why: &str) {
    // Straight to stderr, past the harness's capture, so the skip is seen.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED tests/package.rs: {why}\n").as_bytes(),
    );
}

/// Builds the package into `out` and returns its path, or `None` (skipped).
fn build_package(out: &Path) -> Option<PathBuf> {
    if !succeeds(cargo().args(["deb", "--version"]).output()) {
        skip("cargo-deb is not installed (`cargo install cargo-deb --locked`)");
        return None;
    }
    if !succeeds(Command::new("dpkg-deb").arg("--version").output()) {
        skip("dpkg-deb is not installed (Debian's dpkg package)");
        return None;
    }
    // A no-op when the release build is fresh (`.ci/run` makes it before the tests);
    // otherwise it brings it up to date, so the package never holds a stale binary.
    run(cargo().args(["build", "--release", "--locked"]));
    run(cargo().args(["deb", "--no-build", "--output"]).arg(out));
    std::fs::read_dir(out)
        .expect("cargo deb's output directory")
        .filter_map(|entry| Some(entry.ok()?.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .or_else(|| panic!("no .deb in {}", out.display()))
}

#[test]
fn the_debian_package_holds_the_service_and_enables_nothing() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let Some(deb) = build_package(tmp.path()) else {
        return;
    };
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("chime_{}", env!("CARGO_PKG_VERSION"))),
        "{name}"
    );

    let info = run(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for field in [
        "Package: chime",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Section: admin",
        "Depends: ",
        "Maintainer: ",
        "Description: ",
    ] {
        assert!(
            info.lines()
                .any(|line| line.trim_start().starts_with(field)),
            "no `{field}` in dpkg-deb --info:\n{info}"
        );
    }
    assert!(info.contains(" postinst"), "no postinst:\n{info}");
    let depends = info
        .lines()
        .find(|line| line.trim_start().starts_with("Depends: "))
        .unwrap_or_default();
    assert!(
        depends.contains("libc6") && depends.contains("systemd"),
        "{depends}"
    );

    let contents = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let entry = |path: &str| -> Option<&str> {
        contents
            .lines()
            .find(|line| line.ends_with(&format!(" .{path}")))
    };
    let binary = entry("/usr/bin/chime").unwrap_or_else(|| panic!("no binary:\n{contents}"));
    let owned_by_root = |line: &str| line.contains(" root/root ") || line.contains(" 0/0 ");
    assert!(
        binary.starts_with("-rwxr-xr-x") && owned_by_root(binary),
        "{binary}"
    );
    for path in [
        "/etc/chime/schedules.d/example.yaml",
        "/usr/lib/sysusers.d/chime.conf",
        "/usr/share/doc/chime/README.md",
    ] {
        let line = entry(path).unwrap_or_else(|| panic!("no {path}:\n{contents}"));
        assert!(
            line.starts_with("-rw-r--r--") && owned_by_root(line),
            "{line}"
        );
    }
    assert!(
        entry("/lib/systemd/system/chime.service")
            .or(entry("/usr/lib/systemd/system/chime.service"))
            .is_some(),
        "no unit:\n{contents}"
    );

    // What it installs, unpacked into a temp dir and used from there.
    let unpacked = tmp.path().join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    let unit_path = ["lib", "usr/lib"]
        .iter()
        .map(|dir| unpacked.join(dir).join("systemd/system/chime.service"))
        .find(|path| path.exists())
        .expect("the unit, unpacked");
    let unit = std::fs::read_to_string(unit_path).expect("the unit");
    assert_eq!(
        unit,
        std::fs::read_to_string(root().join("systemd/chime.service")).unwrap(),
        "the packaged unit is systemd/chime.service"
    );
    // The example ships with every job disabled: installing runs nothing.
    let check = run(Command::new(unpacked.join("usr/bin/chime"))
        .arg("check")
        .arg(unpacked.join("etc/chime/schedules.d")));
    let rows: Vec<&str> = check
        .lines()
        .skip(1)
        .filter(|l| !l.contains(": ok"))
        .collect();
    assert!(!rows.is_empty(), "{check}");
    for row in rows {
        assert!(
            row.contains(" disabled "),
            "a job of example.yaml is enabled: {row}"
        );
    }
    // The sysusers.d file makes the `chime` user (applied to a scratch root here).
    if succeeds(Command::new("systemd-sysusers").arg("--version").output()) {
        let scratch = tmp.path().join("root");
        std::fs::create_dir_all(scratch.join("etc")).unwrap();
        run(Command::new("systemd-sysusers")
            .arg(format!("--root={}", scratch.display()))
            .arg(unpacked.join("usr/lib/sysusers.d/chime.conf")));
        let passwd = std::fs::read_to_string(scratch.join("etc/passwd")).unwrap_or_default();
        let user = passwd
            .lines()
            .find(|line| line.starts_with("chime:"))
            .unwrap_or_else(|| panic!("no chime user in {passwd}"));
        assert!(
            user.ends_with(":/var/lib/chime:/usr/sbin/nologin"),
            "{user}"
        );
    } else {
        skip("systemd-sysusers is absent: the sysusers.d file was not applied");
    }

    // The maintainer scripts create the user, and neither enable nor start the unit.
    let control = tmp.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("a postinst");
    assert!(
        postinst.contains("systemd-sysusers chime.conf"),
        "{postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    // Outside cargo-deb's generated blocks, no line runs anything but `set -e` (a
    // marker in a comment was once replaced too, leaving a command substitution).
    let mut generated = false;
    for line in postinst.lines() {
        if line.starts_with("# Automatically added by cargo-deb") {
            generated = true;
        } else if line.starts_with("# End automatically added section") {
            generated = false;
        } else if !generated {
            assert!(
                line.is_empty() || line.starts_with('#') || line == "set -e",
                "{line:?} in\n{postinst}"
            );
        }
    }
    for script in ["postinst", "prerm", "postrm"] {
        run(Command::new("sh").arg("-n").arg(control.join(script)));
    }
    for script in ["postinst", "prerm", "postrm", "preinst"] {
        let text = std::fs::read_to_string(control.join(script)).unwrap_or_default();
        assert!(
            !text.contains("systemctl --system enable")
                && !text.contains("deb-systemd-invoke start"),
            "{script} enables or starts the service:\n{text}"
        );
    }
}

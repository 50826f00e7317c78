//! The throwaway PostgreSQL of `scripts/test-postgres` (started by `.ci/run`), for the
//! replica tests: one database per test, queried through `psql`. Without
//! `CHIME_TEST_POSTGRES` these tests skip with a message, unless
//! `CHIME_TEST_REQUIRE_POSTGRES` is set (CI), where the skip is a failure.

use std::path::PathBuf;
use std::process::Command;

pub struct Pg {
    /// The cluster's directory (`data`, `sock`, `password`).
    pub dir: PathBuf,
    /// The server's binaries (`pg_ctl`, `psql`).
    pub bin: PathBuf,
    pub db: String,
    pub password_file: PathBuf,
}

impl Pg {
    /// A fresh database named `db` (dropped first if a former run left it), or `None`
    /// (with a message) when no test PostgreSQL is configured.
    pub fn database(db: &str) -> Option<Pg> {
        let Ok(url) = std::env::var("CHIME_TEST_POSTGRES") else {
            assert!(
                std::env::var_os("CHIME_TEST_REQUIRE_POSTGRES").is_none(),
                "CHIME_TEST_REQUIRE_POSTGRES is set but CHIME_TEST_POSTGRES is not: start one with scripts/test-postgres"
            );
            skipped(&format!(
                "{db}: no test PostgreSQL (run under `scripts/test-postgres run cargo test`, as .ci/run does)"
            ));
            return None;
        };
        let dir = PathBuf::from(
            std::env::var("CHIME_TEST_POSTGRES_DIR").expect("set with CHIME_TEST_POSTGRES"),
        );
        let bin = PathBuf::from(
            std::env::var("CHIME_TEST_POSTGRES_BIN").expect("set with CHIME_TEST_POSTGRES"),
        );
        assert!(url.ends_with("/postgres"), "{url}");
        let pg = Pg {
            password_file: dir.join("password"),
            dir,
            bin,
            db: "postgres".into(),
        };
        pg.query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        pg.query(&format!("CREATE DATABASE {db}"));
        Some(Pg {
            db: db.into(),
            ..pg
        })
    }

    /// The URL chime is given (the password is in [`Pg::password_file`]).
    pub fn url(&self) -> String {
        let sock = self.dir.join("sock");
        let host = sock.to_string_lossy().replace('/', "%2F");
        format!("postgres://chime@{host}/{}", self.db)
    }

    /// `--cluster …` arguments for a replica named `member`.
    pub fn replica_args(&self, member: &str, lease: &str, fallback: &str) -> Vec<String> {
        vec![
            "--cluster".into(),
            self.url(),
            "--cluster-password-file".into(),
            self.password_file.to_string_lossy().into_owned(),
            "--cluster-member".into(),
            member.into(),
            "--cluster-lease".into(),
            lease.into(),
            "--cluster-fallback".into(),
            fallback.into(),
        ]
    }

    /// Rows of `sql`, each a list of its columns as text.
    #[track_caller]
    pub fn query(&self, sql: &str) -> Vec<Vec<String>> {
        let password = std::fs::read_to_string(&self.password_file).expect("password file");
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-At", "-F", "|", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.join("sock"))
            .args(["-U", "chime", "-d", &self.db, "-c", sql])
            .env("PGPASSWORD", password.trim())
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect()
    }

    /// One number.
    #[track_caller]
    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql)[0][0].parse().expect("a number")
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let log = data.join("server.log");
        let mut command = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        command.arg("-D").arg(&data).arg("-l").arg(&log).args(args);
        let sock = self.dir.join("sock");
        command.arg("-o").arg(format!(
            "-k {} -c listen_addresses='' -c max_connections=200 -c fsync=off -c synchronous_commit=off",
            sock.display()
        ));
        let status = command.status().expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl {args:?}: {status}");
    }

    /// Stops the server (every database: only for tests alone in their binary).
    pub fn stop_server(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    pub fn start_server(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]);
    }
}

/// Says that a test was skipped, and why, where a plain `cargo test` shows it: libtest
/// captures what a passing test prints (`eprintln!`, and `std::io::stderr()` too), so
/// the line goes to file descriptor 2 itself.
pub fn skipped(why: &str) {
    let line = format!("SKIPPED: {why}\n");
    let mut rest = line.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes bytes of a live buffer to fd 2, which the process keeps open.
        let written = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if written <= 0 {
            return;
        }
        rest = &rest[written as usize..];
    }
}

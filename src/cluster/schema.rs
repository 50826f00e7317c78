//! chime's own schema in the cluster's database: versioned migrations, applied under an
//! advisory lock so that replicas starting together migrate once.

use tokio_postgres::Client;

/// The schema version this chime writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The lock key (an arbitrary constant: "chime" in ASCII).
const MIGRATION_LOCK: i64 = 0x63_68_69_6d_65;

/// Migration `n` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE chime_members (
        member text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        started timestamptz NOT NULL DEFAULT now(),
        heartbeat timestamptz NOT NULL DEFAULT now(),
        jobs_hash text NOT NULL DEFAULT ''
    );
    -- The clock epoch: bumped when the database's clock went back more than 3 h, so
    -- that the repeated instants can be claimed again.
    CREATE TABLE chime_epoch (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        epoch bigint NOT NULL,
        high_water timestamptz NOT NULL
    );
    INSERT INTO chime_epoch (epoch, high_water) VALUES (0, now());
    -- One row per fire claimed (and its run), or per manual / @reboot run (epoch -1).
    CREATE TABLE chime_claims (
        job text NOT NULL,
        scheduled_at timestamptz NOT NULL,
        epoch bigint NOT NULL,
        member text NOT NULL,
        def_hash text NOT NULL,
        trigger text NOT NULL,
        status text NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT now(),
        lease_until timestamptz,
        run_id text,
        started timestamptz,
        finished timestamptz,
        attempts integer,
        exit_code integer,
        signal integer,
        error text,
        duration_ms bigint,
        lateness_ms double precision,
        lost_from text,
        lost_run_id text,
        PRIMARY KEY (job, scheduled_at, epoch)
    );
    CREATE INDEX chime_claims_live ON chime_claims (job) WHERE status IN ('claimed', 'running');
    CREATE INDEX chime_claims_lease ON chime_claims (lease_until) WHERE status IN ('claimed', 'running');
    CREATE INDEX chime_claims_run ON chime_claims (run_id);
    CREATE INDEX chime_claims_started ON chime_claims (started);
    CREATE TABLE chime_paused (job text PRIMARY KEY);",
    // 1 → 2: operator controls across replicas. Who paused a job and when; a running
    // run's pid (for `chime status` on any replica); a kill asked of the run's owner
    // (by whom, when) and when the owner took the request.
    "ALTER TABLE chime_paused ADD COLUMN IF NOT EXISTS paused_at timestamptz NOT NULL DEFAULT now();
    ALTER TABLE chime_paused ADD COLUMN IF NOT EXISTS paused_by bigint;
    ALTER TABLE chime_paused ADD COLUMN IF NOT EXISTS member text;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS pid integer;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS kill_by bigint;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS kill_requested timestamptz;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS kill_acked timestamptz;",
    // 2 → 3: the run history through the state store's trait (`crate::cluster::store`):
    // what SQLite keeps of a run that the claims lacked, where it ran, and per-job facts.
    // (`IF NOT EXISTS` throughout, so that migrations of parallel branches compose.)
    "ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS http_status integer;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS pid integer;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS pid_start bigint;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS host text;
    ALTER TABLE chime_claims ADD COLUMN IF NOT EXISTS output_tail text;
    CREATE INDEX IF NOT EXISTS chime_claims_job_started ON chime_claims (job, started);
    CREATE TABLE IF NOT EXISTS chime_jobs (
        job text PRIMARY KEY,
        last_handled timestamptz,
        last_run_id text,
        failures_in_row integer NOT NULL DEFAULT 0
    );",
];

/// Why the schema cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the cluster database has chime schema version {found}, newer than this chime understands ({SCHEMA_VERSION})"
    )]
    TooNew { found: i32 },
    #[error("{0}")]
    Db(#[from] tokio_postgres::Error),
}

/// Brings the schema to [`SCHEMA_VERSION`]; returns the version found before.
pub async fn migrate(client: &mut Client) -> Result<i32, SchemaError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS chime_schema (version integer NOT NULL)")
        .await?;
    let found: i32 = match tx
        .query_opt("SELECT version FROM chime_schema", &[])
        .await?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO chime_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    if found > SCHEMA_VERSION {
        return Err(SchemaError::TooNew { found });
    }
    for migration in &MIGRATIONS[found as usize..] {
        tx.batch_execute(migration).await?;
    }
    tx.execute("UPDATE chime_schema SET version = $1", &[&SCHEMA_VERSION])
        .await?;
    tx.commit().await?;
    Ok(found)
}

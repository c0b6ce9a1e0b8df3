//! The schema's history, applied in order at open (`PRAGMA user_version` counts how far).

/// Each entry moves the schema one version forward. Never edit a released entry; add one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the journal and per-service state.
    "CREATE TABLE deploys (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        environment TEXT NOT NULL,
        trigger TEXT NOT NULL,
        target TEXT NOT NULL,
        from_image TEXT,
        from_digest TEXT,
        to_image TEXT,
        to_tag TEXT,
        to_digest TEXT,
        outcome TEXT NOT NULL,
        step TEXT,
        error TEXT,
        old_container TEXT,
        new_container TEXT,
        pid INTEGER,
        started_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX deploys_by_service ON deploys (service, id);
    CREATE INDEX deploys_running ON deploys (outcome) WHERE outcome = 'running';
    CREATE TABLE deploy_steps (
        deploy_id INTEGER NOT NULL REFERENCES deploys (id),
        step TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        ok INTEGER NOT NULL,
        detail TEXT,
        PRIMARY KEY (deploy_id, step)
    );
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        image TEXT NOT NULL,
        tag TEXT,
        digest TEXT NOT NULL,
        previous_image TEXT,
        previous_tag TEXT,
        previous_digest TEXT,
        deployed_at INTEGER NOT NULL,
        deploy_id INTEGER
    );",
    // 2: time each step spent waiting on the outside world and on the Docker engine
    // (see rollout::Clocks).
    "ALTER TABLE deploy_steps ADD COLUMN waited_ms INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE deploy_steps ADD COLUMN engine_ms INTEGER NOT NULL DEFAULT 0;",
    // 3: webhook deliveries seen (deduplication) and triggers waiting for their service.
    "CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        event TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        outcome TEXT
    );
    CREATE INDEX deliveries_by_age ON deliveries (received_at);
    CREATE TABLE pending (
        service TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        trigger TEXT NOT NULL,
        expect_tag TEXT,
        expect_digest TEXT,
        queued_at INTEGER NOT NULL
    );",
    // 4: the GitHub deployment reporting what each service runs (to mark it inactive
    // when it is replaced).
    "CREATE TABLE github_deployments (
        service TEXT PRIMARY KEY,
        deployment_id INTEGER NOT NULL
    );",
    // 5: deliveries become an append-only log. Deduplication happens in memory
    // (deliveries.rs), so the table needs no unique index on the id, and each unique-index
    // insert of a random GitHub GUID cost about 20 µs once the table held a few hundred
    // thousand ids (a batch of 1500 held the write lock for 30 ms); an append costs about
    // 1 µs. What became of a delivery that was acted on moves to its own small table.
    "CREATE TABLE delivery_log (
        id TEXT NOT NULL,
        event TEXT NOT NULL,
        received_at INTEGER NOT NULL
    );
    INSERT INTO delivery_log (id, event, received_at)
        SELECT id, event, received_at FROM deliveries ORDER BY received_at;
    CREATE TABLE delivery_outcomes (
        id TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        decided_at INTEGER NOT NULL
    );
    -- The arrival time stands in for when an old outcome was decided.
    INSERT INTO delivery_outcomes (id, outcome, decided_at)
        SELECT id, outcome, received_at FROM deliveries WHERE outcome IS NOT NULL;
    CREATE INDEX delivery_outcomes_by_age ON delivery_outcomes (decided_at);
    DROP TABLE deliveries;
    ALTER TABLE delivery_log RENAME TO deliveries;
    CREATE INDEX deliveries_by_age ON deliveries (received_at);",
    // 6: automation's restraint (serve::automation): a digest held back after it failed
    // by its own fault, automation paused by an operator (with the digest automation was
    // heading for at the time, to see the track move on), and a note on journal entries
    // (what a rollout did to automation; why automation was paused or resumed). An explicit
    // `hoist pause` lasts until `hoist resume` (until_resumed).
    "CREATE TABLE holds (
        service TEXT PRIMARY KEY,
        digest TEXT NOT NULL,
        step TEXT,
        reason TEXT NOT NULL,
        since INTEGER NOT NULL,
        deploy_id INTEGER
    );
    CREATE TABLE pauses (
        service TEXT PRIMARY KEY,
        paused_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        since INTEGER NOT NULL,
        track_digest TEXT,
        until_resumed INTEGER NOT NULL DEFAULT 0
    );
    ALTER TABLE deploys ADD COLUMN note TEXT;",
    // 7: deliveries keyed as GitHub means them, by (X-GitHub-Hook-ID, X-GitHub-Delivery):
    // one event reaches every hook with the same delivery id, and a redelivery keeps it.
    // What a delivery's work came to moves to `delivery_results`, with whether it
    // succeeded (a redelivery of one that failed is processed again). The hooks seen
    // delivering each repository are remembered for the sweep of missed deliveries, a
    // pending trigger keeps its delivery (to report what it came to after a restart), and
    // `readiness` is the row `/readyz` writes to prove the state can be written.
    "ALTER TABLE deliveries ADD COLUMN hook TEXT NOT NULL DEFAULT '';
    CREATE TABLE delivery_results (
        hook TEXT NOT NULL,
        id TEXT NOT NULL,
        ok INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        decided_at INTEGER NOT NULL,
        PRIMARY KEY (hook, id)
    );
    -- Nobody could redeliver these before: they count as settled.
    INSERT INTO delivery_results (hook, id, ok, outcome, decided_at)
        SELECT '', id, 1, outcome, decided_at FROM delivery_outcomes;
    DROP TABLE delivery_outcomes;
    CREATE INDEX delivery_results_by_age ON delivery_results (decided_at);
    CREATE TABLE github_hooks (
        repository TEXT NOT NULL,
        hook_id INTEGER NOT NULL,
        seen_at INTEGER NOT NULL,
        PRIMARY KEY (repository, hook_id)
    );
    ALTER TABLE pending ADD COLUMN delivery_hook TEXT;
    ALTER TABLE pending ADD COLUMN delivery_id TEXT;
    CREATE TABLE readiness (
        id INTEGER PRIMARY KEY,
        checked_at INTEGER NOT NULL
    );",
];

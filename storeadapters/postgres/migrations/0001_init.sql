-- fwupgrader PostgreSQL store, migration 1: the whole schema.
--
-- {{schema}} stands for the store's schema, as a quoted identifier (for
-- example "fwupgrader"); Store.Migrate substitutes it before running the
-- file. A host applying the migrations with its own tool substitutes it the
-- same way, creates the schema first, and applies the files in name order.
--
-- IDs are text in the "C" collation so that the database orders them byte
-- by byte, as Go's string comparison does (listings are in ascending ID
-- order, with keyset pagination). Timestamps are timestamptz; the store
-- writes them truncated to the microsecond. A zero Go time is NULL.

CREATE TABLE {{schema}}.categories (
    id           text COLLATE "C" PRIMARY KEY,
    organization text COLLATE "C" NOT NULL,
    name         text NOT NULL,
    description  text NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CONSTRAINT categories_organization_name_key UNIQUE (organization, name),
    -- The target of builds' (category_id, organization) foreign key.
    CONSTRAINT categories_id_organization_key UNIQUE (id, organization)
);

CREATE TABLE {{schema}}.builds (
    id            text COLLATE "C" PRIMARY KEY,
    category_id   text COLLATE "C" NOT NULL,
    organization  text COLLATE "C" NOT NULL,
    version       text NOT NULL,
    os_identifier text NOT NULL,
    changelog     text NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT builds_category_version_key UNIQUE (category_id, version),
    CONSTRAINT builds_id_organization_key UNIQUE (id, organization),
    -- A build's organization is its category's.
    CONSTRAINT builds_category_fkey FOREIGN KEY (category_id, organization)
        REFERENCES {{schema}}.categories (id, organization)
);
-- A non-empty OS identifier is unique per organization.
CREATE UNIQUE INDEX builds_organization_os_identifier_key
    ON {{schema}}.builds (organization, os_identifier) WHERE os_identifier <> '';
CREATE INDEX builds_organization ON {{schema}}.builds (organization, id);

CREATE TABLE {{schema}}.images (
    id           text COLLATE "C" PRIMARY KEY,
    build_id     text COLLATE "C" NOT NULL,
    organization text COLLATE "C" NOT NULL,
    type         text NOT NULL,
    name         text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    boards       text[] NOT NULL,
    created_at   timestamptz NOT NULL,
    CONSTRAINT images_build_type_key UNIQUE (build_id, type),
    -- An image's organization is its build's.
    CONSTRAINT images_build_fkey FOREIGN KEY (build_id, organization)
        REFERENCES {{schema}}.builds (id, organization)
);
CREATE INDEX images_organization ON {{schema}}.images (organization, id);

CREATE TABLE {{schema}}.devices (
    id            text COLLATE "C" PRIMARY KEY,
    organization  text COLLATE "C" NOT NULL,
    name          text NOT NULL,
    group_name    text NOT NULL,
    location      text NOT NULL,
    model         text NOT NULL,
    board_name    text NOT NULL,
    os_identifier text NOT NULL,
    connection    text NOT NULL,
    address       text NOT NULL,
    active        boolean NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX devices_organization ON {{schema}}.devices (organization, id);
CREATE INDEX devices_group ON {{schema}}.devices (group_name, id);
CREATE INDEX devices_location ON {{schema}}.devices (location, id);

CREATE TABLE {{schema}}.device_firmware (
    device_id  text COLLATE "C" PRIMARY KEY REFERENCES {{schema}}.devices (id),
    image_id   text COLLATE "C" NOT NULL REFERENCES {{schema}}.images (id),
    installed  boolean NOT NULL,
    updated_at timestamptz NOT NULL
);

-- A batch and its rollout, as real columns. Durations are nanoseconds (Go's
-- time.Duration); Rollout.Waves is two arrays of the same length (each entry
-- a count or a percentage, the other 0); Rollout.Windows three (start and
-- end in seconds after midnight, time zone name).
CREATE TABLE {{schema}}.batches (
    id                text COLLATE "C" PRIMARY KEY,
    organization      text COLLATE "C" NOT NULL,
    build_id          text COLLATE "C" NOT NULL REFERENCES {{schema}}.builds (id),
    name              text NOT NULL,
    state             text NOT NULL
        CHECK (state IN ('idle', 'in-progress', 'paused', 'success', 'failed', 'cancelled')),
    options           json CHECK (options IS NULL OR json_typeof(options) = 'object'),
    -- Rollout
    max_concurrent    integer NOT NULL CHECK (max_concurrent >= 0),
    start_rate_count  integer NOT NULL CHECK (start_rate_count >= 0),
    start_rate_per_ns bigint NOT NULL CHECK (start_rate_per_ns >= 0),
    wave_counts       integer[] NOT NULL,
    wave_percents     double precision[] NOT NULL,
    wave_wait_ns      bigint NOT NULL CHECK (wave_wait_ns >= 0),
    failure_threshold double precision CHECK (failure_threshold BETWEEN 0 AND 100),
    min_finished      integer NOT NULL CHECK (min_finished >= 0),
    success_threshold double precision CHECK (success_threshold BETWEEN 0 AND 100),
    group_limit       integer NOT NULL CHECK (group_limit >= 0),
    group_by          text NOT NULL CHECK (group_by IN ('', 'location', 'group')),
    start_at          timestamptz,
    window_starts     integer[] NOT NULL,
    window_ends       integer[] NOT NULL,
    window_zones      text[] NOT NULL,
    -- Kept by the store
    wave_count        integer NOT NULL CHECK (wave_count >= 1),
    wave              integer NOT NULL CHECK (wave >= 0 AND wave < wave_count),
    wave_settled_at   timestamptz,
    pause_reason      text NOT NULL
        CHECK (pause_reason IN ('', 'operator', 'failure-threshold', 'success-threshold')),
    cancel_requested  boolean NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    CHECK (cardinality(wave_counts) = cardinality(wave_percents)),
    CHECK (cardinality(window_starts) = cardinality(window_ends)
       AND cardinality(window_starts) = cardinality(window_zones)),
    CHECK ((group_limit = 0) = (group_by = '')),
    CHECK (state = 'paused' OR pause_reason = '')
);
CREATE INDEX batches_live ON {{schema}}.batches (id)
    WHERE state IN ('idle', 'in-progress', 'paused');
CREATE INDEX batches_organization ON {{schema}}.batches (organization, id);
CREATE INDEX batches_build ON {{schema}}.batches (build_id, id);

-- The tally of each wave of a batch (store.WaveTally): its size and how many
-- of its operations are in each state. Batch.Counts is their sum. Written
-- under the batch row's lock, in the transaction that changes an operation.
CREATE TABLE {{schema}}.batch_waves (
    batch_id    text COLLATE "C" NOT NULL REFERENCES {{schema}}.batches (id),
    wave        integer NOT NULL CHECK (wave >= 0),
    size        integer NOT NULL,
    pending     integer NOT NULL CHECK (pending >= 0),
    in_progress integer NOT NULL CHECK (in_progress >= 0),
    success     integer NOT NULL CHECK (success >= 0),
    failed      integer NOT NULL CHECK (failed >= 0),
    aborted     integer NOT NULL CHECK (aborted >= 0),
    cancelled   integer NOT NULL CHECK (cancelled >= 0),
    waiting     integer NOT NULL CHECK (waiting >= 0 AND waiting <= pending),
    PRIMARY KEY (batch_id, wave),
    CHECK (size = pending + in_progress + success + failed + aborted + cancelled)
);

CREATE TABLE {{schema}}.operations (
    id               text COLLATE "C" PRIMARY KEY,
    organization     text COLLATE "C" NOT NULL,
    device_id        text COLLATE "C" NOT NULL REFERENCES {{schema}}.devices (id),
    image_id         text COLLATE "C" NOT NULL REFERENCES {{schema}}.images (id),
    batch_id         text COLLATE "C" REFERENCES {{schema}}.batches (id),
    wave             integer NOT NULL CHECK (wave >= 0),
    state            text NOT NULL
        CHECK (state IN ('pending', 'in-progress', 'success', 'failed', 'aborted', 'cancelled')),
    phase            text NOT NULL,
    -- Whether phase is at or after the point of no return (flashing), as
    -- status.Phase.AfterPointOfNoReturn says: written by the store with
    -- phase, so that the claim indexes need no list of phases.
    after_flash      boolean NOT NULL,
    progress         integer NOT NULL CHECK (progress BETWEEN 0 AND 100),
    reason           text NOT NULL,
    options          json CHECK (options IS NULL OR json_typeof(options) = 'object'),
    attempt          integer NOT NULL CHECK (attempt >= 0),
    next_attempt_at  timestamptz,
    deadline         timestamptz,
    token            bigint NOT NULL CHECK (token >= 0),
    lease_owner      text COLLATE "C" NOT NULL,
    lease_expires_at timestamptz,
    -- The operation's last claim, made before flashing, is a start in flight
    -- of its batch (Rollout.StartRate) until its attempt reaches the device
    -- (store.Contacted), is released, or ends; it counts while its lease
    -- lives.
    start_in_flight  boolean NOT NULL,
    version          bigint NOT NULL CHECK (version >= 1),
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    -- A pending operation has no phase; a terminal one has no lease and an
    -- end; a claimed one has an owner and a token, an unclaimed one neither.
    CHECK (state <> 'pending' OR (phase = '' AND NOT after_flash)),
    CHECK (state IN ('pending', 'in-progress') OR (lease_expires_at IS NULL AND finished_at IS NOT NULL)),
    CHECK ((token = 0) = (lease_owner = '')),
    CHECK (NOT start_in_flight OR (batch_id IS NOT NULL AND state IN ('pending', 'in-progress'))),
    CHECK (batch_id IS NOT NULL OR wave = 0)
);
-- At most one non-terminal operation per device.
CREATE UNIQUE INDEX operations_device_active
    ON {{schema}}.operations (device_id) WHERE state IN ('pending', 'in-progress');
CREATE INDEX operations_device ON {{schema}}.operations (device_id, id);
CREATE INDEX operations_batch ON {{schema}}.operations (batch_id, id) WHERE batch_id IS NOT NULL;
CREATE INDEX operations_image ON {{schema}}.operations (image_id, id);
CREATE INDEX operations_organization ON {{schema}}.operations (organization, id);
-- Claim lanes, each in claim order (store.DueAt, then ID): operations
-- outside any batch and flashed ones (never held back by a batch), then per
-- batch the started ones before flashing and the pending ones of each wave.
CREATE INDEX operations_ready_free
    ON {{schema}}.operations (state, (coalesce(next_attempt_at, created_at)), id)
    WHERE state IN ('pending', 'in-progress') AND (batch_id IS NULL OR after_flash);
CREATE INDEX operations_ready_started
    ON {{schema}}.operations (batch_id, (coalesce(next_attempt_at, created_at)), id)
    WHERE state = 'in-progress' AND NOT after_flash AND batch_id IS NOT NULL;
CREATE INDEX operations_ready_pending
    ON {{schema}}.operations (batch_id, wave, (coalesce(next_attempt_at, created_at)), id)
    WHERE state = 'pending' AND batch_id IS NOT NULL;
-- Live and expired leases of a batch's operations, to count those running.
CREATE INDEX operations_batch_leases
    ON {{schema}}.operations (batch_id, lease_expires_at)
    WHERE lease_expires_at IS NOT NULL AND batch_id IS NOT NULL;
CREATE INDEX operations_deadline
    ON {{schema}}.operations (deadline)
    WHERE deadline IS NOT NULL AND state IN ('pending', 'in-progress') AND NOT after_flash;

-- Log lines, appended without touching the operation's row.
CREATE TABLE {{schema}}.operation_logs (
    operation_id text COLLATE "C" NOT NULL REFERENCES {{schema}}.operations (id),
    seq          bigint NOT NULL CHECK (seq >= 1),
    time         timestamptz NOT NULL,
    line         text NOT NULL,
    PRIMARY KEY (operation_id, seq)
);

-- The starts of a batch that reached their device, dated by that contact
-- (Rollout.StartRate: a claim counts while in flight, see
-- operations.start_in_flight, then by its contact). Rows older than
-- store.MaxRatePeriod are deleted.
CREATE TABLE {{schema}}.batch_starts (
    batch_id     text COLLATE "C" NOT NULL REFERENCES {{schema}}.batches (id),
    contacted_at timestamptz NOT NULL
);
CREATE INDEX batch_starts_batch ON {{schema}}.batch_starts (batch_id, contacted_at);

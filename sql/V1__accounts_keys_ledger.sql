-- tollgate's first schema: accounts, API keys, usage and the ledger.
-- Money is NUMERIC without a declared scale: exact, and never rounded by the database.

CREATE TABLE accounts (
    id                  UUID PRIMARY KEY,
    email               TEXT NOT NULL UNIQUE,
    -- argon2id PHC string; NULL for accounts an operator created without a login.
    password_hash       TEXT,
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    status_reason       TEXT,
    -- Credits minus flushed debits. Written only by the account's actor (credits) and the
    -- flusher (debits the actor already applied in memory).
    balance             NUMERIC NOT NULL DEFAULT 0,
    requests_per_minute INTEGER NOT NULL CHECK (requests_per_minute >= 0),
    tokens_per_minute   INTEGER NOT NULL CHECK (tokens_per_minute >= 0),
    max_concurrent      INTEGER NOT NULL CHECK (max_concurrent >= 0),
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          UUID PRIMARY KEY,
    account_id  UUID NOT NULL REFERENCES accounts (id),
    name        TEXT NOT NULL,
    -- The first characters of the key, shown so people can tell their keys apart.
    prefix      TEXT NOT NULL,
    -- HMAC-SHA-256 of the full key under the server's key secret. The key itself is never stored.
    digest      BYTEA NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- One row per settled request. request_id is the idempotency key of the flush.
CREATE TABLE usage (
    request_id            UUID PRIMARY KEY,
    account_id            UUID NOT NULL REFERENCES accounts (id),
    key_id                UUID NOT NULL REFERENCES api_keys (id),
    model                 TEXT NOT NULL,
    input_tokens          BIGINT NOT NULL,
    output_tokens         BIGINT NOT NULL,
    cache_read_tokens     BIGINT NOT NULL,
    cache_write_5m_tokens BIGINT NOT NULL,
    cache_write_1h_tokens BIGINT NOT NULL,
    web_search_requests   BIGINT NOT NULL,
    web_fetch_requests    BIGINT NOT NULL,
    cost                  NUMERIC NOT NULL,
    -- effective_from of the rate-card version the request was priced at.
    price_version         TIMESTAMPTZ NOT NULL,
    long_prompt_tier      BOOLEAN NOT NULL,
    outcome               TEXT NOT NULL,
    started_at            TIMESTAMPTZ NOT NULL,
    finished_at           TIMESTAMPTZ NOT NULL,
    flushed_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_account_started ON usage (account_id, started_at);

-- Every change of a balance. Usage is entered once per account per flush, as the sum of the
-- usage rows that flush inserted; every other kind is one entry per change.
CREATE TABLE ledger (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    UUID NOT NULL REFERENCES accounts (id),
    kind          TEXT NOT NULL CHECK (kind IN ('credit', 'adjustment', 'usage')),
    -- Signed: credits are positive, debits negative.
    amount        NUMERIC NOT NULL,
    balance_after NUMERIC NOT NULL,
    usage_count   INTEGER,
    reason        TEXT,
    change_id     UUID UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX ledger_account ON ledger (account_id, id);

-- Suspensions and reinstatements, with the operator's reason.
CREATE TABLE account_status_changes (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id UUID NOT NULL REFERENCES accounts (id),
    status     TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

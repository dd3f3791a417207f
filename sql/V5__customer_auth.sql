-- Customer self-service (issue 11): registration, email verification, login sessions.

-- Emails are stored trimmed and lower-cased by the application; this index makes the
-- uniqueness hold case-insensitively even for a row written some other way.
CREATE UNIQUE INDEX accounts_email_lower ON accounts (lower(email));

ALTER TABLE accounts
    -- Accounts an operator created (every row before this migration) count as verified.
    ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT true,
    -- The code this account hands to the people it invites. Every account gets one, the
    -- existing ones included (the default is evaluated per row).
    ADD COLUMN invite_code TEXT NOT NULL UNIQUE
        DEFAULT upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 12)),
    -- Whose invite code this account registered with, for the referral rewards.
    ADD COLUMN invited_by UUID REFERENCES accounts (id),
    -- The language its emails are written in: 'en' or 'zh'.
    ADD COLUMN language TEXT NOT NULL DEFAULT 'en' CHECK (language IN ('en', 'zh'));

-- Login sessions. Only the SHA-256 of a token is stored: a token is 256 random bits, so a
-- keyed or slow hash would add nothing, and a leak of this table opens no session.
CREATE TABLE sessions (
    token_hash  BYTEA PRIMARY KEY,
    account_id  UUID NOT NULL REFERENCES accounts (id),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ
);
CREATE INDEX sessions_account ON sessions (account_id);

-- Single-use tokens sent by email: 'verify_email' and 'password_reset'. Stored as SHA-256,
-- as sessions are.
CREATE TABLE account_tokens (
    token_hash  BYTEA PRIMARY KEY,
    account_id  UUID NOT NULL REFERENCES accounts (id),
    purpose     TEXT NOT NULL CHECK (purpose IN ('verify_email', 'password_reset')),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);
CREATE INDEX account_tokens_account ON account_tokens (account_id, purpose);

-- Emails waiting to be sent, written in the transaction of what they announce, so that a
-- failed or slow mail server never loses a registration. A sender off the request path
-- sends them with retries and backoff; a sent email's body (which carries a link's token)
-- is erased.
CREATE TABLE email_outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      UUID NOT NULL REFERENCES accounts (id),
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT,
    sent_at         TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at) WHERE sent_at IS NULL;

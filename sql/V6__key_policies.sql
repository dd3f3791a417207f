-- Per-key policies (issue 11): what one API key may do beyond what its account may.
-- Every column is optional or defaults to "no restriction", so keys issued before this
-- migration keep working unchanged. This migration depends only on V1-V4.

ALTER TABLE api_keys
    -- Model ids the key may call; NULL allows every model of the rate card.
    ADD COLUMN models              TEXT[],
    -- Addresses and CIDR networks the key may be used from, as text; NULL allows any.
    ADD COLUMN allowed_ips         TEXT[],
    -- From this instant on the key is refused as expired; NULL never expires.
    ADD COLUMN expires_at          TIMESTAMPTZ,
    -- Most the key may spend per UTC day, and over its life; NULL is no cap.
    ADD COLUMN daily_spend_usd     NUMERIC CHECK (daily_spend_usd > 0),
    ADD COLUMN total_spend_usd     NUMERIC CHECK (total_spend_usd > 0),
    -- Per-key throttles; 0 inherits the account's.
    ADD COLUMN requests_per_minute INTEGER NOT NULL DEFAULT 0 CHECK (requests_per_minute >= 0),
    ADD COLUMN tokens_per_minute   INTEGER NOT NULL DEFAULT 0 CHECK (tokens_per_minute >= 0),
    ADD COLUMN max_concurrent      INTEGER NOT NULL DEFAULT 0 CHECK (max_concurrent >= 0);

-- What a key has spent, today and in all, is summed from its usage rows when its account's
-- actor loads; this keeps that sum to the key's own rows.
CREATE INDEX usage_key_started ON usage (key_id, started_at);

-- Redemption codes (issue 12): single-use codes for a USD amount, made in batches by an
-- operator and sold through third-party card shops (docs/PAYMENTS.md).

CREATE TABLE redemption_codes (
    id          UUID PRIMARY KEY,
    -- HMAC-SHA-256 of the normalised code under the server's key secret: the code itself is
    -- shown once, when it is made, and never stored.
    digest      BYTEA NOT NULL UNIQUE,
    -- The first characters of the code, so that an operator can tell codes apart.
    prefix      TEXT NOT NULL,
    amount_usd  NUMERIC NOT NULL CHECK (amount_usd > 0),
    batch_id    UUID NOT NULL,
    expires_at  TIMESTAMPTZ,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    redeemed_by UUID REFERENCES accounts (id),
    redeemed_at TIMESTAMPTZ,
    CONSTRAINT redemption_codes_redeemed_when CHECK ((redeemed_by IS NULL) = (redeemed_at IS NULL))
);
CREATE INDEX redemption_codes_created ON redemption_codes (created_at DESC, id DESC);

-- A code is redeemed once and stays redeemed by whoever redeemed it, at its amount.
CREATE FUNCTION redeemed_codes_are_final() RETURNS trigger AS $$
BEGIN
    IF OLD.redeemed_by IS NOT NULL AND (NEW.redeemed_by IS DISTINCT FROM OLD.redeemed_by
        OR NEW.redeemed_at IS DISTINCT FROM OLD.redeemed_at) THEN
        RAISE EXCEPTION 'redemption code % is redeemed', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.amount_usd <> OLD.amount_usd OR NEW.digest <> OLD.digest THEN
        RAISE EXCEPTION 'redemption code % keeps its terms', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER redeemed_codes_are_final BEFORE UPDATE ON redemption_codes
    FOR EACH ROW EXECUTE FUNCTION redeemed_codes_are_final();

-- Money in (issue 12): the operator's exchange rate and recharge orders paid through EPay, a
-- signed webhook or by hand (docs/PAYMENTS.md, docs/adr/0022-recharge-orders.md).

-- The CNY per USD rate, as the operator set it over time; the newest row is the rate. With
-- no row, the configuration's `payments.cny_per_usd` is the rate.
CREATE TABLE exchange_rates (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cny_per_usd NUMERIC NOT NULL CHECK (cny_per_usd > 0 AND scale(cny_per_usd) <= 6),
    set_by      TEXT NOT NULL,
    set_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE recharge_orders (
    id            UUID PRIMARY KEY,
    account_id    UUID NOT NULL REFERENCES accounts (id),
    -- How the customer pays: 'epay' (an EPay gateway) or 'webhook' (any other provider).
    -- Only that path can pay the order; an operator can confirm any.
    method        TEXT NOT NULL CHECK (method IN ('epay', 'webhook')),
    -- EPay's `type` (alipay, wxpay); free for a webhook provider.
    channel       TEXT,
    -- 2 decimals, never more: what the customer is asked to pay.
    amount_cny    NUMERIC NOT NULL CHECK (amount_cny > 0 AND scale(amount_cny) <= 2),
    -- The rate locked when the order was created, and the USD it credits at that rate.
    cny_per_usd   NUMERIC NOT NULL CHECK (cny_per_usd > 0),
    amount_usd    NUMERIC NOT NULL CHECK (amount_usd > 0),
    status        TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'paid', 'expired')),
    -- Who paid it ('epay', 'webhook:<name>', 'manual') and their reference for the payment.
    provider      TEXT,
    provider_ref  TEXT,
    paid_at       TIMESTAMPTZ,
    -- An operator's reason, for an order confirmed by hand.
    confirm_reason TEXT,
    -- Set when a payment report could not be credited (a different amount, a payment after
    -- expiry): the order waits for an operator. The paid amount reported, if any.
    review_reason TEXT,
    reported_cny  NUMERIC,
    expires_at    TIMESTAMPTZ NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Paid exactly when it has a payer, a reference and a time.
    CONSTRAINT recharge_orders_paid_when CHECK (
        (status = 'paid') = (provider IS NOT NULL AND provider_ref IS NOT NULL AND paid_at IS NOT NULL))
);
-- One payment credits one order: a provider's reference pays at most once, whatever the code.
CREATE UNIQUE INDEX recharge_orders_provider_ref ON recharge_orders (provider, provider_ref)
    WHERE provider_ref IS NOT NULL;
CREATE INDEX recharge_orders_account ON recharge_orders (account_id, created_at DESC);
CREATE INDEX recharge_orders_pending ON recharge_orders (expires_at) WHERE status = 'pending';

-- A paid order stays paid, with the same payer and amount: enforced here so that no code path
-- can pay an order twice or un-pay it.
CREATE FUNCTION paid_orders_are_final() RETURNS trigger AS $$
BEGIN
    IF OLD.status = 'paid' AND (NEW.status <> 'paid' OR NEW.provider IS DISTINCT FROM OLD.provider
        OR NEW.provider_ref IS DISTINCT FROM OLD.provider_ref
        OR NEW.amount_usd <> OLD.amount_usd OR NEW.amount_cny <> OLD.amount_cny) THEN
        RAISE EXCEPTION 'recharge order % is paid', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.amount_usd <> OLD.amount_usd OR NEW.cny_per_usd <> OLD.cny_per_usd
        OR NEW.amount_cny <> OLD.amount_cny OR NEW.account_id <> OLD.account_id
        OR NEW.method <> OLD.method THEN
        RAISE EXCEPTION 'recharge order % keeps its terms', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER paid_orders_are_final BEFORE UPDATE ON recharge_orders
    FOR EACH ROW EXECUTE FUNCTION paid_orders_are_final();

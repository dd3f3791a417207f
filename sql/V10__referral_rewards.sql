-- Referral rewards (issue 12): an inviter is rewarded once, when the invitee's first paid
-- recharge commits (docs/PAYMENTS.md, "Referrals").

-- The address an account registered from: a reward for an invitee who signed up from the
-- inviter's /24 (IPv4) or /64 (IPv6) is held for an operator instead of paid.
ALTER TABLE accounts ADD COLUMN signup_ip INET;

CREATE TABLE referral_rewards (
    id          UUID PRIMARY KEY,
    inviter_id  UUID NOT NULL REFERENCES accounts (id),
    -- One reward per invitee, ever: of two first recharges racing, one pays it.
    invitee_id  UUID NOT NULL UNIQUE REFERENCES accounts (id),
    -- The recharge that earned it, or the redemption where redemptions count as a first
    -- recharge (payments.redemption_counts_as_first_recharge).
    order_id    UUID UNIQUE REFERENCES recharge_orders (id),
    code_id     UUID UNIQUE REFERENCES redemption_codes (id),
    amount_usd  NUMERIC NOT NULL CHECK (amount_usd > 0),
    -- pending: earned, its credit under way; held: for an operator's review; paid; reversed.
    status      TEXT NOT NULL CHECK (status IN ('pending', 'held', 'paid', 'reversed')),
    hold_reason TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at     TIMESTAMPTZ,
    CONSTRAINT referral_rewards_not_self CHECK (inviter_id <> invitee_id),
    CONSTRAINT referral_rewards_one_source CHECK ((order_id IS NULL) <> (code_id IS NULL)),
    CONSTRAINT referral_rewards_paid_when CHECK (status <> 'paid' OR paid_at IS NOT NULL)
);
CREATE INDEX referral_rewards_inviter ON referral_rewards (inviter_id, created_at DESC);
CREATE INDEX referral_rewards_pending ON referral_rewards (created_at) WHERE status = 'pending';

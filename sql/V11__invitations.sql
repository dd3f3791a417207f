-- Operator-made invitation codes (issue 12): a code with its own reward, a maximum number of
-- uses and an expiry, rewarding the account it names (docs/PAYMENTS.md, "Referrals").

CREATE TABLE invitations (
    -- Upper case, as typed codes are normalised.
    code         TEXT PRIMARY KEY CHECK (code = upper(code)),
    -- The account rewarded for each invitee's first paid recharge; none: the code lets
    -- people register and counts them, and rewards no one.
    inviter_id   UUID REFERENCES accounts (id),
    reward_kind  TEXT NOT NULL CHECK (reward_kind IN ('fixed', 'ratio')),
    -- USD for `fixed`; a share of the first recharge's USD (0 to 1) for `ratio`.
    reward_value NUMERIC NOT NULL CHECK (reward_value > 0 AND (reward_kind = 'fixed' OR reward_value <= 1)),
    max_uses     INTEGER CHECK (max_uses > 0),
    -- Never past max_uses, whatever the code does.
    uses         INTEGER NOT NULL DEFAULT 0 CHECK (uses >= 0 AND (max_uses IS NULL OR uses <= max_uses)),
    expires_at   TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The operator's code an account registered with, whose reward then applies.
ALTER TABLE accounts ADD COLUMN invitation_code TEXT REFERENCES invitations (code);

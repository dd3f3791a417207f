-- Account deletion (issue 11): an owner deletes the account; its balance is forfeited, its
-- email anonymized so the address can register again, and its usage and ledger rows stay for
-- the books. The ledger's kinds are widened now to every kind the contract names, so that
-- the payment and referral issues need no further change to this constraint.

ALTER TABLE accounts
    DROP CONSTRAINT accounts_status_check,
    ADD CONSTRAINT accounts_status_check CHECK (status IN ('active', 'suspended', 'deleted')),
    ADD COLUMN deleted_at TIMESTAMPTZ,
    -- Deleted exactly when it has a deletion time.
    ADD CONSTRAINT accounts_deleted_when CHECK ((status = 'deleted') = (deleted_at IS NOT NULL));

ALTER TABLE ledger
    DROP CONSTRAINT ledger_kind_check,
    ADD CONSTRAINT ledger_kind_check CHECK (kind IN (
        'credit', 'recharge', 'redemption', 'referral_reward', 'referral_reversal', 'usage',
        'adjustment', 'forfeiture'));

-- The balance changes that are not usage, per account: few (one per credit, recharge or
-- adjustment), so what an account has spent (these, less its balance) is read without
-- summing its usage.
CREATE INDEX ledger_account_not_usage ON ledger (account_id) INCLUDE (amount)
    WHERE kind <> 'usage';

-- A deleted account stays deleted and nothing credits it (its forfeiture is entered before
-- the status changes). Enforced here so that no code path can get it wrong. A debit is let
-- through: usage is entered for what was answered, and refusing it would stop the flush.
CREATE FUNCTION deleted_accounts_are_final() RETURNS trigger AS $$
BEGIN
    IF OLD.status = 'deleted' AND (NEW.balance > OLD.balance OR NEW.status <> 'deleted') THEN
        RAISE EXCEPTION 'account % is deleted', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;

CREATE TRIGGER deleted_accounts_are_final BEFORE UPDATE OF balance, status ON accounts
    FOR EACH ROW EXECUTE FUNCTION deleted_accounts_are_final();

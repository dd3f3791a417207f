-- Operator writes (credit, adjust) sent with an Idempotency-Key: one row per account, route
-- and key (docs/adr/0016-idempotent-operator-writes.md). The row is inserted in the same
-- statement, so the same transaction, as the ledger entry and the balance change it guards:
-- either all three are stored or none is, and a retry finds the row whenever the change
-- was applied.
CREATE TABLE idempotency_keys (
    account_id  UUID NOT NULL REFERENCES accounts (id),
    -- The route: 'credit' or 'adjust'.
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    -- SHA-256 of what the request asked (kind, amount, reason): a retry must ask the same.
    fingerprint BYTEA NOT NULL,
    -- The ledger entry's change_id.
    change_id   UUID NOT NULL,
    -- The first answer, sent again to every retry. NULL until the first writer stores it,
    -- just after the commit.
    status      SMALLINT,
    response    TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, scope, key)
);

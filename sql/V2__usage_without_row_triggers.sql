-- The usage table takes one row per settled request, thousands a second, and its foreign keys
-- made each of those rows run two referential-integrity triggers: a lookup and a KEY SHARE lock
-- of the account row and of the key row. Measured on the 2-core benchmark machine, that was
-- more than half of Postgres's CPU per request (docs/BENCHMARKS.md, "Findings").
--
-- The references still hold without the triggers:
-- - only the flusher writes usage, and it writes only rows that an account actor settled;
-- - an account actor exists only for an account it loaded from this database, and a request
--   reaches it only with a key from the key ring, which mirrors api_keys;
-- - accounts and keys are never deleted (a key is revoked, its row stays).
-- The ledger, one row per account per flush, keeps its foreign key.
ALTER TABLE usage DROP CONSTRAINT IF EXISTS usage_account_id_fkey;
ALTER TABLE usage DROP CONSTRAINT IF EXISTS usage_key_id_fkey;

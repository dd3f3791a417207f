-- Output produced is output billed, on every path (issue 9). When the upstream's final usage
-- never came (a drain that ran out, a shutdown's interrupt, a cut or silent stream), some of a
-- row's counts are tollgate's estimate: `estimated` says so. When the upstream reported no
-- usage, or an absurd count, the row is billed from tollgate's estimate and `usage_fault`
-- names the upstream's fault, so that operators can tell it from the upstream's own numbers
-- (docs/adr/0009-estimate-unreported-output.md, docs/adr/0010-usage-faults-billed-from-the-hold.md).
--
-- Both columns have constant defaults, so adding them rewrites nothing.
ALTER TABLE usage ADD COLUMN estimated BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE usage ADD COLUMN usage_fault TEXT
    CHECK (usage_fault IN ('missing_usage', 'absurd_count'));

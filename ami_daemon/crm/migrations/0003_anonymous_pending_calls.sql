-- A pending call may come from an anonymous caller (rules: anonymous_callers: create
-- with unknown_caller: offer): it has no number.
ALTER TABLE crm.pending_calls ALTER COLUMN e164 DROP NOT NULL;

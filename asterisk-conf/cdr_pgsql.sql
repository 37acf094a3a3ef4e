-- The CDR table cdr_pgsql fills (Asterisk 13+ column names). ami-daemon's
-- backfill needs linkedid (to group legs and match AMI call ids) and reads
-- start/answer/end when present (else calldate + duration/billsec).
CREATE TABLE IF NOT EXISTS cdr (
    calldate     timestamptz NOT NULL DEFAULT now(),
    start        timestamptz,
    answer       timestamptz,
    "end"        timestamptz,
    clid         varchar(80) NOT NULL DEFAULT '',
    src          varchar(80) NOT NULL DEFAULT '',
    dst          varchar(80) NOT NULL DEFAULT '',
    dcontext     varchar(80) NOT NULL DEFAULT '',
    channel      varchar(80) NOT NULL DEFAULT '',
    dstchannel   varchar(80) NOT NULL DEFAULT '',
    lastapp      varchar(80) NOT NULL DEFAULT '',
    lastdata     varchar(80) NOT NULL DEFAULT '',
    duration     integer NOT NULL DEFAULT 0,
    billsec      integer NOT NULL DEFAULT 0,
    disposition  varchar(45) NOT NULL DEFAULT '',
    amaflags     integer NOT NULL DEFAULT 0,
    accountcode  varchar(20) NOT NULL DEFAULT '',
    uniqueid     varchar(150) NOT NULL DEFAULT '',
    userfield    varchar(255) NOT NULL DEFAULT '',
    peeraccount  varchar(20) NOT NULL DEFAULT '',
    linkedid     varchar(150) NOT NULL DEFAULT '',
    sequence     integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cdr_calldate_idx ON cdr (calldate);
CREATE INDEX IF NOT EXISTS cdr_linkedid_idx ON cdr (linkedid);
-- cdr_pgsql sends times as text without an offset, in cdr_pgsql.conf's
-- timezone (UTC): let every session of this database read them as UTC.
DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET timezone TO %L', current_database(), 'UTC');
END $$;

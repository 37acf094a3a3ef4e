-- Pending unknown calls (S4 "offer creation in the call window") and callback tasks (B3).
-- Every row a call creates is keyed by that call, so applying one call twice cannot
-- create anything twice: the crm.calls primary key (pbx, call_id) is inserted first in the
-- same transaction, and these unique keys back it up.

-- Which call created a CRM item (NULL for imported or hand-made items).
ALTER TABLE crm.leads     ADD COLUMN pbx text, ADD COLUMN call_id text;
ALTER TABLE crm.deals     ADD COLUMN pbx text, ADD COLUMN call_id text;
ALTER TABLE crm.contacts  ADD COLUMN pbx text, ADD COLUMN call_id text;
ALTER TABLE crm.companies ADD COLUMN pbx text, ADD COLUMN call_id text;
CREATE UNIQUE INDEX leads_call_idx ON crm.leads (pbx, call_id) WHERE call_id IS NOT NULL;
CREATE UNIQUE INDEX deals_call_idx ON crm.deals (pbx, call_id) WHERE call_id IS NOT NULL;
CREATE UNIQUE INDEX contacts_call_idx ON crm.contacts (pbx, call_id) WHERE call_id IS NOT NULL;
CREATE UNIQUE INDEX companies_call_idx ON crm.companies (pbx, call_id) WHERE call_id IS NOT NULL;

-- A call from a number the CRM does not know, on a number whose unknown_caller is
-- "offer": nothing was created; an employee creates a lead or a contact from it with
-- `ami-daemon crm create-from-call`.
CREATE TABLE crm.pending_calls (
    id              bigserial PRIMARY KEY,
    pbx             text        NOT NULL,
    call_id         text        NOT NULL,
    e164            text        NOT NULL,
    did_e164        text,
    answered_by     text,                   -- extension of the employee who answered
    source          text        NOT NULL DEFAULT 'CALL',
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    resolved_entity_type text   CHECK (resolved_entity_type IN ('lead', 'contact')),
    resolved_entity_id   bigint,
    resolved_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (pbx, call_id),
    FOREIGN KEY (pbx, call_id) REFERENCES crm.calls (pbx, call_id)
);
CREATE INDEX pending_calls_open_idx ON crm.pending_calls (created_at) WHERE status = 'open';

-- Callback tasks: one per missed call of an existing client, for its responsible.
-- Closed by the next answered call with the number (either direction), which is recorded.
CREATE TABLE crm.tasks (
    id              bigserial PRIMARY KEY,
    kind            text        NOT NULL DEFAULT 'callback' CHECK (kind IN ('callback')),
    title           text        NOT NULL,
    pbx             text        NOT NULL,
    call_id         text        NOT NULL,   -- the missed call
    e164            text        NOT NULL,
    entity_type     text        NOT NULL CHECK (entity_type IN ('contact', 'company', 'lead')),
    entity_id       bigint      NOT NULL,
    responsible_id  bigint      REFERENCES crm.users (id),
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'closed')),
    closed_at       timestamptz,
    closed_by_pbx   text,
    closed_by_call_id text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (pbx, call_id),
    FOREIGN KEY (pbx, call_id) REFERENCES crm.calls (pbx, call_id),
    FOREIGN KEY (closed_by_pbx, closed_by_call_id) REFERENCES crm.calls (pbx, call_id),
    CHECK ((status = 'closed') = (closed_at IS NOT NULL))
);
CREATE INDEX tasks_open_e164_idx ON crm.tasks (e164) WHERE status = 'open';

CREATE TRIGGER pending_calls_touch BEFORE UPDATE ON crm.pending_calls
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER tasks_touch BEFORE UPDATE ON crm.tasks
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();

-- CRM data (DESIGN "contract: CRM tables"). Settings live in the rules YAML, not here.

CREATE SCHEMA IF NOT EXISTS crm;

CREATE OR REPLACE FUNCTION crm.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

-- Employees. Their personal numbers (mobiles) are rows in crm.phones.
CREATE TABLE crm.users (
    id          bigserial PRIMARY KEY,
    name        text        NOT NULL,
    extension   text        NOT NULL UNIQUE,
    email       text,
    active      boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE crm.companies (
    id              bigserial PRIMARY KEY,
    name            text        NOT NULL,
    email           text,
    source          text        NOT NULL DEFAULT 'CALL',
    responsible_id  bigint      REFERENCES crm.users (id),
    external_id     text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE crm.contacts (
    id              bigserial PRIMARY KEY,
    name            text        NOT NULL,
    email           text,
    company_id      bigint      REFERENCES crm.companies (id),
    source          text        NOT NULL DEFAULT 'CALL',
    responsible_id  bigint      REFERENCES crm.users (id),
    external_id     text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE crm.deals (
    id              bigserial PRIMARY KEY,
    title           text        NOT NULL,
    pipeline        text        NOT NULL DEFAULT 'general',
    stage           text        NOT NULL,
    contact_id      bigint      REFERENCES crm.contacts (id),
    company_id      bigint      REFERENCES crm.companies (id),
    source          text        NOT NULL DEFAULT 'CALL',
    responsible_id  bigint      REFERENCES crm.users (id),
    closed          boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE crm.leads (
    id              bigserial PRIMARY KEY,
    title           text        NOT NULL,
    status          text        NOT NULL DEFAULT 'new'
                    CHECK (status IN ('new', 'in_progress', 'converted', 'junk')),
    source          text        NOT NULL DEFAULT 'CALL',
    responsible_id  bigint      REFERENCES crm.users (id),
    contact_id      bigint      REFERENCES crm.contacts (id),
    company_id      bigint      REFERENCES crm.companies (id),
    deal_id         bigint      REFERENCES crm.deals (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per (entity, number): the key every lookup uses (B5: E.164 only).
CREATE TABLE crm.phones (
    entity_type  text        NOT NULL CHECK (entity_type IN ('user', 'contact', 'company', 'lead')),
    entity_id    bigint      NOT NULL,
    e164         text        NOT NULL CHECK (e164 ~ '^\+[1-9][0-9]{3,14}$'),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_type, entity_id, e164)
);
CREATE INDEX phones_e164_idx ON crm.phones (e164);

-- Every call the tracker reports, internal ones too; one row per (pbx, call_id).
CREATE TABLE crm.calls (
    pbx            text        NOT NULL,
    call_id        text        NOT NULL,
    direction      text        NOT NULL CHECK (direction IN ('inbound', 'outbound', 'internal')),
    external_e164  text,
    did_e164       text,
    trunk          text,
    status         text        NOT NULL
                   CHECK (status IN ('answered', 'missed', 'busy', 'no_answer', 'failed',
                                     'interrupted')),
    answered_by    text,
    final_agent    text,
    caller_extension text,
    queue          text,
    started_at     timestamptz,
    answered_at    timestamptz,
    ended_at       timestamptz,
    talk_seconds   integer,
    crm_outcome    text        NOT NULL,
    crm_reason     text        NOT NULL,
    summary        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pbx, call_id)
);
CREATE INDEX calls_external_idx ON crm.calls (external_e164, started_at);
CREATE INDEX calls_ended_idx ON crm.calls (ended_at);

-- A call logged on a CRM item (S13).
CREATE TABLE crm.activities (
    id              bigserial PRIMARY KEY,
    pbx             text        NOT NULL,
    call_id         text        NOT NULL,
    entity_type     text        NOT NULL CHECK (entity_type IN ('contact', 'company', 'lead', 'deal')),
    entity_id       bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('answered', 'missed')),
    responsible_id  bigint      REFERENCES crm.users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (pbx, call_id) REFERENCES crm.calls (pbx, call_id),
    UNIQUE (pbx, call_id, entity_type, entity_id)
);
CREATE INDEX activities_entity_idx ON crm.activities (entity_type, entity_id);

CREATE INDEX contacts_company_idx ON crm.contacts (company_id);
CREATE INDEX leads_status_idx ON crm.leads (status);
CREATE INDEX deals_contact_open_idx ON crm.deals (contact_id) WHERE NOT closed;
CREATE INDEX deals_company_open_idx ON crm.deals (company_id) WHERE NOT closed;

CREATE TRIGGER users_touch BEFORE UPDATE ON crm.users
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER companies_touch BEFORE UPDATE ON crm.companies
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER contacts_touch BEFORE UPDATE ON crm.contacts
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER deals_touch BEFORE UPDATE ON crm.deals
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER leads_touch BEFORE UPDATE ON crm.leads
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER phones_touch BEFORE UPDATE ON crm.phones
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER calls_touch BEFORE UPDATE ON crm.calls
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();
CREATE TRIGGER activities_touch BEFORE UPDATE ON crm.activities
    FOR EACH ROW EXECUTE FUNCTION crm.touch_updated_at();

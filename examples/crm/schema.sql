-- The reference CRM of Maschera (see the README and examples/crm/policy.toml).
-- Every example, test, demo and benchmark uses this schema. Idempotent on an empty database.

CREATE TABLE IF NOT EXISTS contacts (
    id               bigint PRIMARY KEY,
    first_name       text NOT NULL,
    last_name        text NOT NULL,
    email            text NOT NULL UNIQUE,
    phone            text NOT NULL UNIQUE,
    birth_date       date,
    tax_code         char(16) UNIQUE,
    street_address   text,
    city             text,
    region           text NOT NULL CHECK (region IN ('north', 'centre', 'south')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_activity_at timestamptz
);

CREATE TABLE IF NOT EXISTS consents (
    id           bigint PRIMARY KEY,
    contact_id   bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    purpose      text NOT NULL CHECK (purpose IN ('marketing', 'profiling', 'newsletter')),
    granted_at   timestamptz NOT NULL,
    withdrawn_at timestamptz,
    source       text
);
CREATE INDEX IF NOT EXISTS consents_contact_id ON consents (contact_id);

CREATE TABLE IF NOT EXISTS deals (
    id         bigint PRIMARY KEY,
    contact_id bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    amount     numeric(12, 2) NOT NULL,
    stage      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz
);
CREATE INDEX IF NOT EXISTS deals_contact_id ON deals (contact_id);

CREATE TABLE IF NOT EXISTS interactions (
    id          bigint PRIMARY KEY,
    contact_id  bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    channel     text NOT NULL CHECK (channel IN ('call', 'email', 'meeting')),
    notes       text,
    occurred_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS interactions_contact_id ON interactions (contact_id);

CREATE TABLE IF NOT EXISTS tickets (
    id         bigint PRIMARY KEY,
    contact_id bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    subject    text NOT NULL,
    body       text,
    status     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tickets_contact_id ON tickets (contact_id);

CREATE TABLE IF NOT EXISTS health_records (
    id          bigint PRIMARY KEY,
    contact_id  bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    condition   text NOT NULL,
    notes       text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS health_records_contact_id ON health_records (contact_id);

CREATE TABLE IF NOT EXISTS judicial_records (
    id            bigint PRIMARY KEY,
    contact_id    bigint NOT NULL REFERENCES contacts (id) ON DELETE CASCADE,
    offence       text NOT NULL,
    sentence_date date
);
CREATE INDEX IF NOT EXISTS judicial_records_contact_id ON judicial_records (contact_id);

-- New rows written through the proxy get ids from these sequences.
CREATE SEQUENCE IF NOT EXISTS contacts_id_seq OWNED BY contacts.id;
CREATE SEQUENCE IF NOT EXISTS consents_id_seq OWNED BY consents.id;
CREATE SEQUENCE IF NOT EXISTS deals_id_seq OWNED BY deals.id;
CREATE SEQUENCE IF NOT EXISTS interactions_id_seq OWNED BY interactions.id;
CREATE SEQUENCE IF NOT EXISTS tickets_id_seq OWNED BY tickets.id;
CREATE SEQUENCE IF NOT EXISTS health_records_id_seq OWNED BY health_records.id;
CREATE SEQUENCE IF NOT EXISTS judicial_records_id_seq OWNED BY judicial_records.id;
ALTER TABLE contacts ALTER COLUMN id SET DEFAULT nextval('contacts_id_seq');
ALTER TABLE consents ALTER COLUMN id SET DEFAULT nextval('consents_id_seq');
ALTER TABLE deals ALTER COLUMN id SET DEFAULT nextval('deals_id_seq');
ALTER TABLE interactions ALTER COLUMN id SET DEFAULT nextval('interactions_id_seq');
ALTER TABLE tickets ALTER COLUMN id SET DEFAULT nextval('tickets_id_seq');
ALTER TABLE health_records ALTER COLUMN id SET DEFAULT nextval('health_records_id_seq');
ALTER TABLE judicial_records ALTER COLUMN id SET DEFAULT nextval('judicial_records_id_seq');

-- Scheduler: each recruiter's scheduling settings, single-use scheduling links
-- sent to candidates, and the bookings made through them.
--
-- No double booking: among one recruiter's *confirmed* bookings, the blocked
-- ranges [blocked_start, blocked_end) (the meeting widened by its buffers) never
-- overlap. SQLite has no exclusion constraints, so two triggers refuse an insert
-- or update that would overlap, with RAISE(ABORT, 'slot_taken'); every write
-- runs under BEGIN IMMEDIATE, so check and write are one serialized step.
-- Touching ranges (one ends where the next starts) are allowed.

-- One row per recruiter; `settings` is JSON written by the store's typed struct.
CREATE TABLE scheduling_settings (
    user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    org_id      INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    settings    TEXT    NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- The token is only stored as its SHA-256 digest. `expired` is never stored: it
-- is derived at read time from expires_at for links not yet booked or revoked.
-- booking_id mirrors bookings.link_id (which carries the foreign key).
CREATE TABLE scheduling_links (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id        INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    candidate_id  INTEGER NOT NULL,
    meeting_kind  TEXT    NOT NULL CHECK (meeting_kind IN ('phone_screen', 'interview')),
    token_digest  BLOB    NOT NULL UNIQUE,
    status        TEXT    NOT NULL CHECK (status IN ('sent', 'opened', 'booked', 'revoked')),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    opened_at     INTEGER,
    revoked_at    INTEGER,
    booking_id    INTEGER,
    FOREIGN KEY (candidate_id, org_id) REFERENCES candidates(id, org_id) ON DELETE CASCADE,
    CHECK ((status = 'booked') = (booking_id IS NOT NULL)),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX scheduling_links_candidate ON scheduling_links(org_id, candidate_id, id);
CREATE INDEX scheduling_links_user ON scheduling_links(org_id, user_id, id);

CREATE TABLE bookings (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id              INTEGER NOT NULL REFERENCES organizations(id) ON DELETE CASCADE,
    user_id             INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    link_id             INTEGER NOT NULL UNIQUE REFERENCES scheduling_links(id) ON DELETE CASCADE,
    candidate_id        INTEGER NOT NULL,
    meeting_kind        TEXT    NOT NULL CHECK (meeting_kind IN ('phone_screen', 'interview')),
    starts_at           INTEGER NOT NULL,
    ends_at             INTEGER NOT NULL,
    blocked_start       INTEGER NOT NULL,
    blocked_end         INTEGER NOT NULL,
    status              TEXT    NOT NULL CHECK (status IN ('confirmed', 'cancelled')),
    attendee_name       TEXT    NOT NULL,
    attendee_email      TEXT    NOT NULL,
    attendee_phone      TEXT,
    attendee_note       TEXT,
    attendee_time_zone  TEXT    NOT NULL,
    provider_event_id   TEXT,
    ical_uid            TEXT,
    idempotency_key     TEXT UNIQUE,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    cancelled_at        INTEGER,
    FOREIGN KEY (candidate_id, org_id) REFERENCES candidates(id, org_id) ON DELETE CASCADE,
    CHECK (blocked_start <= starts_at AND starts_at < ends_at AND ends_at <= blocked_end),
    CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);
CREATE INDEX bookings_confirmed_range ON bookings(user_id, blocked_start) WHERE status = 'confirmed';
CREATE INDEX bookings_org ON bookings(org_id, id);

CREATE TRIGGER bookings_no_overlap_insert BEFORE INSERT ON bookings
WHEN NEW.status = 'confirmed'
BEGIN
    SELECT RAISE(ABORT, 'slot_taken') WHERE EXISTS (
        SELECT 1 FROM bookings
        WHERE user_id = NEW.user_id AND status = 'confirmed'
          AND blocked_start < NEW.blocked_end AND NEW.blocked_start < blocked_end
    );
END;

CREATE TRIGGER bookings_no_overlap_update BEFORE UPDATE OF user_id, status, blocked_start, blocked_end ON bookings
WHEN NEW.status = 'confirmed'
BEGIN
    SELECT RAISE(ABORT, 'slot_taken') WHERE EXISTS (
        SELECT 1 FROM bookings
        WHERE user_id = NEW.user_id AND status = 'confirmed' AND id <> NEW.id
          AND blocked_start < NEW.blocked_end AND NEW.blocked_start < blocked_end
    );
END;

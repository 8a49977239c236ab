-- Marketing's list: a page of 50 contacts it may address (active marketing consent), ordered by id.
-- Run as mia (role marketing) and the marketing login; the owner's variant states the consent.
\set start random(1, :max_id)
SELECT id, first_name, last_name, email FROM contacts WHERE id >= :start ORDER BY id LIMIT 50;

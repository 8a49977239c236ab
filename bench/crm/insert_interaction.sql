-- Insert of an interaction on a contact of the region (a sales user may only write inside its
-- row filter): the first north contact at or after a random id, else the first north contact.
\set start random(1, :max_id)
INSERT INTO interactions (contact_id, channel, notes, occurred_at)
  VALUES (coalesce((SELECT id FROM contacts WHERE region = 'north' AND id >= :start
                    ORDER BY id LIMIT 1), :first_north),
          'call', 'benchmark call', now());

-- A page of 50 interactions, ordered by id (a CRM's activity list). The role's row filter keeps the
-- interactions of its region's contacts; the owner's variant (interactions_page.owner.sql) joins.
\set start random(1, :max_id * 3)
SELECT id, contact_id, channel, notes, occurred_at
  FROM interactions WHERE id >= :start ORDER BY id LIMIT 50;

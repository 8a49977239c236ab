-- A page of 50 contacts of the region, ordered by id (a CRM's list view). The explicit region
-- condition gives the owner, who has no row filter, the same rows to read as sales.
\set start random(1, :max_id)
SELECT id, first_name, last_name, email, phone, city, last_activity_at
  FROM contacts WHERE region = 'north' AND id >= :start ORDER BY id LIMIT 50;

-- The owner's natural query for the same page: the interactions of north contacts.
\set start random(1, :max_id * 3)
SELECT i.id, i.contact_id, i.channel, i.notes, i.occurred_at
  FROM interactions i JOIN contacts c ON c.id = i.contact_id
 WHERE c.region = 'north' AND i.id >= :start ORDER BY i.id LIMIT 50;

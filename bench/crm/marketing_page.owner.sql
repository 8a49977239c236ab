-- The owner's natural query for marketing's page.
\set start random(1, :max_id)
SELECT id, first_name, last_name, email FROM contacts c
 WHERE id >= :start AND EXISTS (SELECT 1 FROM consents s WHERE s.contact_id = c.id
                                 AND s.purpose = 'marketing' AND s.withdrawn_at IS NULL)
 ORDER BY id LIMIT 50;

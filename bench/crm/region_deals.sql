-- Contacts of the region with their deals, per city (a dashboard): a join and an aggregate over the
-- whole region. The role's row filter gives the region; the owner's variant names it.
SELECT c.city, count(*), sum(d.amount)
  FROM contacts c JOIN deals d ON d.contact_id = c.id GROUP BY c.city;

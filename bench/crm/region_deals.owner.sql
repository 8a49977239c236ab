-- The owner's natural query for the same figures: north contacts with their deals.
SELECT c.city, count(*), sum(d.amount)
  FROM contacts c JOIN deals d ON d.contact_id = c.id WHERE c.region = 'north' GROUP BY c.city;

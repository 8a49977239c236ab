-- Point lookup of a contact by primary key (what a CRM's detail page does). As sam (region north)
-- about a third of the ids are in the row filter; the others return no row.
\set id random(1, :max_id)
SELECT id, first_name, last_name, email, phone, birth_date, tax_code, city, region, last_activity_at
  FROM contacts WHERE id = :id;

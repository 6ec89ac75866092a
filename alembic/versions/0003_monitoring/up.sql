-- Placeholder until this revision is written.
select;

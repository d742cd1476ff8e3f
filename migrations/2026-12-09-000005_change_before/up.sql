-- The previous values of the fields a change changed (of every field, for a
-- delete), as JSON; NULL for a create and for changes logged before this.
-- Filtered topics read it to tell an entity entering from one leaving.
ALTER TABLE changes ADD COLUMN before TEXT;

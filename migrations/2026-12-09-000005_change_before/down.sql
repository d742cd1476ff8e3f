ALTER TABLE changes DROP COLUMN before;

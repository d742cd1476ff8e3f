DROP TABLE activity;
ALTER TABLE tasks DROP COLUMN progress;
ALTER TABLE changes DROP COLUMN prior;
ALTER TABLE changes DROP COLUMN author;

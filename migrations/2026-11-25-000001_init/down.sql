DROP TABLE ops;
DROP TABLE tokens;
DROP TABLE changes;
DROP TABLE tasks;
DROP TABLE agents;
DROP TABLE meta;

"""The rules of loyalty as plain Python over plain data: no database, no clock, no framework."""

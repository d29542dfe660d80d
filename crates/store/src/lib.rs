//! Persistence for hirewire: one store API, SQLite and PostgreSQL backends.

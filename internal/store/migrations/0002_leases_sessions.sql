-- 0002: guest address leases and agent session metadata.
--
-- Both belong to a VM row and disappear with it (ON DELETE CASCADE needs
-- PRAGMA foreign_keys=ON, which Open sets on every connection).

CREATE TABLE leases (
	ip          TEXT PRIMARY KEY,
	vm_id       TEXT NOT NULL UNIQUE REFERENCES vms (id) ON DELETE CASCADE,
	created_at  TEXT NOT NULL
);

-- Session metadata only: the live process and its output stay in the guest.
-- command and env_names are JSON arrays; env values are never stored.
CREATE TABLE sessions (
	vm_id        TEXT NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
	name         TEXT NOT NULL,
	command      TEXT NOT NULL,
	cwd          TEXT NOT NULL DEFAULT '',
	env_names    TEXT NOT NULL DEFAULT '[]',
	pty          INTEGER NOT NULL DEFAULT 0,
	state        TEXT NOT NULL,
	exit_code    INTEGER,
	diagnostics  TEXT NOT NULL DEFAULT '',
	created_at   TEXT NOT NULL,
	updated_at   TEXT NOT NULL,
	PRIMARY KEY (vm_id, name)
);

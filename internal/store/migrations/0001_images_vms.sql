-- 0001: images and the VMs built from them.
--
-- Times are TEXT in a fixed-width UTC form (see store.formatTime) so they sort
-- and read well in the sqlite3 shell. Only durable facts live here: a VM's
-- PID, tap and sockets belong to its handles, never to this database.

CREATE TABLE images (
	id          TEXT PRIMARY KEY,
	name        TEXT NOT NULL UNIQUE,
	dir         TEXT NOT NULL,
	source      TEXT NOT NULL DEFAULT '',
	size_bytes  INTEGER NOT NULL DEFAULT 0,
	manifest    TEXT NOT NULL DEFAULT '{}',
	created_at  TEXT NOT NULL
);

-- image_id is not a foreign key: a VM row is recorded (state creating) before
-- its image may have been pulled or built, and DeleteImage refuses to remove
-- an image that a VM still names.
CREATE TABLE vms (
	id             TEXT PRIMARY KEY,
	name           TEXT NOT NULL UNIQUE,
	image_id       TEXT NOT NULL DEFAULT '',
	vcpu           INTEGER NOT NULL CHECK (vcpu > 0),
	memory_mib     INTEGER NOT NULL CHECK (memory_mib > 0),
	disk_bytes     INTEGER NOT NULL CHECK (disk_bytes >= 0),
	vmm            TEXT NOT NULL,
	state          TEXT NOT NULL CHECK (state IN ('creating', 'running', 'stopped', 'failed')),
	desired_state  TEXT NOT NULL CHECK (desired_state IN ('running', 'stopped')),
	ip             TEXT NOT NULL DEFAULT '',
	mac            TEXT NOT NULL DEFAULT '',
	-- NULL until a vsock CID is assigned; unique among VMs once set.
	cid            INTEGER UNIQUE CHECK (cid IS NULL OR cid >= 3),
	agent_token    TEXT NOT NULL DEFAULT '',
	last_error     TEXT NOT NULL DEFAULT '',
	created_at     TEXT NOT NULL,
	updated_at     TEXT NOT NULL,
	-- NULL when the VM has never started.
	started_at     TEXT
);

CREATE INDEX vms_image_id ON vms (image_id);

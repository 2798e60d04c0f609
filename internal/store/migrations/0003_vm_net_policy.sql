-- A VM's egress policy (egress.Policy.Encode); '' is open, the policy of
-- every VM made before policies existed.
ALTER TABLE vms ADD COLUMN net_policy TEXT NOT NULL DEFAULT '';

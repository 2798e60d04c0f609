-- 0004: "lost" becomes a session state of its own.
--
-- A session the guest forgot while it ran (its agent restarted or the VM
-- rebooted) used to be stored as state 'exited' with no exit code and a
-- diagnostics text starting with "lost:". Those rows take the state
-- 'lost'; the prefix goes, the rest of the text stays as the diagnostics.
UPDATE sessions
SET state = 'lost',
    diagnostics = ltrim(substr(diagnostics, 6))
WHERE state = 'exited'
  AND exit_code IS NULL
  AND substr(diagnostics, 1, 5) = 'lost:';

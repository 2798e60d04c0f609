package hostnet

import (
	"os"
	"testing"
)

// privEnv makes the test binary act as `bangerd priv`, so the Sudo tests
// can run the real PrivMain through a stand-in sudo.
const privEnv = "BANGER_HOSTNET_TEST_PRIV"

func TestMain(m *testing.M) {
	if os.Getenv(privEnv) == "1" && len(os.Args) > 1 && os.Args[1] == "priv" {
		os.Exit(PrivMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}

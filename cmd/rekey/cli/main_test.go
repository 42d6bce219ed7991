package cli

import (
	"os"
	"testing"
)

// TestMain keeps the credentials chain away from the ECS metadata address: tests talk to loopback
// only, so a test without credentials must end at "none found", never at 100.100.100.200.
func TestMain(m *testing.M) {
	os.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	os.Exit(m.Run())
}

package e2e

import (
	"os"
	"testing"
)

// TestMain keeps the credentials chain away from the ECS metadata address: every request of these
// tests goes to loopback.
func TestMain(m *testing.M) {
	os.Setenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "true")
	os.Exit(m.Run())
}

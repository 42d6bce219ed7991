package faults

import (
	"testing"
)

// TestFaults runs every fault case (in parallel, two at a time on two cores) and then prints the
// report table.
func TestFaults(t *testing.T) {
	tb := &table{}
	cases := []struct {
		name string
		run  func(t *testing.T, order int, tb *table)
	}{
		{"apiserver-kill", caseAPIServerKill},
		{"etcd-restart", caseEtcdRestart},
		{"kms-down", caseKMSDown},
		{"key-disabled", caseKeyDisabled},
		{"proxy", caseProxy},
		{"functions", caseFunctions},
	}
	// The longest case (proxy: five phases, each after a rotation) starts first, so that the
	// others share the second core with it instead of running after it. The report keeps the
	// order above.
	longestFirst := []int{4, 0, 1, 2, 3, 5}
	if len(longestFirst) != len(cases) {
		t.Fatalf("longestFirst names %d cases of %d: every case must run", len(longestFirst), len(cases))
	}
	t.Run("case", func(t *testing.T) {
		for _, i := range longestFirst {
			c := cases[i]
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, i, tb)
			})
		}
	})
	tb.publish(t)
}

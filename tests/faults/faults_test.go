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
	t.Run("case", func(t *testing.T) {
		for i, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				c.run(t, i, tb)
			})
		}
	})
	tb.publish(t)
}

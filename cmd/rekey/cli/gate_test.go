package cli

import (
	"testing"
	"time"
)

func TestAdoptionFlagsValidate(t *testing.T) {
	ok := adoptionFlags{mode: "auto", settle: time.Minute, timeout: time.Minute, confirmations: 5}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []adoptionFlags{
		{mode: "sleep", settle: time.Minute, timeout: time.Minute, confirmations: 5},
		{mode: "etcd", settle: 0, timeout: time.Minute, confirmations: 5},
		{mode: "etcd", settle: time.Minute, timeout: time.Minute, confirmations: 0},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

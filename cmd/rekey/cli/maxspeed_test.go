package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunHelpDocumentsMaxSpeed(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"run", "--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"--max-speed", "maintenance windows", "adapts how many it sends"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run --help lacks %q", want)
		}
	}
	cmd := newRunCommand(&out, &errb)
	if err := cmd.ParseFlags([]string{"--max-speed"}); err != nil {
		t.Fatal(err)
	}
	if v, err := cmd.Flags().GetBool("max-speed"); err != nil || !v {
		t.Fatalf("--max-speed parsed as %v, %v", v, err)
	}
}

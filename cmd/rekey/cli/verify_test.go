package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rekey-dev/rekey/shared/etcdscan/etcdtest"
	"github.com/rekey-dev/rekey/shared/verify"
)

// TestVerifyStorageFlags drives the storage layer through the command line against a real etcd:
// --etcd-prefix is honoured, an empty prefix FAILs, identity values FAIL without a key, and a
// non-core resource is read from where the API server stores it.
func TestVerifyStorageFlags(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	c := etcdtest.Start(t)
	for _, k := range []string{"/registry/secrets/ns/a", "/registry/secrets/ns/b", "/registry/deployments/ns/web", "/custom/secrets/ns/c"} {
		if _, err := c.Put(t.Context(), k, "k8s\x00\n\x0c\n\x02v1\x12\x06Secret"); err != nil {
			t.Fatal(err)
		}
	}
	endpoint := "http://" + c.Endpoints()[0]
	run := func(args ...string) (int, verify.Report, string) {
		t.Helper()
		var out, errb bytes.Buffer
		code := Main(append([]string{"verify", "--etcd-endpoints", endpoint, "-o", "json"}, args...), &out, &errb)
		var r verify.Report
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("rekey verify %v: exit %d, stdout %q, stderr %q: %v", args, code, out.String(), errb.String(), err)
		}
		return code, r, errb.String()
	}

	code, r, _ := run("--etcd-prefix", "/nothing")
	storage := strings.Join(r.Layer(verify.LayerStorage).Reasons, " ")
	if code != ExitFailed || r.Verdict != verify.Fail || !strings.Contains(storage, "scanned 0 values under /nothing/secrets/") {
		t.Fatalf("empty prefix: exit %d verdict %s: %s", code, r.Verdict, storage)
	}
	if !r.LayersDefaulted || strings.Join(r.RequestedLayers, ",") != "storage" {
		t.Fatalf("layers %v (defaulted %v), want the storage layer by default", r.RequestedLayers, r.LayersDefaulted)
	}

	code, r, _ = run("--etcd-prefix", "/custom")
	if code != ExitFailed || len(r.Storage) != 1 || r.Storage[0].Prefix != "/custom/secrets/" || r.Storage[0].Total != 1 {
		t.Fatalf("custom prefix: exit %d, storage %+v", code, r.Storage)
	}

	code, r, _ = run()
	storage = strings.Join(r.Layer(verify.LayerStorage).Reasons, " ")
	if code != ExitFailed || !strings.Contains(storage, "2 of 2 values are stored unencrypted (identity)") {
		t.Fatalf("identity values without a key: exit %d: %s", code, storage)
	}

	code, r, _ = run("--resources", "deployments.apps", "--layers", "storage")
	if code != ExitFailed || len(r.Storage) != 1 || r.Storage[0].Prefix != "/registry/deployments/" || r.Storage[0].Total != 1 {
		t.Fatalf("deployments.apps: exit %d, storage %+v", code, r.Storage)
	}
	if r.LayersDefaulted {
		t.Fatal("--layers given, but the report says the layers were defaulted")
	}
}

func TestVerifyHelpNamesTheFlags(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"verify", "--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--layers", "--etcd-prefix", "--audit-user", "--audit-role", "no layer to FAIL", "deployments.apps", "90 days"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("verify --help lacks %q", want)
		}
	}
}

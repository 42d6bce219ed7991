package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

type ramPolicy struct {
	Version   string `json:"Version"`
	Statement []struct {
		Effect   string   `json:"Effect"`
		Action   []string `json:"Action"`
		Resource []string `json:"Resource"`
	} `json:"Statement"`
}

func readPolicy(t *testing.T, name string) ramPolicy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "infra", "ram", name))
	if err != nil {
		t.Fatal(err)
	}
	var p ramPolicy
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if p.Version != "1" || len(p.Statement) == 0 {
		t.Fatalf("%s: version %q, %d statements", name, p.Version, len(p.Statement))
	}
	return p
}

// TestFunctionPolicyIsLeastPrivilege pins what the functions' role may do: the KMS calls of the
// KMS guard and the verifier's canary on the watched keys only, ActionTrail lookups (which take no
// resource), the kubeconfig of the watched clusters only, and its own logs.
func TestFunctionPolicyIsLeastPrivilege(t *testing.T) {
	p := readPolicy(t, "function-policy.json")
	want := map[string]string{
		"kms:DescribeKey":                  "acs:kms:${Region}:${AccountId}:key/${KeyId}",
		"kms:ListKeyVersions":              "acs:kms:${Region}:${AccountId}:key/${KeyId}",
		"kms:GenerateDataKey":              "acs:kms:${Region}:${AccountId}:key/${KeyId}",
		"kms:Decrypt":                      "acs:kms:${Region}:${AccountId}:key/${KeyId}",
		"actiontrail:LookupEvents":         "*",
		"cs:DescribeClusterUserKubeconfig": "acs:cs:${Region}:${AccountId}:cluster/${ClusterId}",
		"log:PostLogStoreLogs":             "acs:log:${Region}:${AccountId}:project/${LogProject}/logstore/*",
	}
	got := map[string]string{}
	for _, s := range p.Statement {
		if s.Effect != "Allow" || len(s.Resource) != 1 {
			t.Fatalf("statement %+v: want one Allow resource", s)
		}
		for _, a := range s.Action {
			if strings.Contains(a, "*") {
				t.Fatalf("wildcard action %s", a)
			}
			got[a] = s.Resource[0]
		}
	}
	if len(got) != len(want) {
		t.Fatalf("actions %v, want %v", got, want)
	}
	for a, r := range want {
		if got[a] != r {
			t.Errorf("%s on %q, want %q", a, got[a], r)
		}
	}
	// Nothing that changes a key or a cluster.
	for a := range got {
		for _, bad := range []string{"Create", "Update", "Delete", "Disable", "Enable", "Encrypt", "Schedule"} {
			if strings.Contains(a, bad) {
				t.Errorf("action %s changes something", a)
			}
		}
	}
}

func TestDenyUpdateKMSEncryption(t *testing.T) {
	p := readPolicy(t, "deny-update-kms-encryption.json")
	if len(p.Statement) != 1 || p.Statement[0].Effect != "Deny" || !slices.Equal(p.Statement[0].Action, []string{"cs:UpdateKMSEncryption"}) {
		t.Fatalf("policy %+v", p)
	}
}

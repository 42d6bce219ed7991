package kmsapi_test

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

func TestPersistenceAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "kms-state.json")
	e := newEnv(t, func(o *kmsapi.Options) { o.StatePath = path })
	c := e.client(t, rootCred)

	mainKey := createKey(t, c, func(r *kms.CreateKeyRequest) {
		r.EnableAutomaticRotation = requests.NewBoolean(true)
		r.RotationInterval = "30d"
	})
	old, err := encrypt(c, mainKey.KeyId, "djE=", `{"k":"v"}`)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	e.clock.Step(time.Hour)
	v2 := createKeyVersion(t, c, mainKey.KeyId)
	second := createKey(t, c, nil)
	dis := kms.CreateDisableKeyRequest()
	dis.KeyId = second.KeyId
	if _, err := c.DisableKey(dis); err != nil {
		t.Fatalf("DisableKey: %v", err)
	}
	doomed := createKey(t, c, nil)
	sched := kms.CreateScheduleKeyDeletionRequest()
	sched.KeyId, sched.PendingWindowInDays = doomed.KeyId, "10"
	if _, err := c.ScheduleKeyDeletion(sched); err != nil {
		t.Fatalf("ScheduleKeyDeletion: %v", err)
	}
	alias := kms.CreateCreateAliasRequest()
	alias.AliasName, alias.KeyId = "alias/persisted", mainKey.KeyId
	if _, err := c.CreateAlias(alias); err != nil {
		t.Fatalf("CreateAlias: %v", err)
	}
	before := map[string]kms.KeyMetadata{}
	for _, id := range []string{mainKey.KeyId, second.KeyId, doomed.KeyId} {
		before[id] = describeKey(t, c, id)
	}
	versionsBefore := listKeyVersions(t, c, mainKey.KeyId)

	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("state dir holds %d entries (temporary files left behind?)", len(entries))
	}

	// A new server from the same file, as after a restart.
	e.ts.Close()
	srv2, err := kmsapi.NewServer(e.opts)
	if err != nil {
		t.Fatalf("NewServer from state: %v", err)
	}
	ts2 := httptest.NewServer(srv2)
	t.Cleanup(ts2.Close)
	c2 := e.client(t, rootCred)
	c2.Domain = strings.TrimPrefix(ts2.URL, "http://")

	for id, want := range before {
		if got := describeKey(t, c2, id); got != want {
			t.Fatalf("after restart DescribeKey(%s):\n got %+v\nwant %+v", id, got, want)
		}
	}
	if got := describeKey(t, c2, "alias/persisted"); got.KeyId != mainKey.KeyId {
		t.Fatalf("alias resolves to %s after restart", got.KeyId)
	}
	versionsAfter := listKeyVersions(t, c2, mainKey.KeyId)
	if len(versionsAfter) != len(versionsBefore) || versionsAfter[1] != versionsBefore[1] || versionsAfter[1].KeyVersionId != v2.KeyVersionId {
		t.Fatalf("versions after restart %+v, before %+v", versionsAfter, versionsBefore)
	}
	dec, err := decrypt(c2, old.CiphertextBlob, `{"k":"v"}`)
	if err != nil || dec.Plaintext != "djE=" || dec.KeyVersionId != mainKey.PrimaryKeyVersion {
		t.Fatalf("Decrypt of a pre-restart blob: %+v, %v", dec, err)
	}
	if _, err := encrypt(c2, second.KeyId, "eA==", ""); err == nil {
		t.Fatal("the disabled key is enabled after restart")
	}

	// The rotation schedule and the deletion window survive too.
	e.clock.Step(30 * 24 * time.Hour)
	if got := describeKey(t, c2, mainKey.KeyId); got.PrimaryKeyVersion == v2.KeyVersionId {
		t.Fatal("automatic rotation policy lost across restart")
	}
	req := kms.CreateDescribeKeyRequest()
	req.KeyId = doomed.KeyId
	_, err = c2.DescribeKey(req)
	wantServerError(t, err, kmsapi.CodeKeyNotFound, 404)
}

func TestPersistenceRejectsBadState(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, content string }{
		{"not json", "{"},
		{"future format", `{"format": 99, "keys": []}`},
		{"key without primary", `{"format":1,"keys":[{"keyId":"k","primaryKeyVersion":"v","versions":[]}]}`},
		{"short material", `{"format":1,"keys":[{"keyId":"k","primaryKeyVersion":"v","versions":[{"keyVersionId":"v","material":"AAAA"}]}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := kmsapi.NewServer(kmsapi.Options{StatePath: path, Credentials: []kmsapi.Credential{rootCred}}); err == nil {
				t.Fatal("NewServer accepted a bad state file")
			}
		})
	}
}

func TestNewServerRejectsMissingStateDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent", "state.json")
	if _, err := kmsapi.NewServer(kmsapi.Options{StatePath: path, Credentials: []kmsapi.Credential{rootCred}}); err == nil {
		t.Fatal("NewServer accepted a state file in a missing directory")
	}
}

func TestNewServerRejectsBadCredentials(t *testing.T) {
	sts := stsCred
	sts.SecurityToken = ""
	noRole := stsCred
	noRole.Identity.RoleName = ""
	weird := rootCred
	weird.Identity.Type = "robot"
	for _, tc := range []struct {
		name  string
		creds []kmsapi.Credential
	}{
		{"empty secret", []kmsapi.Credential{{AccessKeyID: "a", Identity: rootCred.Identity}}},
		{"duplicate", []kmsapi.Credential{rootCred, rootCred}},
		{"assumed role without token", []kmsapi.Credential{sts}},
		{"assumed role without role", []kmsapi.Credential{noRole}},
		{"unknown identity type", []kmsapi.Credential{weird}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := kmsapi.NewServer(kmsapi.Options{Credentials: tc.creds}); err == nil {
				t.Fatal("NewServer accepted bad credentials")
			}
		})
	}
}

func TestEnsureKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	opts := kmsapi.Options{StatePath: path, Credentials: []kmsapi.Credential{rootCred}}
	srv, err := kmsapi.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	id, created, err := srv.EnsureKey("alias/bootstrap")
	if err != nil || !created || id == "" {
		t.Fatalf("EnsureKey = %q, %v, %v", id, created, err)
	}
	if _, _, err := srv.EnsureKey("bootstrap"); err == nil {
		t.Fatal("EnsureKey accepted an alias without the alias/ prefix")
	}
	srv2, err := kmsapi.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	id2, created, err := srv2.EnsureKey("alias/bootstrap")
	if err != nil || created || id2 != id {
		t.Fatalf("EnsureKey after restart = %q, %v, %v; want %q, false", id2, created, err, id)
	}
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/services/kms"

	"github.com/rekey-dev/rekey/infra/local/kmsapi"
)

const credentialsJSON = `[
  {"accessKeyId": "LTAIcmdTEST", "accessKeySecret": "cmd-secret",
   "identity": {"type": "ram-user", "accountId": "5068000000000009", "principalId": "20001", "userName": "rekey"}},
  {"accessKeyId": "STS.cmdTEST", "accessKeySecret": "sts-secret", "securityToken": "CAIS-cmd",
   "identity": {"type": "assumed-role", "accountId": "5068000000000009", "roleName": "aliyuncsmanagedsecurityrole", "sessionName": "s"}}
]`

// startRun runs the command in-process and returns its ready line and a
// function that stops it and returns run's error.
func startRun(t *testing.T, args ...string) (ready, func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	line, err := bufio.NewReader(pr).ReadBytes('\n')
	if err != nil {
		cancel()
		t.Fatalf("no ready line: %v (run: %v)", err, <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	var r ready
	if err := json.Unmarshal(line, &r); err != nil {
		cancel()
		t.Fatalf("ready line %q: %v", line, err)
	}
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("run did not return after cancel")
			return nil
		}
	}
	t.Cleanup(func() { _ = stop() })
	return r, stop
}

func TestRunServesTheSDKAndKeepsItsKey(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds.json")
	if err := os.WriteFile(creds, []byte(credentialsJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.json")
	args := []string{"-listen", "127.0.0.1:0", "-state", state, "-credentials", creds,
		"-create-key", "-key-alias", "alias/cmd-test", "-region", "cn-beijing", "-rotation-check", "5ms"}

	r, stop := startRun(t, args...)
	if r.Listen == "" || r.KeyID == "" || r.KeyAlias != "alias/cmd-test" || r.Region != "cn-beijing" || r.StateFile != state {
		t.Fatalf("ready line %+v", r)
	}
	c, err := kms.NewClientWithStsToken("cn-beijing", "STS.cmdTEST", "sts-secret", "CAIS-cmd")
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = r.Listen
	enc := kms.CreateEncryptRequest()
	enc.KeyId, enc.Plaintext = "alias/cmd-test", "aGk="
	encResp, err := c.Encrypt(enc)
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	if encResp.KeyId != r.KeyID {
		t.Fatalf("alias resolved to %s, ready line said %s", encResp.KeyId, r.KeyID)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}

	// A restart from the same state reports the same key and decrypts old blobs.
	r2, stop2 := startRun(t, args...)
	if r2.KeyID != r.KeyID {
		t.Fatalf("after restart key %s, want %s", r2.KeyID, r.KeyID)
	}
	c.Domain = r2.Listen
	dec := kms.CreateDecryptRequest()
	dec.CiphertextBlob = encResp.CiphertextBlob
	decResp, err := c.Decrypt(dec)
	if err != nil || decResp.Plaintext != "aGk=" {
		t.Fatalf("Decrypt after restart: %+v, %v", decResp, err)
	}
	if err := stop2(); err != nil {
		t.Fatalf("run returned %v", err)
	}
}

func TestRunDefaultCredentialAndNoKey(t *testing.T) {
	r, stop := startRun(t)
	if r.KeyID != "" || r.StateFile != "" {
		t.Fatalf("ready line %+v", r)
	}
	dev := kmsapi.DevCredential()
	c, err := kms.NewClientWithAccessKey(kmsapi.DefaultRegion, dev.AccessKeyID, dev.AccessKeySecret)
	if err != nil {
		t.Fatal(err)
	}
	c.Domain = r.Listen
	if _, err := c.ListKeys(kms.CreateListKeysRequest()); err != nil {
		t.Fatalf("ListKeys with the development credential: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatalf("run returned %v", err)
	}
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	dir := t.TempDir()
	unknownField := filepath.Join(dir, "typo.json")
	if err := os.WriteFile(unknownField, []byte(`[{"accessKeyID":"x"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.json")
	if err := os.WriteFile(empty, []byte(`[]`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, args := range map[string][]string{
		"unknown flag":              {"-bogus"},
		"missing credentials file":  {"-credentials", filepath.Join(dir, "nope.json")},
		"credentials field typo":    {"-credentials", unknownField},
		"no credentials":            {"-credentials", empty},
		"bad alias":                 {"-create-key", "-key-alias", "no-prefix"},
		"unusable listen address":   {"-listen", "256.0.0.1:0"},
		"state in a missing folder": {"-create-key", "-state", filepath.Join(dir, "missing", "state.json")},
	} {
		t.Run(name, func(t *testing.T) {
			if err := run(context.Background(), args, io.Discard, io.Discard); err == nil {
				t.Fatal("run accepted a bad configuration")
			}
		})
	}
}

// TestMainExitsOnSIGTERM runs main() in a child process (this test binary)
// and stops it with SIGTERM.
func TestMainExitsOnSIGTERM(t *testing.T) {
	if os.Getenv("KMS_LOCAL_RUN_MAIN") == "1" {
		os.Args = []string{"kms-local", "-listen", "127.0.0.1:0"}
		main()
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestMainExitsOnSIGTERM$")
	cmd.Env = append(os.Environ(), "KMS_LOCAL_RUN_MAIN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("no ready line: %v", err)
	}
	var r ready
	if err := json.Unmarshal(line, &r); err != nil || r.Listen == "" {
		_ = cmd.Process.Kill()
		t.Fatalf("ready line %q: %v", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("kms-local exited with %v after SIGTERM", err)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("kms-local did not exit after SIGTERM")
	}
}

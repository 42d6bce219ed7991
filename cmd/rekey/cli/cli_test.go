package cli

import (
	"bytes"
	"strings"
	"testing"
)

func TestUsageErrors(t *testing.T) {
	t.Setenv("KUBECONFIG", "")
	t.Setenv("HOME", t.TempDir()) // no ~/.kube/config
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
	t.Setenv("ALIBABA_CLOUD_REGION_ID", "")
	for _, v := range []string{"REKEY_TARGETS", "REKEY_REGION", "REKEY_ACCOUNT_ID"} {
		t.Setenv(v, "")
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--output", "xml"}, "--output must be text or json"},
		{[]string{"run", "--concurrency", "0"}, "--concurrency must be between 1 and 1024"},
		{[]string{"run", "--page-size", "0"}, "--page-size"},
		{[]string{"run", "--strategy", "rotate"}, "unknown strategy"},
		{[]string{"run", "--log-level", "loud"}, "--log-level"},
		{[]string{"run", "--progress", "sometimes"}, "--progress"},
		{[]string{"run", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"run", "extra-arg"}, "unknown command or argument \"extra-arg\""},
		{[]string{"rotate"}, "unknown command or argument \"rotate\""},
		{[]string{"run", "--kubeconfig", "/nonexistent/kubeconfig"}, "kubeconfig /nonexistent/kubeconfig"},
		{[]string{"run", "--kms-key-id", "key-1"}, "--kms-region"},
		{[]string{"run", "--kms-key-id", "key-1", "--kms-region", "cn-hangzhou"}, "ALIBABA_CLOUD_ACCESS_KEY_ID"},
		{[]string{"verify"}, "nothing to verify"},
		{[]string{"verify", "--output", "yaml"}, "--output must be text or json"},
		{[]string{"verify", "--etcd-endpoints", "https://127.0.0.1:1"}, "--etcd-ca"},
		{[]string{"verify", "--etcd-endpoints", "http://127.0.0.1:1", "--etcd-prefix", "registry"}, "--etcd-prefix must start with /"},
		{[]string{"verify", "--layers", "storage"}, "layer storage needs --etcd-endpoints"},
		{[]string{"verify", "--layers", "kms"}, "layer kms needs --kms-key-id"},
		{[]string{"verify", "--layers", "audit", "--etcd-endpoints", "http://127.0.0.1:1"}, "layer audit needs --kms-key-id"},
		{[]string{"verify", "--layers", "storage,etcd", "--etcd-endpoints", "http://127.0.0.1:1"}, `unknown layer "etcd"`},
		{[]string{"verify", "--layers", "storage", "--convergence", "--etcd-endpoints", "http://127.0.0.1:1"}, "leave out --convergence and --audit"},
		{[]string{"verify", "--layers", "apiserver"}, "layer apiserver needs a kubeconfig (--kubeconfig or $KUBECONFIG)"},
		{[]string{"verify", "--audit-user", "k8s", "--audit-role", "r"}, "--audit-role or --audit-user, not both"},
		{[]string{"status", "-o", "yaml"}, `-o "yaml": want text or json`},
		{[]string{"status", "--max-behind", "0s"}, "--max-behind 0s"},
		{[]string{"status"}, "REKEY_TARGETS: is not set"},
		{[]string{"status", "--targets", "c1=key-1", "--region", "cn-hangzhou"}, "REKEY_ACCOUNT_ID"},
		{[]string{"status", "--targets", "c1", "--region", "cn-hangzhou", "--account-id", "5068000000000001"}, "REKEY_TARGETS"},
		{[]string{"status", "--kubeconfig", "c1"}, `--kubeconfig "c1": want CLUSTER=PATH`},
		{[]string{"history", "-o", "pdf"}, `-o "pdf": want markdown, csv or json`},
		{[]string{"history", "--since", "yesterday"}, `"yesterday" is neither an RFC 3339 time nor a positive duration`},
		{[]string{"history", "extra"}, `unknown command or argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(tt.args, &out, &errb)
			if code != ExitUsage || !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d mentioning %q", code, errb.String(), ExitUsage, tt.want)
			}
			if out.Len() != 0 {
				t.Fatalf("stdout should stay empty on usage errors, got %q", out.String())
			}
		})
	}
}

func TestMissingCredentialsNeverEchoSecrets(t *testing.T) {
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.abc")
	t.Setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "very-secret-value")
	t.Setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "")
	var out, errb bytes.Buffer
	code := Main([]string{"verify", "--kms-key-id", "k", "--kms-region", "cn-hangzhou"}, &out, &errb)
	if code != ExitUsage || !strings.Contains(errb.String(), "ALIBABA_CLOUD_SECURITY_TOKEN") {
		t.Fatalf("exit %d stderr %q", code, errb.String())
	}
	if strings.Contains(errb.String(), "very-secret-value") {
		t.Fatal("the secret was printed")
	}
}

func TestHelpListsCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := Main([]string{"--help"}, &out, &errb); code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"run", "verify", "status", "history"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("help lacks %q: %s", want, out.String())
		}
	}
}

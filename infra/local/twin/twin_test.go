package twin

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aliyun/alibaba-cloud-sdk-go/sdk/requests"
	sdkcs "github.com/aliyun/alibaba-cloud-sdk-go/services/cs"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rekey-dev/rekey/infra/local/kmsstack"
	"github.com/rekey-dev/rekey/shared/events"
	"github.com/rekey-dev/rekey/shared/storedvalue"
)

// answer is what testdata/twinfunc returns.
type answer struct {
	Payload     json.RawMessage `json:"payload"`
	Targets     string          `json:"targets"`
	Scheme      string          `json:"scheme"`
	CSEndpoint  string          `json:"csEndpoint"`
	Webhook     bool            `json:"webhook"`
	HasSTS      bool            `json:"hasSts"`
	Function    string          `json:"function"`
	DeadlineSet bool            `json:"deadlineSet"`
}

func decodeAnswer(t *testing.T, c Invocation) answer {
	t.Helper()
	if c.Result.Error != nil {
		t.Fatalf("%s: %v", c.Function, c.Result.Error)
	}
	var a answer
	if err := json.Unmarshal(c.Result.Body, &a); err != nil {
		t.Fatalf("%s answered %q: %v", c.Function, c.Result.Body, err)
	}
	return a
}

// TestTwinHarness runs the repository's s.yaml on the twin with a stand-in function binary in
// place of both functions: KMS records reach the function through the s.yaml pattern, timers fire
// with a chosen triggerTime, the environment points at the local endpoints, the CS stand-in hands
// the function's credential a kubeconfig bound by exactly the functions' RBAC, alerts are
// captured, and Leaks finds a credential a function echoes.
func TestTwinHarness(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "main")
	build := exec.Command("go", "build", "-o", bin, "./testdata/twinfunc")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build twinfunc: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tw, err := Start(ctx, Options{Binaries: map[string]string{"rotation": bin, "offpeak": bin},
		Timeouts: map[string]time.Duration{"rekey-offpeak": 5 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tw.Stop(); err != nil {
			t.Error(err)
		}
	})
	if len(tw.Functions) != 2 || tw.Functions[0].Name != "rekey-offpeak" || tw.Functions[0].Timeout != 5*time.Second ||
		tw.Functions[1].Name != "rekey-rotation" || tw.Functions[1].Timeout != 120*time.Second {
		t.Fatalf("functions %+v", tw.Functions)
	}
	if got := tw.Timers(); !slices.Equal(got, []string{OffPeakTimer, WatchTimer}) {
		t.Fatalf("timers %v", got)
	}

	// Secrets are encrypted at rest by the KMS stack.
	admin, err := tw.AdminClient()
	if err != nil {
		t.Fatal(err)
	}
	v1, err := tw.KMS.PrimaryVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "harness", Namespace: "default"}, Data: map[string][]byte{"v": []byte("harness-secret-value")}}
	if _, err := admin.CoreV1().Secrets("default").Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	raw, err := tw.Cluster.EtcdValue(ctx, "/registry/secrets/default/harness")
	if err != nil {
		t.Fatal(err)
	}
	// The ACK-shaped twin: the plugins' key_id is not the version ID, and two API servers serve
	// behind the load balancer.
	if v, err := storedvalue.Classify(raw); err != nil || v.Provider != storedvalue.KMSv2 || v.KeyName != kmsstack.ProviderName ||
		v.KeyID != tw.KeyIDFor(v1) || v.KeyID == v1 {
		t.Fatalf("stored value %+v (%v), want KMS v2 under %s's opaque key_id %s", v, err, v1, tw.KeyIDFor(v1))
	}
	if n := len(tw.Cluster.Replicas()); n != 2 {
		t.Fatalf("%d API server replicas, want 2", n)
	}

	// CreateKeyVersion through the SDK reaches the rotation function as a CloudEvent.
	v2, err := tw.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	calls := tw.Invocations()
	if len(calls) != 1 || calls[0].Function != "rekey-rotation" || calls[0].Trigger != "kms-actiontrail" {
		t.Fatalf("after CreateKeyVersion: invocations %+v", calls)
	}
	a := decodeAnswer(t, calls[0])
	var ev events.CloudEvent
	if err := json.Unmarshal(a.Payload, &ev); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		EventName        string            `json:"eventName"`
		ResponseElements map[string]string `json:"responseElements"`
	}
	if err := json.Unmarshal(ev.Data, &rec); err != nil {
		t.Fatal(err)
	}
	if ev.Source != "acs.kms" || ev.Type != "kms:ActionTrail:ApiCall" || rec.EventName != "CreateKeyVersion" || !strings.Contains(string(ev.Data), v2) {
		t.Fatalf("event %s %s %s: %s", ev.Source, ev.Type, rec.EventName, ev.Data)
	}
	if a.Targets != tw.ClusterID+"="+tw.KMS.KeyID || a.Scheme != "HTTP" || a.CSEndpoint != tw.CSEndpoint || !a.Webhook || !a.HasSTS || !a.DeadlineSet {
		t.Fatalf("function ran with %+v", a)
	}

	// Muted, KMS changes reach nobody.
	tw.MuteEvents(true)
	if _, err := tw.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	tw.MuteEvents(false)
	if n := len(tw.Invocations()); n != 1 {
		t.Fatalf("%d invocations after a muted rotation, want 1", n)
	}

	// The timer fires with the chosen triggerTime, inside the window.
	at, err := tw.WindowTime(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := tw.Tick(ctx, at)
	if err != nil || len(ticks) != 1 || ticks[0].Function != "rekey-offpeak" {
		t.Fatalf("tick: %v, %+v", err, ticks)
	}
	var timer events.Timer
	if err := json.Unmarshal(decodeAnswer(t, ticks[0]).Payload, &timer); err != nil || !timer.TriggerTime.Equal(at) || timer.TriggerName != "offpeak" {
		t.Fatalf("timer payload %+v (%v), want triggerTime %s", timer, err, at)
	}
	if out, _ := tw.OutsideWindowTime(time.Now()); tw.windowContains(t, out) || !tw.windowContains(t, at) {
		t.Fatalf("window times: inside %s, outside %s", at, out)
	}

	// A failing event is retried as s.yaml's asyncInvokeConfig says (3 retries).
	_, inv, err := tw.Publish(ctx, events.CloudEvent{Source: "acs.kms", Type: "kms:ActionTrail:ApiCall",
		Data: json.RawMessage(`{"eventName":"DisableKey","note":"please-fail"}`)})
	if err == nil || len(inv) != 4 || inv[3].Result.RetryCount != 3 {
		t.Fatalf("failing event: %v, %d attempts", err, len(inv))
	}

	// The functions' credential gets the kubeconfig from the CS stand-in; its identity has exactly
	// the functions' RBAC.
	cs := csKubeconfigClient(t, tw)
	for _, c := range []struct {
		attrs authorizationv1.ResourceAttributes
		want  bool
	}{
		{authorizationv1.ResourceAttributes{Verb: "patch", Resource: "secrets", Namespace: "payments"}, true},
		{authorizationv1.ResourceAttributes{Verb: "create", Group: "coordination.k8s.io", Resource: "leases", Namespace: "rekey-system"}, true},
		{authorizationv1.ResourceAttributes{Verb: "list", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system"}, true},
		{authorizationv1.ResourceAttributes{Verb: "get", Group: "coordination.k8s.io", Resource: "leases", Namespace: "kube-system"}, false},
		{authorizationv1.ResourceAttributes{Verb: "delete", Resource: "secrets", Namespace: "payments"}, false},
		{authorizationv1.ResourceAttributes{Verb: "create", Resource: "namespaces"}, false},
	} {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &c.attrs}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.want {
			t.Errorf("%+v allowed=%v, want %v", c.attrs, r.Status.Allowed, c.want)
		}
	}

	// As on ACK, the cluster knows the functions' identity by their RAM role's numeric ID
	// (`kubectl auth whoami`), and the shipped RBAC binds exactly that.
	who, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || who.Status.UserInfo.Username != FunctionRoleID {
		t.Fatalf("whoami: %+v (%v), want the role ID %s", who, err, FunctionRoleID)
	}

	// The webhook keeps what is posted with its token and refuses the rest.
	post := func(url string) int {
		resp, err := http.Post(url, "application/json", strings.NewReader(`{"title":"hello"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if post(tw.Webhook.URL) != 200 || post(strings.Replace(tw.Webhook.URL, tw.Webhook.Token, "wrong", 1)) != 403 {
		t.Fatal("webhook answers")
	}
	if al, err := tw.Webhook.Wait(ctx, 1); err != nil || len(al) != 1 || !bytes.Contains(al[0].Body, []byte("hello")) || tw.Webhook.Refused() != 1 {
		t.Fatalf("alerts %v %v, refused %d", al, err, tw.Webhook.Refused())
	}

	// Nothing so far leaked; a function echoing the STS token, or a Secret's value, is caught.
	if leaks := tw.Leaks(map[string][]byte{"Secret default/harness": sec.Data["v"]}); len(leaks) != 0 {
		t.Fatalf("leaks: %v", leaks)
	}
	if _, _, err := tw.Publish(ctx, events.CloudEvent{Source: "acs.kms", Type: "kms:ActionTrail:ApiCall",
		Data: json.RawMessage(`{"eventName":"EnableKey","x":"` + tw.FunctionCredential.SecurityToken + `"}`)}); err != nil {
		t.Fatal(err)
	}
	leaks := tw.Leaks(map[string][]byte{"Secret default/harness": sec.Data["v"]})
	if len(leaks) != 1 || !strings.Contains(leaks[0], "function STS token") || strings.Contains(leaks[0], tw.FunctionCredential.SecurityToken) {
		t.Fatalf("leaks after echoing the token: %v", leaks)
	}
	if _, _, err := tw.Publish(ctx, events.CloudEvent{Source: "acs.kms", Type: "kms:ActionTrail:ApiCall",
		Data: json.RawMessage(`{"eventName":"EnableKey","x":"harness-secret-value"}`)}); err != nil {
		t.Fatal(err)
	}
	if leaks := tw.Leaks(map[string][]byte{"Secret default/harness": sec.Data["v"]}); len(leaks) != 2 {
		t.Fatalf("leaks after echoing a Secret value: %v", leaks)
	}
	if errs := tw.BridgeErrors(); len(errs) != 0 {
		t.Fatalf("bridge errors: %v", errs)
	}
}

func (tw *Twin) windowContains(t *testing.T, at time.Time) bool {
	t.Helper()
	in, err := tw.WindowTime(at)
	if err != nil {
		t.Fatal(err)
	}
	return in.Equal(at)
}

// csKubeconfigClient asks the CS stand-in for the cluster's kubeconfig with the functions'
// credential and the unmodified SDK, and returns a clientset of it.
func csKubeconfigClient(t *testing.T, tw *Twin) kubernetes.Interface {
	t.Helper()
	cred := tw.FunctionCredential
	client, err := sdkcs.NewClientWithStsToken(tw.KMS.Region, cred.AccessKeyID, cred.AccessKeySecret, cred.SecurityToken)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(tw.CSEndpoint)
	req := sdkcs.CreateDescribeClusterUserKubeconfigRequest()
	req.Domain, req.Port, req.Scheme = host, port, "HTTP"
	req.ClusterId = tw.ClusterID
	req.PrivateIpAddress = requests.NewBoolean(true)
	req.QueryParams["TemporaryDurationMinutes"] = "15"
	resp, err := client.DescribeClusterUserKubeconfig(req)
	if err != nil {
		t.Fatalf("DescribeClusterUserKubeconfig: %v", err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(resp.Config))
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

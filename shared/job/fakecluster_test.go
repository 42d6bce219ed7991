package job

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rekey-dev/rekey/shared/replicas"
)

// fakeAPIServerID is the fake cluster's one API server (its identity Lease name).
const fakeAPIServerID = "apiserver-fake0"

// fakeCluster is a tiny API server for the job's logic: discovery of secrets, access reviews that
// allow everything, /readyz/kms-providers, and a secrets API with paged lists (the continue token
// is the next key), GET, and merge patches with a resourceVersion precondition that rewrite only
// stale objects. What the real API server decides is tested end to end in tests/e2e.
type fakeCluster struct {
	t  *testing.T
	mu sync.Mutex
	// objs by "ns/name"; stale marks the objects a no-op patch rewrites.
	objs  map[string]int
	stale map[string]bool
	rv    int
	// lists records the continue token of every secrets list; patches counts PATCH requests.
	lists   []string
	patches int
	// patchDelay slows every patch (a busy API server; set it with setPatchDelay while requests may
	// be in flight); onList runs before each list is answered.
	patchDelay time.Duration
	onList     func(cont string)
	// noLeases makes the identity Lease list forbidden (the replicas cannot be counted).
	noLeases bool
	// apfFlowSchema, when set, is the FlowSchema UID every answer names (APF on); flowSchemaRekey
	// is the UID of the FlowSchema named rekey ("": it does not exist).
	apfFlowSchema, flowSchemaRekey string
	// tooMany answers that many patches 429 with Retry-After: 0 before serving them (APF's queues
	// full; client-go retries them on its own).
	tooMany int
	srv     *httptest.Server
}

func newFakeCluster(t *testing.T, n int) *fakeCluster {
	f := &fakeCluster{t: t, objs: map[string]int{}, stale: map[string]bool{}}
	for i := range n {
		f.rv++
		k := fmt.Sprintf("a/s-%04d", i)
		f.objs[k], f.stale[k] = f.rv, true
	}
	f.srv = httptest.NewServer(f)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCluster) rest() *rest.Config { return &rest.Config{Host: f.srv.URL, QPS: -1} }

// setPatchDelay changes patchDelay, also while patches of an earlier run are still being answered.
func (f *fakeCluster) setPatchDelay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.patchDelay = d
}

// listTokens returns the continue tokens of the secrets lists so far.
func (f *fakeCluster) listTokens() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lists...)
}

// staleCount returns how many objects are stale.
func (f *fakeCluster) staleCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.stale {
		if s {
			n++
		}
	}
	return n
}

func (f *fakeCluster) setStale(keys ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range keys {
		f.stale[k] = true
	}
}

func (f *fakeCluster) patchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.patches
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func (f *fakeCluster) meta(k string) metav1.PartialObjectMetadata {
	ns, name, _ := strings.Cut(k, "/")
	return metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: strconv.Itoa(f.objs[k])},
	}
}

func (f *fakeCluster) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	if f.apfFlowSchema != "" {
		w.Header().Set("X-Kubernetes-PF-FlowSchema-UID", f.apfFlowSchema)
		w.Header().Set("X-Kubernetes-PF-PriorityLevel-UID", "pl-"+f.apfFlowSchema)
	}
	switch {
	case p == "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/rekey":
		if f.flowSchemaRekey == "" {
			status(w, 404, metav1.StatusReasonNotFound, `flowschemas.flowcontrol.apiserver.k8s.io "rekey" not found`)
			return
		}
		writeJSON(w, 200, map[string]any{"kind": "FlowSchema", "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
			"metadata": map[string]any{"name": "rekey", "uid": f.flowSchemaRekey},
			"spec":     map[string]any{"priorityLevelConfiguration": map[string]any{"name": "rekey"}}})
		return
	case p == "/version":
		writeJSON(w, 200, version.Info{GitVersion: "v1.37.2", Major: "1", Minor: "37"})
		return
	case p == "/api":
		writeJSON(w, 200, metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"}})
		return
	case p == "/apis":
		writeJSON(w, 200, metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}})
		return
	case p == "/api/v1":
		writeJSON(w, 200, metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: "v1",
			APIResources: []metav1.APIResource{{Name: "secrets", Namespaced: true, Kind: "Secret", Verbs: []string{"get", "list", "patch"}}}})
		return
	case strings.HasSuffix(p, "/selfsubjectaccessreviews"):
		writeJSON(w, 201, map[string]any{"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1", "status": map[string]any{"allowed": true}})
		return
	case p == "/readyz/kms-providers":
		w.WriteHeader(200)
		_, _ = w.Write([]byte("[+]kms-providers ok\nok\n"))
		return
	case p == "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases":
		if f.noLeases {
			status(w, 403, metav1.StatusReasonForbidden, `leases.coordination.k8s.io is forbidden: User "rekey" cannot list resource "leases"`)
			return
		}
		// One API server: its identity Lease, renewed just now.
		now := metav1.NewMicroTime(time.Now())
		writeJSON(w, 200, coordinationv1.LeaseList{TypeMeta: metav1.TypeMeta{Kind: "LeaseList", APIVersion: "coordination.k8s.io/v1"},
			Items: []coordinationv1.Lease{{ObjectMeta: metav1.ObjectMeta{Name: fakeAPIServerID, Namespace: "kube-system",
				Labels: map[string]string{"apiserver.kubernetes.io/identity": "kube-apiserver"}}, Spec: coordinationv1.LeaseSpec{RenewTime: &now}}}})
		return
	case p == "/metrics":
		fmt.Fprintf(w, "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{apiserver_id_hash=%q,key_id_hash=\"sha256:00\",provider_name=\"fake\"} 1.7e+09\n",
			replicas.HashID(fakeAPIServerID))
		return
	}
	// /api/v1/secrets or /api/v1/namespaces/NS/secrets[/NAME]
	parts := strings.Split(strings.TrimPrefix(p, "/api/v1/"), "/")
	var ns, name string
	switch {
	case len(parts) == 1 && parts[0] == "secrets":
	case len(parts) == 3 && parts[0] == "namespaces" && parts[2] == "secrets":
		ns = parts[1]
	case len(parts) == 4 && parts[0] == "namespaces" && parts[2] == "secrets":
		ns, name = parts[1], parts[3]
	default:
		status(w, 404, metav1.StatusReasonNotFound, "no route "+p)
		return
	}
	if name == "" {
		cont := r.URL.Query().Get("continue")
		if f.onList != nil {
			f.onList(cont)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.lists = append(f.lists, cont)
		f.list(w, r, ns)
		return
	}
	f.mu.Lock()
	delay := f.patchDelay
	f.mu.Unlock()
	if r.Method == http.MethodPatch && delay > 0 {
		time.Sleep(delay) // a busy API server: patches are in flight when the job stops
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.Method == http.MethodPatch && f.tooMany > 0 {
		f.tooMany--
		w.Header().Set("Retry-After", "0")
		status(w, 429, metav1.StatusReasonTooManyRequests, "too many requests, please try again later")
		return
	}
	k := ns + "/" + name
	rv, ok := f.objs[k]
	if !ok {
		status(w, 404, metav1.StatusReasonNotFound, "secrets \""+name+"\" not found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, 200, f.meta(k))
	case http.MethodPatch:
		f.patches++
		var body struct {
			Metadata struct {
				ResourceVersion string `json:"resourceVersion"`
			} `json:"metadata"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			status(w, 400, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		if body.Metadata.ResourceVersion != strconv.Itoa(rv) {
			status(w, 409, metav1.StatusReasonConflict, "the object has been modified")
			return
		}
		if f.stale[k] {
			f.rv++
			f.objs[k], f.stale[k] = f.rv, false
		}
		writeJSON(w, 200, f.meta(k))
	default:
		status(w, 405, metav1.StatusReasonMethodNotAllowed, r.Method)
	}
}

func (f *fakeCluster) list(w http.ResponseWriter, r *http.Request, ns string) {
	q := r.URL.Query()
	var keys []string
	for k := range f.objs {
		if ns == "" || strings.HasPrefix(k, ns+"/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	start := 0
	if c := q.Get("continue"); c != "" {
		start = sort.SearchStrings(keys, c)
	}
	limit, _ := strconv.Atoi(q.Get("limit"))
	end := len(keys)
	if limit > 0 && start+limit < end {
		end = start + limit
	}
	out := metav1.PartialObjectMetadataList{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadataList", APIVersion: "meta.k8s.io/v1"}}
	out.ResourceVersion = strconv.Itoa(f.rv)
	for _, k := range keys[start:end] {
		out.Items = append(out.Items, f.meta(k))
	}
	if end < len(keys) {
		out.Continue = keys[end]
		rem := int64(len(keys) - end)
		out.RemainingItemCount = &rem
	}
	writeJSON(w, 200, out)
}

// rvClient is a fake clientset that stamps resourceVersions and enforces them as update
// preconditions (409 on a stale one), like the API server, so the state's optimistic concurrency
// works as it does for real.
func rvClient() *fake.Clientset {
	cs := fake.NewClientset()
	var mu sync.Mutex
	next := int64(100)
	cs.PrependReactor("*", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		switch a.GetVerb() {
		case "create":
			m, err := meta.Accessor(a.(k8stesting.CreateAction).GetObject())
			if err != nil {
				return true, nil, err
			}
			next++
			m.SetResourceVersion(strconv.FormatInt(next, 10))
		case "update":
			m, err := meta.Accessor(a.(k8stesting.UpdateAction).GetObject())
			if err != nil {
				return true, nil, err
			}
			cur, err := cs.Tracker().Get(a.GetResource(), a.GetNamespace(), m.GetName())
			if err != nil {
				return true, nil, err
			}
			cm, _ := meta.Accessor(cur)
			if m.GetResourceVersion() != "" && m.GetResourceVersion() != cm.GetResourceVersion() {
				return true, nil, apierrors.NewConflict(a.GetResource().GroupResource(), m.GetName(), errors.New("the object has been modified"))
			}
			next++
			m.SetResourceVersion(strconv.FormatInt(next, 10))
		}
		return false, nil, nil
	})
	return cs
}

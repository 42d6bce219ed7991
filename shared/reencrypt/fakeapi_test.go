package reencrypt

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// fakeAPI is a tiny secrets API for engine logic tests: paged lists, GET, and merge patches with a
// resourceVersion precondition. Behaviour that the real API server decides (staleness, storage) is
// tested end to end against a real kube-apiserver in tests/e2e. hook may answer a request itself.
type fakeAPI struct {
	t     *testing.T
	mu    sync.Mutex
	objs  map[string]*fakeObj // "ns/name"
	rv    int
	stale map[string]bool // objects a no-op patch rewrites
	hook  func(w http.ResponseWriter, r *http.Request, key string) bool
	calls map[string]int // "VERB ns/name" and "LIST"
}

type fakeObj struct {
	ns, name string
	rv       int
	ann      map[string]string
}

func newFakeAPI(t *testing.T, n int, namespaces ...string) *fakeAPI {
	f := &fakeAPI{t: t, objs: map[string]*fakeObj{}, stale: map[string]bool{}, calls: map[string]int{}}
	for i := range n {
		ns := namespaces[i%len(namespaces)]
		f.rv++
		name := fmt.Sprintf("s-%04d", i)
		f.objs[ns+"/"+name] = &fakeObj{ns: ns, name: name, rv: f.rv}
		f.stale[ns+"/"+name] = true
	}
	return f
}

// callCount returns how often a call was made ("LIST" or "VERB ns/name"); safe while requests run.
func (f *fakeAPI) callCount(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[k]
}

// patchCount returns the number of PATCH requests.
func (f *fakeAPI) patchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, v := range f.calls {
		if strings.HasPrefix(k, "PATCH") {
			n += v
		}
	}
	return n
}

func (f *fakeAPI) client(t *testing.T) metadata.Interface {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	c, err := metadata.NewForConfig(&rest.Config{Host: srv.URL, QPS: -1})
	if err != nil {
		t.Fatalf("metadata client: %v", err)
	}
	return c
}

func (f *fakeAPI) meta(o *fakeObj) metav1.PartialObjectMetadata {
	return metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: o.ns, Name: o.name, ResourceVersion: strconv.Itoa(o.rv), Annotations: o.ann},
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func status(w http.ResponseWriter, code int, reason metav1.StatusReason, msg string) {
	writeJSON(w, code, metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: int32(code), Reason: reason, Message: msg})
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// /api/v1/secrets or /api/v1/namespaces/NS/secrets[/NAME]
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/api/v1/"), "/")
	var ns, name string
	switch {
	case len(parts) == 1 && parts[0] == "secrets":
	case len(parts) == 3 && parts[0] == "namespaces" && parts[2] == "secrets":
		ns = parts[1]
	case len(parts) == 4 && parts[0] == "namespaces" && parts[2] == "secrets":
		ns, name = parts[1], parts[3]
	default:
		status(w, 404, metav1.StatusReasonNotFound, "no route "+r.URL.Path)
		return
	}
	key := ns + "/" + name
	f.mu.Lock()
	if name == "" {
		f.calls["LIST"]++
	} else {
		f.calls[r.Method+" "+key]++
	}
	f.mu.Unlock()
	if f.hook != nil && f.hook(w, r, key) {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if name == "" {
		f.list(w, r, ns)
		return
	}
	o, ok := f.objs[key]
	if !ok {
		status(w, 404, metav1.StatusReasonNotFound, "secrets \""+name+"\" not found")
		return
	}
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, 200, f.meta(o))
	case http.MethodPatch:
		var p struct {
			Metadata struct {
				ResourceVersion string            `json:"resourceVersion"`
				Annotations     map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			status(w, 400, metav1.StatusReasonBadRequest, err.Error())
			return
		}
		if p.Metadata.ResourceVersion != "" && p.Metadata.ResourceVersion != strconv.Itoa(o.rv) {
			status(w, 409, metav1.StatusReasonConflict, "the object has been modified")
			return
		}
		changed := f.stale[key]
		for k, v := range p.Metadata.Annotations {
			if o.ann == nil {
				o.ann = map[string]string{}
			}
			if o.ann[k] != v {
				o.ann[k], changed = v, true
			}
		}
		if changed {
			f.rv++
			o.rv = f.rv
			f.stale[key] = false
		}
		writeJSON(w, 200, f.meta(o))
	default:
		status(w, 405, metav1.StatusReasonMethodNotAllowed, r.Method)
	}
}

func (f *fakeAPI) list(w http.ResponseWriter, r *http.Request, ns string) {
	q := r.URL.Query()
	var keys []string
	excluded := map[string]bool{}
	for _, term := range strings.Split(q.Get("fieldSelector"), ",") {
		if v, ok := strings.CutPrefix(term, "metadata.namespace!="); ok {
			excluded[v] = true
		}
	}
	for k, o := range f.objs {
		if (ns == "" || o.ns == ns) && !excluded[o.ns] {
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
		out.Items = append(out.Items, f.meta(f.objs[k]))
	}
	if end < len(keys) {
		out.Continue = keys[end]
		rem := int64(len(keys) - end)
		out.RemainingItemCount = &rem
	}
	writeJSON(w, 200, out)
}

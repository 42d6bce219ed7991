package apf

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"
)

// fakeServer answers /version with the given FlowSchema UID header ("" for none) and FlowSchema
// rekey with status (200: UID fsUID, priority level "rekey").
func fakeServer(t *testing.T, header string, status int, fsUID string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/version":
			if header != "" {
				w.Header().Set(HeaderFlowSchemaUID, header)
				w.Header().Set(HeaderPriorityLevelUID, "pl-"+header)
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"major":"1","minor":"37","gitVersion":"v1.37.2"}`))
		case "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/rekey":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			if status != http.StatusOK {
				_ = json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": status,
					"reason": map[int]string{404: "NotFound", 403: "Forbidden"}[status]})
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"kind": "FlowSchema", "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
				"metadata": map[string]any{"name": "rekey", "uid": fsUID},
				"spec":     map[string]any{"priorityLevelConfiguration": map[string]any{"name": "rekey"}, "matchingPrecedence": 8000}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestProbe(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		status       int
		fsUID        string
		ours         bool
		reason       string
	}{
		{"rekey's FlowSchema in charge", "uid-1", 200, "uid-1", true, ""},
		{"APF off", "", 200, "uid-1", false, "no X-Kubernetes-PF-FlowSchema-UID header"},
		{"FlowSchema missing", "uid-2", 404, "", false, "FlowSchema rekey does not exist: apply infra/apf/rekey-apf.yaml"},
		{"may not read it", "uid-2", 403, "", false, "may not read FlowSchema rekey"},
		{"another schema first", "uid-exempt", 200, "uid-1", false, "classified by another FlowSchema (UID uid-exempt)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := fakeServer(t, tc.header, tc.status, tc.fsUID)
			c, err := Probe(context.Background(), &rest.Config{Host: srv.URL})
			if err != nil {
				t.Fatal(err)
			}
			if c.Ours != tc.ours || !strings.Contains(c.Reason, tc.reason) || (tc.ours && c.Reason != "") {
				t.Fatalf("got %+v, want ours %v and a reason containing %q", c, tc.ours, tc.reason)
			}
			if tc.ours && (c.PriorityLevel != "rekey" || c.PriorityLevelUID != "pl-uid-1") {
				t.Fatalf("got %+v, want priority level rekey (pl-uid-1)", c)
			}
		})
	}
}

func TestProbeUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	if _, err := Probe(context.Background(), &rest.Config{Host: srv.URL}); err == nil || !strings.Contains(err.Error(), "apf probe") {
		t.Fatalf("err %v, want an apf probe error", err)
	}
}

func TestSignalsReportEvery429(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1)%2 == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	var s Signals
	var sunk atomic.Int64
	s.SetSink(func() { sunk.Add(1) })
	hc := &http.Client{Transport: s.Wrap(http.DefaultTransport)}
	for range 6 {
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	if s.TooManyRequests() != 3 || sunk.Load() != 3 {
		t.Fatalf("counted %d, sunk %d: want the 3 429s of 6 answers", s.TooManyRequests(), sunk.Load())
	}
	s.SetSink(nil)
	resp, err := hc.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if s.TooManyRequests() != 4 || sunk.Load() != 3 {
		t.Fatalf("counted %d, sunk %d: want 4 counted and no sink after SetSink(nil)", s.TooManyRequests(), sunk.Load())
	}
	if rt, ok := s.Wrap(http.DefaultTransport).(interface{ WrappedRoundTripper() http.RoundTripper }); !ok || rt.WrappedRoundTripper() != http.DefaultTransport {
		t.Fatal("the wrapper does not expose the transport underneath")
	}
}

package apimetrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
)

// A /metrics excerpt shaped like kube-apiserver v1.37's: three API servers (a, b, c) behind one
// load balancer would never show in one scrape, but the parser and the reduction must not care.
// Server a moved from key v1 to v2; b still reports v1; c reports v2 but wrote with v1 after that
// Status call; d is another provider's series.
func fixture() string {
	v1, v2 := HashKeyID("v1"), HashKeyID("v2")
	a, b, c := HashKeyID("apiserver-a"), HashKeyID("apiserver-b"), HashKeyID("apiserver-c")
	return strings.Join([]string{
		"# HELP apiserver_envelope_encryption_dek_source_cache_size [ALPHA] Number of records in data encryption key (DEK) source cache.",
		"# TYPE apiserver_envelope_encryption_dek_source_cache_size gauge",
		`apiserver_envelope_encryption_dek_source_cache_size{provider_name="alibaba-kms"} 2`,
		"# HELP " + UseMetric + " [ALPHA] The last time in seconds when a keyID was used.",
		"# TYPE " + UseMetric + " gauge",
		UseMetric + `{apiserver_id_hash="` + a + `",key_id_hash="` + v1 + `",provider_name="alibaba-kms",transformation_type="to_storage"} 1.7e+09`,
		UseMetric + `{apiserver_id_hash="` + a + `",key_id_hash="` + v2 + `",provider_name="alibaba-kms",transformation_type="to_storage"} 1.70000002e+09`,
		UseMetric + `{apiserver_id_hash="` + c + `",key_id_hash="` + v1 + `",provider_name="alibaba-kms",transformation_type="to_storage"} 1.70000009e+09`,
		UseMetric + `{apiserver_id_hash="` + c + `",key_id_hash="` + v1 + `",provider_name="alibaba-kms",transformation_type="from_storage"} 1.70000099e+09`,
		"# HELP " + StatusMetric + " [ALPHA] The last time in seconds when a keyID was returned by the Status RPC call.",
		"# TYPE " + StatusMetric + " gauge",
		StatusMetric + `{apiserver_id_hash="` + a + `",key_id_hash="` + v1 + `",provider_name="alibaba-kms"} 1.7e+09`,
		StatusMetric + `{apiserver_id_hash="` + a + `",key_id_hash="` + v2 + `",provider_name="alibaba-kms"} 1.70000001e+09`,
		StatusMetric + `{apiserver_id_hash="` + b + `",key_id_hash="` + v1 + `",provider_name="alibaba-kms"} 1.70000005e+09`,
		StatusMetric + `{apiserver_id_hash="` + c + `",key_id_hash="` + v1 + `",provider_name="alibaba-kms"} 1.6e+09`,
		StatusMetric + `{apiserver_id_hash="` + c + `",key_id_hash="` + v2 + `",provider_name="alibaba-kms"} 1.70000008e+09`,
		StatusMetric + `{apiserver_id_hash="` + a + `",key_id_hash="` + HashKeyID("other") + `",provider_name="other-kms"} 1.70000001e+09`,
		"# HELP apiserver_request_total [STABLE] Counter of apiserver requests.",
		"# TYPE apiserver_request_total counter",
		`apiserver_request_total{code="200",verb="GET"} 12`,
		"",
	}, "\n")
}

func TestHashKeyID(t *testing.T) {
	// sha256("v1"), as the API server's getHash formats it.
	if got, want := HashKeyID("v1"), "sha256:3bfc269594ef649228e9a74bab00f042efc91d5acc6fbee31a382e80d42388fe"; got != want {
		t.Fatalf("HashKeyID(v1) = %s, want %s", got, want)
	}
	if HashKeyID("") != "" {
		t.Fatal("empty key ID must hash to empty, as upstream")
	}
}

func TestParseAndReplicas(t *testing.T) {
	s, err := Parse(strings.NewReader(fixture()))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Status) != 6 || len(s.Writes) != 3 {
		t.Fatalf("parsed %d status and %d write series, want 6 and 3 (from_storage dropped)", len(s.Status), len(s.Writes))
	}
	v1, v2 := HashKeyID("v1"), HashKeyID("v2")
	got := s.Replicas("alibaba-kms")
	want := []Replica{
		{APIServerIDHash: HashKeyID("apiserver-a"), Provider: "alibaba-kms", KeyIDHash: v2, StatusAt: 1.70000001e+09},
		{APIServerIDHash: HashKeyID("apiserver-b"), Provider: "alibaba-kms", KeyIDHash: v1, StatusAt: 1.70000005e+09},
		{APIServerIDHash: HashKeyID("apiserver-c"), Provider: "alibaba-kms", KeyIDHash: v2, StatusAt: 1.70000008e+09, StaleWriteHash: v1},
	}
	byServer := map[string]Replica{}
	for _, r := range got {
		byServer[r.APIServerIDHash] = r
	}
	if len(got) != len(want) {
		t.Fatalf("replicas %+v, want %d", got, len(want))
	}
	for _, w := range want {
		if byServer[w.APIServerIDHash] != w {
			t.Errorf("replica %s = %+v, want %+v", w.APIServerIDHash, byServer[w.APIServerIDHash], w)
		}
	}
	if all := s.Replicas(""); len(all) != 4 {
		t.Fatalf("without a provider filter: %d replicas, want 4 (a has two providers)", len(all))
	}
}

func TestParseEmptyAndMalformed(t *testing.T) {
	s, err := Parse(strings.NewReader("# HELP up x\n# TYPE up gauge\nup 1\n"))
	if err != nil || len(s.Status) != 0 || len(s.Replicas("")) != 0 {
		t.Fatalf("no KMS series: %+v, %v", s, err)
	}
	if _, err := Parse(strings.NewReader(StatusMetric + `{key_id_hash="x" 1` + "\n")); err == nil {
		t.Fatal("a malformed series line must be an error")
	}
}

func restClient(t *testing.T, url string) rest.Interface {
	t.Helper()
	c, err := rest.RESTClientFor(&rest.Config{Host: url, ContentConfig: rest.ContentConfig{GroupVersion: &schema.GroupVersion{}, NegotiatedSerializer: scheme.Codecs.WithoutConversion()}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestScrape(t *testing.T) {
	forbid := false
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" || !strings.HasPrefix(r.Header.Get("Accept"), "text/plain") {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		if forbid {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","code":403}`))
			return
		}
		_, _ = w.Write([]byte(fixture()))
	}))
	defer srv.Close()
	sc := Scraper{Client: restClient(t, srv.URL)}
	s, err := sc.Scrape(t.Context())
	if err != nil || len(s.Replicas("alibaba-kms")) != 3 {
		t.Fatalf("scrape: %+v, %v", s, err)
	}
	forbid = true
	if _, err := sc.Scrape(t.Context()); !errors.Is(err, ErrForbidden) {
		t.Fatalf("403: %v, want ErrForbidden", err)
	}
}

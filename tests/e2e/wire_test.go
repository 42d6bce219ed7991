package e2e

import (
	"bytes"
	"encoding/base64"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// recorder keeps every request and response body that crossed the engine's transport.
type recorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	bodies [][]byte
	count  int
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		r.keep(b)
	}
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	r.keep(b)
	return resp, nil
}

func (r *recorder) keep(b []byte) {
	r.mu.Lock()
	r.bodies = append(r.bodies, b)
	r.count++
	r.mu.Unlock()
}

// TestNoSecretDataOnTheWire: no request or response the engine exchanged, and no log line it
// wrote, carries any Secret value, raw or base64.
func TestNoSecretDataOnTheWire(t *testing.T) {
	c, key1 := aescbcCluster(t)
	data := createSecrets(t, typed(t, c), 300, "wire")
	rotate(t, c, key1)

	rec := &recorder{}
	cfg := c.RestConfig("admin")
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { rec.next = rt; return rec })
	var logs bytes.Buffer
	log := zerolog.New(&logs).Level(zerolog.DebugLevel)
	s := mustRun(t, cfg, func(o *reencrypt.Options) { o.Logger = &log })
	if s.Total.Rewritten != 300 {
		t.Fatalf("summary %+v, want 300 rewritten", s.Total)
	}
	if rec.count < 300 || logs.Len() == 0 {
		t.Fatalf("recorded %d bodies and %d log bytes: the recorder did not see the run", rec.count, logs.Len())
	}
	for k, v := range data {
		needles := [][]byte{v, []byte(base64.StdEncoding.EncodeToString(v))}
		for _, body := range rec.bodies {
			for _, n := range needles {
				if bytes.Contains(body, n) {
					t.Fatalf("a body the engine exchanged contains the data of %s", k)
				}
			}
		}
		for _, n := range needles {
			if bytes.Contains(logs.Bytes(), n) {
				t.Fatalf("the log contains the data of %s", k)
			}
		}
	}
	// Positive control: the same recorder does see data when a client asks for it.
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets("wire").Get(t.Context(), "secret-00000", metav1.GetOptions{}); err != nil {
		t.Fatalf("control read: %v", err)
	}
	found := false
	for _, body := range rec.bodies {
		found = found || bytes.Contains(body, data["wire/secret-00000"])
	}
	if !found {
		t.Fatal("the recorder cannot see Secret data even in a typed GET: the check above proves nothing")
	}
}

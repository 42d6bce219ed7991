package apf

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	flowcontrolclient "k8s.io/client-go/kubernetes/typed/flowcontrol/v1"
	"k8s.io/client-go/rest"
)

// FlowSchemaName is the name of rekey's FlowSchema and priority level in infra/apf/rekey-apf.yaml.
const FlowSchemaName = "rekey"

// File is rekey's APF configuration, relative to the repository root.
const File = "infra/apf/rekey-apf.yaml"

// APF's answer headers: the UIDs of the FlowSchema and priority level a request was classified into.
const (
	HeaderFlowSchemaUID    = "X-Kubernetes-PF-FlowSchema-UID"
	HeaderPriorityLevelUID = "X-Kubernetes-PF-PriorityLevel-UID"
)

// Classification is how the API server classifies rekey's requests.
type Classification struct {
	// Ours: the requests are classified by rekey's FlowSchema.
	Ours bool `json:"ours"`
	// FlowSchemaUID and PriorityLevelUID are what the probe's answer named ("" without APF).
	FlowSchemaUID    string `json:"flowSchemaUID,omitempty"`
	PriorityLevelUID string `json:"priorityLevelUID,omitempty"`
	// PriorityLevel is the priority level rekey's FlowSchema names, when it could be read.
	PriorityLevel string `json:"priorityLevel,omitempty"`
	// Reason says, when not Ours, why not and what to do, for people.
	Reason string `json:"reason,omitempty"`
}

// Probe makes one request as cfg's identity (GET /version) and compares the FlowSchema its answer
// names with rekey's FlowSchema. The error is for a server that could not be asked at all; every
// answer, APF off included, is a Classification.
func Probe(ctx context.Context, cfg *rest.Config) (Classification, error) {
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return Classification{}, fmt.Errorf("apf probe: %w", err)
	}
	defer utilnet.CloseIdleConnectionsFor(hc.Transport)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cfg.Host+"/version", nil)
	if err != nil {
		return Classification{}, fmt.Errorf("apf probe: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Classification{}, fmt.Errorf("apf probe: GET /version: %w", err)
	}
	_ = resp.Body.Close()
	c := Classification{FlowSchemaUID: resp.Header.Get(HeaderFlowSchemaUID), PriorityLevelUID: resp.Header.Get(HeaderPriorityLevelUID)}
	if c.FlowSchemaUID == "" {
		c.Reason = fmt.Sprintf("the API server's answers carry no %s header (API Priority and Fairness off, or a proxy drops it)", HeaderFlowSchemaUID)
		return c, nil
	}
	fc, err := flowcontrolclient.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return Classification{}, fmt.Errorf("apf probe: %w", err)
	}
	fs, err := fc.FlowSchemas().Get(ctx, FlowSchemaName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		c.Reason = fmt.Sprintf("FlowSchema %s does not exist: apply %s", FlowSchemaName, File)
		return c, nil
	case apierrors.IsForbidden(err):
		c.Reason = fmt.Sprintf("this identity may not read FlowSchema %s, so whether it is in charge cannot be told: grant get on flowschemas.flowcontrol.apiserver.k8s.io named %s (infra/rbac does)", FlowSchemaName, FlowSchemaName)
		return c, nil
	case err != nil:
		return Classification{}, fmt.Errorf("apf probe: get FlowSchema %s: %w", FlowSchemaName, err)
	}
	c.PriorityLevel = fs.Spec.PriorityLevelConfiguration.Name
	if string(fs.UID) != c.FlowSchemaUID {
		c.Reason = fmt.Sprintf("requests are classified by another FlowSchema (UID %s), not %s (UID %s): one with a lower matchingPrecedence matches this identity first (system:masters is always exempt)", c.FlowSchemaUID, FlowSchemaName, fs.UID)
		return c, nil
	}
	c.Ours = true
	return c, nil
}

// Signals reports the API server's 429 answers to a sink while requests go through the transports
// it wraps (rest.Config.Wrap). The zero value is ready; it is safe for concurrent use.
type Signals struct {
	mu   sync.Mutex
	sink func()
	n    int64
}

// SetSink makes every later 429 call f (nil: none), typically a pace.Limiter's Throttle.
func (s *Signals) SetSink(f func()) {
	s.mu.Lock()
	s.sink = f
	s.mu.Unlock()
}

// TooManyRequests returns how many 429 answers went through so far.
func (s *Signals) TooManyRequests() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// Wrap returns rt with every 429 answer reported; use it as rest.Config.Wrap(s.Wrap).
func (s *Signals) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripper{s: s, next: rt}
}

type roundTripper struct {
	s    *Signals
	next http.RoundTripper
}

func (t roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		t.s.mu.Lock()
		t.s.n++
		sink := t.s.sink
		t.s.mu.Unlock()
		if sink != nil {
			sink()
		}
	}
	return resp, err
}

// WrappedRoundTripper lets client-go reach the transport underneath (closing idle connections).
func (t roundTripper) WrappedRoundTripper() http.RoundTripper { return t.next }

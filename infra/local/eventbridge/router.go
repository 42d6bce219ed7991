package eventbridge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/rekey-dev/rekey/shared/events"
)

// Target receives one matched event (a single CloudEvent JSON object) or one
// timer payload. An error is reported by Publish or Fire; the Router does not
// retry.
type Target func(ctx context.Context, payload []byte) error

// DefaultBusName is the event bus name set on published events.
const DefaultBusName = "default"

// publishTimeLayout is the aliyunpublishtime form EventBridge has been seen to
// send: China Standard Time with a "PRC" suffix and milliseconds.
const publishTimeLayout = "2006-01-02T15:04:05.000"

var prc = time.FixedZone("PRC", 8*3600)

// FormatPublishTime renders t as EventBridge's aliyunpublishtime, e.g.
// "2020-11-19T21:04:42.179PRC" (UTC+8).
func FormatPublishTime(t time.Time) string {
	return t.In(prc).Format(publishTimeLayout) + "PRC"
}

// Options configures a Router. The zero value is usable.
type Options struct {
	// AccountID fills aliyunaccountid of published events that have none.
	AccountID string
	// Region fills aliyunregionid of published events that have none.
	Region string
	// Clock stamps time and aliyunpublishtime; nil means the real clock.
	Clock clock.PassiveClock
	// OnDelivery, when set, is called after every delivery to a target with
	// the rule or timer name, the payload and the target's error.
	OnDelivery func(name string, payload []byte, err error)
}

// Rule routes events that match Pattern to Target.
type Rule struct {
	// Name identifies the rule (an s.yaml triggerName).
	Name string
	// Pattern selects the events.
	Pattern *Pattern
	// Target receives them.
	Target Target
}

// Timer is a Function Compute timer trigger fired on demand.
type Timer struct {
	// Name is the triggerName, copied into the payload.
	Name string
	// Payload is the trigger's configured payload string.
	Payload string
	// Disabled timers refuse to fire (s.yaml enable: false).
	Disabled bool
	// Target receives the timer payload.
	Target Target
}

// Router is the local event bus. Create it with NewRouter. It is safe for
// concurrent use; Publish and Fire may run concurrently with each other and
// with AddRule/AddTimer.
type Router struct {
	opts Options

	mu     sync.RWMutex
	rules  []Rule
	timers map[string]Timer
}

var _ http.Handler = (*Router)(nil)

// NewRouter returns an empty Router.
func NewRouter(opts Options) *Router {
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	return &Router{opts: opts, timers: map[string]Timer{}}
}

// Errors returned by the Router.
var (
	// ErrDuplicate reports a rule or timer name already in use.
	ErrDuplicate = errors.New("name already in use")
	// ErrUnknownTimer reports Fire of a timer that was never added.
	ErrUnknownTimer = errors.New("no such timer")
	// ErrTimerDisabled reports Fire of a disabled timer.
	ErrTimerDisabled = errors.New("timer is disabled")
	// ErrInvalidEvent reports an event Publish refuses.
	ErrInvalidEvent = errors.New("invalid event")
)

// AddRule compiles pattern (a JSON event pattern, see ParsePattern) and routes
// matching events to target.
func (r *Router) AddRule(name, pattern string, target Target) error {
	p, err := ParsePattern(pattern)
	if err != nil {
		return fmt.Errorf("add rule %q: %w", name, err)
	}
	return r.Add(Rule{Name: name, Pattern: p, Target: target})
}

// Add adds a compiled rule. Rules are evaluated in the order they were added.
func (r *Router) Add(rule Rule) error {
	if rule.Name == "" || rule.Pattern == nil || rule.Target == nil {
		return fmt.Errorf("add rule %q: name, pattern and target are required", rule.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, existing := range r.rules {
		if existing.Name == rule.Name {
			return fmt.Errorf("add rule %q: %w", rule.Name, ErrDuplicate)
		}
	}
	r.rules = append(r.rules, rule)
	return nil
}

// AddTimer registers a timer that Fire delivers on demand.
func (r *Router) AddTimer(t Timer) error {
	if t.Name == "" || t.Target == nil {
		return fmt.Errorf("add timer %q: name and target are required", t.Name)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.timers[t.Name]; dup {
		return fmt.Errorf("add timer %q: %w", t.Name, ErrDuplicate)
	}
	r.timers[t.Name] = t
	return nil
}

// Delivery is what Publish did with one event.
type Delivery struct {
	// ID is the event id (generated when the event had none).
	ID string `json:"id"`
	// Matched names the rules whose pattern matched, in rule order.
	Matched []string `json:"matched"`
}

// Publish completes ev's EventBridge attributes (specversion 1.0, a random id,
// time and aliyunpublishtime from the clock, the default bus, account and
// region from Options, datacontenttype application/json), then delivers it to
// the target of every matching rule in turn, synchronously. The returned
// error joins the targets' errors (each naming its rule); the event is
// delivered to the other matching rules regardless. An event without source
// or type, or with another specversion, is refused with ErrInvalidEvent.
func (r *Router) Publish(ctx context.Context, ev events.CloudEvent) (Delivery, error) {
	ev, err := r.complete(ev)
	if err != nil {
		return Delivery{}, err
	}
	payload, err := json.Marshal(ev)
	if err != nil {
		return Delivery{}, fmt.Errorf("publish %s: encode: %w", ev.DedupKey(), err)
	}
	obj, err := DecodeEvent(payload)
	if err != nil {
		return Delivery{}, fmt.Errorf("publish %s: %w", ev.DedupKey(), err)
	}
	r.mu.RLock()
	rules := append([]Rule(nil), r.rules...)
	r.mu.RUnlock()

	d := Delivery{ID: ev.ID, Matched: []string{}}
	var errs []error
	for _, rule := range rules {
		if !rule.Pattern.MatchDecoded(obj) {
			continue
		}
		d.Matched = append(d.Matched, rule.Name)
		err := rule.Target(ctx, payload)
		if r.opts.OnDelivery != nil {
			r.opts.OnDelivery(rule.Name, payload, err)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rule %q: %w", rule.Name, err))
		}
	}
	if len(errs) > 0 {
		return d, fmt.Errorf("publish %s: %w", ev.DedupKey(), errors.Join(errs...))
	}
	return d, nil
}

func (r *Router) complete(ev events.CloudEvent) (events.CloudEvent, error) {
	if ev.Source == "" || ev.Type == "" {
		return ev, fmt.Errorf("publish: source and type are required: %w", ErrInvalidEvent)
	}
	switch ev.SpecVersion {
	case "":
		ev.SpecVersion = events.SpecVersion
	case events.SpecVersion:
	default:
		return ev, fmt.Errorf("publish: specversion %q, want %s: %w", ev.SpecVersion, events.SpecVersion, ErrInvalidEvent)
	}
	if len(ev.Data) > 0 && !json.Valid(ev.Data) {
		return ev, fmt.Errorf("publish: data is not valid JSON: %w", ErrInvalidEvent)
	}
	now := r.opts.Clock.Now()
	if ev.ID == "" {
		id, err := newID()
		if err != nil {
			return ev, fmt.Errorf("publish: %w", err)
		}
		ev.ID = id
	}
	if ev.Time == "" {
		ev.Time = now.UTC().Format(time.RFC3339Nano)
	}
	if ev.AliyunPublishTime == "" {
		ev.AliyunPublishTime = FormatPublishTime(now)
	}
	if ev.AliyunEventBusName == "" {
		ev.AliyunEventBusName = DefaultBusName
	}
	if ev.AliyunAccountID == "" {
		ev.AliyunAccountID = r.opts.AccountID
	}
	if ev.AliyunRegionID == "" {
		ev.AliyunRegionID = r.opts.Region
	}
	if ev.DataContentType == "" && len(ev.Data) > 0 {
		ev.DataContentType = "application/json"
	}
	return ev, nil
}

// TimerPayload is the Function Compute timer trigger payload:
// {"triggerTime":"2023-12-26T07:49:00Z","triggerName":"timer","payload":"..."},
// triggerTime in UTC with second precision.
func TimerPayload(name string, triggerTime time.Time, payload string) []byte {
	b, _ := json.Marshal(struct {
		TriggerTime string `json:"triggerTime"`
		TriggerName string `json:"triggerName"`
		Payload     string `json:"payload"`
	}{triggerTime.UTC().Format(time.RFC3339), name, payload})
	return b
}

// Fire delivers the timer's payload for triggerTime to its target and returns
// the target's error.
func (r *Router) Fire(ctx context.Context, name string, triggerTime time.Time) error {
	r.mu.RLock()
	t, ok := r.timers[name]
	r.mu.RUnlock()
	if !ok {
		return fmt.Errorf("fire timer %q: %w", name, ErrUnknownTimer)
	}
	if t.Disabled {
		return fmt.Errorf("fire timer %q: %w", name, ErrTimerDisabled)
	}
	payload := TimerPayload(name, triggerTime, t.Payload)
	err := t.Target(ctx, payload)
	if r.opts.OnDelivery != nil {
		r.opts.OnDelivery(name, payload, err)
	}
	if err != nil {
		return fmt.Errorf("fire timer %q: %w", name, err)
	}
	return nil
}

// maxPublishBody bounds a POSTed batch.
const maxPublishBody = 4 << 20

// ServeHTTP is the publish API: POST a CloudEvent JSON object, or a JSON array
// of them; the answer is 200 with {"entries":[{"id","matched","error"}]} in
// input order (an entry's error is a target's or the event's), or 400 when
// the body is not one of those shapes.
func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "POST a CloudEvent"})
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxPublishBody+1))
	if err != nil || len(body) > maxPublishBody {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body unreadable or over 4 MiB"})
		return
	}
	var batch []events.CloudEvent
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] == '[' {
		err = json.Unmarshal(body, &batch)
	} else {
		var one events.CloudEvent
		err = json.Unmarshal(body, &one)
		batch = []events.CloudEvent{one}
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want a CloudEvent object or an array of them: " + err.Error()})
		return
	}
	type entry struct {
		Delivery
		Error string `json:"error,omitempty"`
	}
	out := struct {
		Entries []entry `json:"entries"`
	}{Entries: make([]entry, 0, len(batch))}
	for _, ev := range batch {
		d, err := r.Publish(req.Context(), ev)
		e := entry{Delivery: d}
		if err != nil {
			e.Error = err.Error()
		}
		out.Entries = append(out.Entries, e)
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// URLTarget posts each payload, as is, to url with Content-Type
// application/json. A non-2xx answer is an error. A nil client means
// http.DefaultClient.
func URLTarget(client *http.Client, url string) Target {
	if client == nil {
		client = http.DefaultClient
	}
	return func(ctx context.Context, payload []byte) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(payload))
		if err != nil {
			return fmt.Errorf("post event: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("post event: %w", err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("post event: %s answered %s", url, resp.Status)
		}
		return nil
	}
}

// newID returns a random UUID (version 4) string.
func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("event id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
}

package eventbridge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/rekey-dev/rekey/shared/events"
)

// recorder is a Target that keeps what it got.
type recorder struct {
	mu   sync.Mutex
	got  [][]byte
	fail error
}

func (r *recorder) target(_ context.Context, payload []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, append([]byte(nil), payload...))
	return r.fail
}

func (r *recorder) payloads() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.got...)
}

var fixedNow = time.Date(2026, 11, 28, 9, 21, 32, 179e6, time.UTC)

func newTestRouter() *Router {
	return NewRouter(Options{AccountID: "5068000000000001", Region: "cn-hangzhou", Clock: clocktesting.NewFakePassiveClock(fixedNow)})
}

func TestPublishRoutesMatches(t *testing.T) {
	r := newTestRouter()
	var kmsRule, csRule, all recorder
	must(t, r.AddRule("kms", `{"source":["acs.kms"],"data":{"eventName":["CreateKeyVersion"]}}`, kmsRule.target))
	must(t, r.AddRule("cs", `{"source":["acs.cs"]}`, csRule.target))
	must(t, r.AddRule("all", `{"source":[{"prefix":"acs."}]}`, all.target))
	if err := r.AddRule("kms", `{}`, all.target); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate rule: %v", err)
	}
	if err := r.AddRule("bad", `{"source":"acs.kms"}`, all.target); !errors.Is(err, ErrInvalidPattern) {
		t.Fatalf("bad pattern: %v", err)
	}

	d, err := r.Publish(context.Background(), events.CloudEvent{
		Source: "acs.kms", Type: "kms:ActionTrail:ApiCall",
		Data: json.RawMessage(`{"eventId":"e1","eventName":"CreateKeyVersion","eventTime":"2026-11-28T09:21:30Z","userIdentity":{"type":"root-account"}}`),
	})
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if strings.Join(d.Matched, ",") != "kms,all" || d.ID == "" {
		t.Fatalf("Delivery = %+v", d)
	}
	if n := len(csRule.payloads()); n != 0 {
		t.Fatalf("cs rule got %d events", n)
	}
	got := kmsRule.payloads()
	if len(got) != 1 {
		t.Fatalf("kms rule got %d events", len(got))
	}
	// The target gets one CloudEvent object, with EventBridge's attributes, that
	// the functions' decoder accepts.
	p, err := events.Decode(got[0])
	if err != nil {
		t.Fatalf("events.Decode(%s): %v", got[0], err)
	}
	ev := p.Events[0]
	if ev.ID != d.ID || ev.SpecVersion != "1.0" || ev.AliyunEventBusName != "default" ||
		ev.AliyunAccountID != "5068000000000001" || ev.AliyunRegionID != "cn-hangzhou" ||
		ev.AliyunPublishTime != "2026-11-28T17:21:32.179PRC" || ev.Time != "2026-11-28T09:21:32.179Z" ||
		ev.DataContentType != "application/json" {
		t.Fatalf("event attributes: %+v", ev)
	}
	if pt, err := ev.PublishTime(); err != nil || !pt.Equal(fixedNow) {
		t.Fatalf("PublishTime = %v, %v", pt, err)
	}
	if ev.Record == nil || ev.Record.EventName != "CreateKeyVersion" {
		t.Fatalf("Record = %+v", ev.Record)
	}
}

func TestPublishKeepsGivenAttributesAndReportsTargetErrors(t *testing.T) {
	r := newTestRouter()
	boom := errors.New("function failed")
	failing := &recorder{fail: boom}
	var ok recorder
	must(t, r.AddRule("failing", `{"type":["t"]}`, failing.target))
	must(t, r.AddRule("ok", `{"type":["t"]}`, ok.target))
	d, err := r.Publish(context.Background(), events.CloudEvent{ID: "given", Source: "s", Type: "t",
		Time: "2020-01-01T00:00:00Z", AliyunAccountID: "other", AliyunRegionID: "cn-beijing"})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), `rule "failing"`) {
		t.Fatalf("Publish error = %v", err)
	}
	if d.ID != "given" || len(ok.payloads()) != 1 {
		t.Fatalf("the other rule must still get the event: %+v, %d", d, len(ok.payloads()))
	}
	var ev events.CloudEvent
	must(t, json.Unmarshal(ok.payloads()[0], &ev))
	if ev.Time != "2020-01-01T00:00:00Z" || ev.AliyunAccountID != "other" || ev.AliyunRegionID != "cn-beijing" {
		t.Fatalf("given attributes overwritten: %+v", ev)
	}
}

func TestPublishRefusesInvalidEvents(t *testing.T) {
	r := newTestRouter()
	for _, ev := range []events.CloudEvent{
		{Type: "t"},
		{Source: "s"},
		{Source: "s", Type: "t", SpecVersion: "0.3"},
		{Source: "s", Type: "t", Data: json.RawMessage(`{`)},
	} {
		if _, err := r.Publish(context.Background(), ev); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Publish(%+v) = %v, want ErrInvalidEvent", ev, err)
		}
	}
}

func TestFireTimer(t *testing.T) {
	r := newTestRouter()
	var got recorder
	must(t, r.AddTimer(Timer{Name: "offpeak", Payload: `{"mode":"sweep"}`, Target: got.target}))
	must(t, r.AddTimer(Timer{Name: "off", Disabled: true, Target: got.target}))
	if err := r.AddTimer(Timer{Name: "offpeak", Target: got.target}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate timer: %v", err)
	}
	at := time.Date(2026, 11, 28, 18, 0, 0, 123, time.FixedZone("x", 3600))
	must(t, r.Fire(context.Background(), "offpeak", at))
	want := `{"triggerTime":"2026-11-28T17:00:00Z","triggerName":"offpeak","payload":"{\"mode\":\"sweep\"}"}`
	if p := got.payloads(); len(p) != 1 || string(p[0]) != want {
		t.Fatalf("timer payload = %q, want %q", p, want)
	}
	// The functions' decoder reads it as a timer.
	dec, err := events.Decode(got.payloads()[0])
	if err != nil || dec.Timer == nil || dec.Timer.TriggerName != "offpeak" || !dec.Timer.TriggerTime.Equal(at.Truncate(time.Second)) ||
		dec.Timer.Payload != `{"mode":"sweep"}` {
		t.Fatalf("events.Decode = %+v, %v", dec.Timer, err)
	}
	if err := r.Fire(context.Background(), "off", at); !errors.Is(err, ErrTimerDisabled) {
		t.Fatalf("disabled timer: %v", err)
	}
	if err := r.Fire(context.Background(), "nope", at); !errors.Is(err, ErrUnknownTimer) {
		t.Fatalf("unknown timer: %v", err)
	}
	got.fail = errors.New("boom")
	if err := r.Fire(context.Background(), "offpeak", at); err == nil {
		t.Fatal("target error not returned")
	}
}

func TestServeHTTPAndURLTarget(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		if strings.Contains(string(b), `"reject"`) {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer sink.Close()

	r := newTestRouter()
	must(t, r.AddRule("webhook", `{"source":["acs.kms"]}`, URLTarget(sink.Client(), sink.URL)))
	bus := httptest.NewServer(r)
	defer bus.Close()

	post := func(body string) (int, string) {
		resp, err := http.Post(bus.URL, "application/cloudevents+json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatalf("post: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post(`[{"id":"a","source":"acs.kms","type":"x"},{"id":"b","source":"acs.cs","type":"x"},{"id":"reject","source":"acs.kms","type":"x"}]`)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	var out struct {
		Entries []struct {
			ID      string   `json:"id"`
			Matched []string `json:"matched"`
			Error   string   `json:"error"`
		} `json:"entries"`
	}
	must(t, json.Unmarshal([]byte(body), &out))
	if len(out.Entries) != 3 || len(out.Entries[0].Matched) != 1 || len(out.Entries[1].Matched) != 0 ||
		!strings.Contains(out.Entries[2].Error, "500") || out.Entries[0].Error != "" {
		t.Fatalf("entries = %+v", out.Entries)
	}
	mu.Lock()
	n := len(bodies)
	mu.Unlock()
	if n != 2 {
		t.Fatalf("webhook got %d posts, want 2", n)
	}
	if code, _ := post(`{"id":"single","source":"acs.kms","type":"x"}`); code != http.StatusOK {
		t.Fatalf("single event status %d", code)
	}
	if code, _ := post(`"nope"`); code != http.StatusBadRequest {
		t.Fatalf("bad body status %d", code)
	}
	resp, err := http.Get(bus.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET status %d", resp.StatusCode)
	}
}

func TestFormatPublishTime(t *testing.T) {
	got := FormatPublishTime(time.Date(2020, 11, 19, 13, 4, 42, 179e6, time.UTC))
	if got != "2020-11-19T21:04:42.179PRC" {
		t.Fatalf("FormatPublishTime = %q", got)
	}
	back, err := events.ParseTime(got)
	if err != nil || !back.Equal(time.Date(2020, 11, 19, 13, 4, 42, 179e6, time.UTC)) {
		t.Fatalf("ParseTime(%q) = %v, %v", got, back, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

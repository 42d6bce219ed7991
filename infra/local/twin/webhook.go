package twin

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// maxAlertBytes bounds one captured webhook body.
const maxAlertBytes = 1 << 20

// Alert is one body posted to the webhook receiver.
type Alert struct {
	// At is when it arrived.
	At time.Time
	// ContentType is the request's Content-Type.
	ContentType string
	// Body is what was posted.
	Body []byte
}

// Webhook is a local receiver of the functions' alerts: it accepts POSTs to its path carrying the
// right token in the query (as a DingTalk robot URL carries its access_token) and keeps every body.
// It is safe for concurrent use.
type Webhook struct {
	// URL is what REKEY_WEBHOOK_URL is set to; its token is a credential (Twin.Leaks scans for it).
	URL string
	// Token is the access_token query value the receiver requires.
	Token string

	srv  *http.Server
	done chan struct{}

	mu      sync.Mutex
	alerts  []Alert
	refused int
	changed chan struct{} // closed and replaced when an alert arrives
}

const webhookPath = "/robot/send"

func startWebhook(token string) (*Webhook, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("webhook: listen: %w", err)
	}
	w := &Webhook{
		URL:     "http://" + ln.Addr().String() + webhookPath + "?access_token=" + token,
		Token:   token,
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	w.srv = &http.Server{Handler: w, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(w.done)
		_ = w.srv.Serve(ln)
	}()
	return w, nil
}

// ServeHTTP captures one alert.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != webhookPath ||
		subtle.ConstantTimeCompare([]byte(r.URL.Query().Get("access_token")), []byte(w.Token)) != 1 {
		w.mu.Lock()
		w.refused++
		w.mu.Unlock()
		http.Error(rw, "refused", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAlertBytes))
	if err != nil {
		http.Error(rw, "read body", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	w.alerts = append(w.alerts, Alert{At: time.Now(), ContentType: r.Header.Get("Content-Type"), Body: body})
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	rw.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(rw, `{"errcode":0,"errmsg":"ok"}`)
}

// Alerts returns every alert received so far, oldest first.
func (w *Webhook) Alerts() []Alert {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Alert(nil), w.alerts...)
}

// Refused counts requests refused (wrong path, method or token).
func (w *Webhook) Refused() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.refused
}

// Wait waits until at least n alerts have arrived in all and returns them, or fails when ctx ends.
func (w *Webhook) Wait(ctx context.Context, n int) ([]Alert, error) {
	for {
		w.mu.Lock()
		if len(w.alerts) >= n {
			out := append([]Alert(nil), w.alerts...)
			w.mu.Unlock()
			return out, nil
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return w.Alerts(), fmt.Errorf("webhook: waiting for %d alerts: %w", n, ctx.Err())
		}
	}
}

func (w *Webhook) close() {
	_ = w.srv.Close()
	<-w.done
}

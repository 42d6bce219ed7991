package adoption

import (
	"context"
	"fmt"
	"net/http"

	"k8s.io/client-go/rest"
)

// FreshConnections returns a copy of cfg whose requests each open a new connection (HTTP/1.1,
// Connection: close), so that a load balancer in front of several API servers spreads the gate's
// samples over them. client-go otherwise sends every request over one HTTP/2 connection, which an
// L4 load balancer pins to one replica.
func FreshConnections(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.NextProtos = []string{"http/1.1"}
	wrap := c.WrapTransport
	c.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		if wrap != nil {
			rt = wrap(rt)
		}
		return closeEach{rt}
	}
	return c
}

// closeEach marks every request to close its connection after the response.
type closeEach struct{ next http.RoundTripper }

func (c closeEach) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Close = true
	return c.next.RoundTrip(req)
}

// ReadyzNudge returns a Gate.Nudge that GETs /readyz: its KMS health check calls the plugin's
// Status (at most every 20 s per API server), so the API server learns a new key ID sooner than its
// once-a-minute poll, as an operator's readiness probe would make it. /readyz is readable by every
// authenticated identity (system:public-info-viewer).
func ReadyzNudge(c rest.Interface) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if _, err := c.Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return fmt.Errorf("GET /readyz: %w", err)
		}
		return nil
	}
}

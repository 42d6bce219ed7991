package kmsstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Fault injection for rekey's fault suite (tests/faults): the KMS API stand-in goes away (an
// outage, as seen from the plugin: connections refused) and comes back on the same endpoint with
// the same keys.

// StopKMS closes the KMS API stand-in at once: its listener and every open connection. The plugin
// keeps running and its KMS calls fail until StartKMS. The key state is kept in the state file.
func (s *Stack) StopKMS() error {
	s.mu.Lock()
	hs, done := s.httpSrv, s.serveDone
	s.httpSrv = nil
	s.mu.Unlock()
	if hs == nil {
		return errors.New("kms stack: stop KMS: it is not running")
	}
	_ = hs.Close() // the only error is the listener's close error; the server is down either way
	<-done
	return nil
}

// StartKMS starts the KMS API stand-in again after StopKMS, on the same endpoint, from the state
// file (a new kmsapi.Server: Server's counters start from zero).
func (s *Stack) StartKMS(ctx context.Context) error {
	s.mu.Lock()
	running := s.httpSrv != nil
	s.mu.Unlock()
	if running {
		return errors.New("kms stack: start KMS: it is already running")
	}
	var lc net.ListenConfig
	var ln net.Listener
	var err error
	// The port was ours a moment ago; another listener may still hold it for a short while.
	for attempt := 0; attempt < 50; attempt++ {
		if ln, err = lc.Listen(ctx, "tcp", s.Endpoint); err == nil {
			break
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("kms stack: start KMS on %s: %w (last: %v)", s.Endpoint, ctx.Err(), err)
		case <-t.C:
		}
	}
	if err != nil {
		return fmt.Errorf("kms stack: start KMS: listen again on %s: %w", s.Endpoint, err)
	}
	return s.serveKMS(ln)
}

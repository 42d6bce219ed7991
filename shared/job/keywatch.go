package job

import (
	"context"
	"fmt"
	"time"

	"github.com/rekey-dev/rekey/shared/kms"
	"github.com/rekey-dev/rekey/shared/panics"
)

// KeyWatchInterval is how often a running pass checks (DescribeKey) that its key can still serve
// the API server.
const KeyWatchInterval = time.Second

// KeyUnusableError stops a pass whose key was disabled or scheduled for deletion while it ran.
// A KMS v2 API server keeps writing with its cached data key for minutes after that, so the
// writes would succeed: every Secret rewritten then would be encrypted under a key that can no
// longer decrypt it once the cache is gone. The pass stops at once instead of finishing (or of
// retrying into a storm when the API server starts failing).
type KeyUnusableError struct {
	// KeyID is the key as the job names it; State is the state DescribeKey reported.
	KeyID, State string
}

// Error implements error.
func (e *KeyUnusableError) Error() string {
	fix := "enable it again (EnableKey)"
	if e.State == kms.KeyStatePendingDeletion {
		fix = "cancel its deletion (CancelKeyDeletion) and enable it"
	}
	return fmt.Sprintf("KMS key %s became %s during the pass: stopped at once, every Secret written now would depend on a key that "+
		"cannot decrypt it; %s before running again (objects already rewritten come back current)", kms.Redact(e.KeyID), e.State, fix)
}

// watchKey returns a context derived from ctx that is cancelled, with a *KeyUnusableError as its
// cause, as soon as DescribeKey reports the job's key Disabled or PendingDeletion. DescribeKey
// errors are ignored: a KMS blip is not a reason to stop (the API server's own answers say when
// KMS fails it). Without a key it returns ctx. stop ends the watch.
func (r *runner) watchKey(ctx context.Context) (watched context.Context, stop func()) {
	if r.spec.KeyID == "" || r.deps.KMS == nil {
		return ctx, func() {}
	}
	watched, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	ticker := r.deps.Clock.NewTicker(KeyWatchInterval)
	go func() {
		defer close(done)
		defer ticker.Stop()
		// A panic (the KMS client's) must not take the process down; without its watch the pass stops.
		defer panics.Recover("key watch", func(e *panics.Error) {
			r.log.Error().Str("panic", e.Value).Str("stack", string(e.Stack)).Msg("the key watch panicked; stopping the pass")
			cancel(e)
		})
		for {
			select {
			case <-watched.Done():
				return
			case <-ticker.C():
			}
			cctx, ccancel := context.WithTimeout(watched, KeyWatchInterval)
			m, err := r.deps.KMS.DescribeKey(cctx, r.spec.KeyID)
			ccancel()
			if err != nil {
				continue
			}
			if m.State == kms.KeyStateDisabled || m.State == kms.KeyStatePendingDeletion {
				r.log.Error().Str("key", kms.Redact(r.spec.KeyID)).Str("state", m.State).Msg("the key became unusable during the pass; stopping")
				cancel(&KeyUnusableError{KeyID: r.spec.KeyID, State: m.State})
				return
			}
		}
	}()
	return watched, func() {
		cancel(nil)
		<-done
	}
}

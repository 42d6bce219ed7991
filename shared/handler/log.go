package handler

import (
	"github.com/rs/zerolog"

	"github.com/rekey-dev/rekey/shared/policy"
)

// logDecision writes the one log line of a decision.
func logDecision(log *zerolog.Logger, d DecisionResult) {
	ev := log.Info()
	if d.Notice != nil && d.Kind == policy.Alert {
		ev = log.Warn()
	}
	ev = ev.Str("kind", string(d.Kind)).Str("event", d.Event.String())
	if d.Name != "" {
		ev = ev.Str("name", d.Name)
	}
	if len(d.Jobs) > 0 {
		ev = ev.Int("jobs", len(d.Jobs))
	}
	if d.Recorded != nil {
		ev = ev.Bool("first", d.Recorded.First).Int("added", len(d.Recorded.Added)).Int("existing", len(d.Recorded.Existing)).
			Int("alreadyVerified", len(d.Recorded.AlreadyVerified))
	}
	if d.Notified != "" {
		ev = ev.Str("notified", d.Notified)
	}
	ev.Msg("decision: " + d.Reason)
}

// fail logs a fault and returns it: the invocation fails, and Function Compute retries it (up to
// asyncInvokeConfig.maxAsyncRetryAttempts).
func fail[T any](log *zerolog.Logger, res T, err error) (T, error) {
	log.Error().Err(err).Bool("transient", transient(err)).Msg("the invocation fails; Function Compute retries it")
	return res, err
}

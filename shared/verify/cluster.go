package verify

import (
	"context"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/reencrypt"
)

// checkConvergence runs e, or judges done (a pass already run) when e is nil.
func checkConvergence(ctx context.Context, e *reencrypt.Engine, done *reencrypt.Summary, maxNames int) (LayerResult, *reencrypt.Summary) {
	l := LayerResult{Name: LayerConvergence}
	var s reencrypt.Summary
	if e != nil {
		var err error
		s, err = e.Run(ctx)
		if err != nil {
			l.add(Fail, "rewrite pass did not finish: %v", err)
			return l, &s
		}
	} else {
		s = *done
	}
	switch {
	case s.Total.Failed > 0:
		l.add(Fail, "rewrite pass: %d objects failed (%s)", s.Total.Failed, failures(s, maxNames))
	case !s.Complete || s.Total.NotAttempted > 0:
		l.add(Fail, "rewrite pass stopped before the end (%d of %d objects not attempted): %s", s.Total.NotAttempted, s.Total.Listed, orNone(s.StopReason))
	case s.Total.Rewritten > 0:
		l.add(Fail, "rewrite pass: %d of %d objects were stale and have now been rewritten; run verify again to prove convergence", s.Total.Rewritten, s.Total.Listed)
	case s.Total.Listed == 0:
		l.add(Warn, "rewrite pass listed 0 objects: nothing was checked (no such objects in the scope, or the identity cannot see them)")
	default:
		l.add(Pass, "rewrite pass: 0 of %d objects changed resourceVersion: none was stale on the API servers that served the pass", s.Total.Listed)
	}
	return l, &s
}

func failures(s reencrypt.Summary, maxNames int) string {
	var names []string
	for i, f := range s.Failures {
		if i == maxNames {
			break
		}
		names = append(names, f.Namespace+"/"+f.Name)
	}
	return strings.Join(names, ", ")
}

func checkAPIServer(ctx context.Context, c rest.Interface) LayerResult {
	l := LayerResult{Name: LayerAPIServer}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	body, err := c.Get().AbsPath("/readyz/kms-providers").Param("verbose", "true").DoRaw(ctx)
	if err != nil {
		l.add(Fail, "/readyz/kms-providers: %v %s", err, strings.TrimSpace(string(body)))
		return l
	}
	l.add(Pass, "/readyz/kms-providers: %s", lastLine(string(body)))
	return l
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

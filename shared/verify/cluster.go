package verify

import (
	"context"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	"github.com/rekey-dev/rekey/shared/reencrypt"
	"github.com/rekey-dev/rekey/shared/replicas"
)

// checkConvergence runs e, or judges done (a pass already run) when e is nil. set, when given, is
// the API server replicas the pass was spread over (package replicas): the layer PASSes only when
// the pass listed objects, changed none, and every replica served part of it.
func checkConvergence(ctx context.Context, e *reencrypt.Engine, done *reencrypt.Summary, set *replicas.Set, maxNames int) (LayerResult, *reencrypt.Summary, *ReplicaCoverage) {
	l := LayerResult{Name: LayerConvergence}
	var s reencrypt.Summary
	if e != nil {
		var err error
		s, err = e.Run(ctx)
		if set != nil {
			set.Recheck(ctx, 0)
		}
		if err != nil {
			l.failOrUnknown(err, "rewrite pass did not finish: %v", err)
			return l, &s, nil
		}
	} else {
		s = *done
	}
	cov := Coverage(s, set)
	switch {
	case s.Total.Failed > 0:
		l.add(Fail, "rewrite pass: %d objects failed (%s)", s.Total.Failed, failures(s, maxNames))
	case !s.Complete || s.Total.NotAttempted > 0:
		l.add(Fail, "rewrite pass stopped before the end (%d of %d objects not attempted): %s", s.Total.NotAttempted, s.Total.Listed, orNone(s.StopReason))
	case s.Total.Rewritten > 0 && len(cov.Rewrote) > 0 && len(cov.Rewrote) < len(s.Routes):
		l.add(Fail, "rewrite pass: %d of %d objects were rewritten, by some API server replicas only (%s): those replicas encrypt with another key version than the others, or the objects they reached were still stale; run verify again to see which",
			s.Total.Rewritten, s.Total.Listed, rewroteList(cov.Rewrote))
	case s.Total.Rewritten > 0:
		l.add(Fail, "rewrite pass: %d of %d objects were stale and have now been rewritten; run verify again to prove convergence", s.Total.Rewritten, s.Total.Listed)
	case s.Total.Listed == 0:
		l.add(Fail, "rewrite pass listed 0 objects: nothing was checked, so nothing is proved (no such objects in the scope, the wrong cluster, or the identity cannot see them)")
	case cov.Complete():
		l.add(Pass, "rewrite pass: 0 of %d objects changed resourceVersion, and every one of the %d API server replicas served part of it (%s; %s): none was stale on any replica",
			s.Total.Listed, cov.Expected, shortList(cov.Covered), cov.Source)
	case cov.Expected > 0:
		l.add(Warn, "rewrite pass: 0 of %d objects changed resourceVersion, but %d of the %d API server replicas served none of it (%s): the proof does not cover them",
			s.Total.Listed, len(cov.Missing), cov.Expected, shortList(cov.Missing))
	default:
		l.add(Warn, "rewrite pass: 0 of %d objects changed resourceVersion on the replicas that served it (%s), but the number of API server replicas is %s: the proof may not cover every replica",
			s.Total.Listed, shortList(cov.Covered), cov.Source)
	}
	for _, n := range cov.Notes {
		l.add(Pass, "replicas: %s", n)
	}
	return l, &s, &cov
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
		// The check's own verdict is a 500 whose body lists "[-]kms-providers failed"; a timeout,
		// a throttled request or an unreachable server is no verdict at all.
		if strings.Contains(string(body), "failed") || !couldNotCheck(err) {
			l.add(Fail, "/readyz/kms-providers: %v %s", err, strings.TrimSpace(string(body)))
		} else {
			l.add(Unknown, "could not check: /readyz/kms-providers: %v", err)
		}
		return l
	}
	l.add(Pass, "/readyz/kms-providers: %s", lastLine(string(body)))
	return l
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ErrLeaseLost is returned by Renew when another holder has taken the Lease over (this holder's
// Lease expired), and by Renew and Release of a Lease that TryAcquire did not grant.
var ErrLeaseLost = errors.New("lease lost")

// Lease is the cluster's run Lease as TryAcquire saw it. When acquired, its methods renew and
// release it; otherwise it describes the live holder ("already running"). It is safe for
// concurrent use (a renewing goroutine and the run that releases it at the end).
type Lease struct {
	store *Store
	// me is the caller's holder identity when TryAcquire granted the Lease ("" otherwise).
	me string

	mu          sync.Mutex
	holder      string
	duration    time.Duration
	acquired    time.Time
	renewed     time.Time
	transitions int32
}

// LeaseInfo is a copy of what a Lease knows, for logs and results.
type LeaseInfo struct {
	Name   string `json:"name"`
	Holder string `json:"holder"`
	// Acquired is when the holder took the Lease; Renewed when it last renewed it.
	Acquired time.Time     `json:"acquired"`
	Renewed  time.Time     `json:"renewed"`
	Duration time.Duration `json:"duration"`
	// Expires is Renewed + Duration: after it another holder may take the Lease over.
	Expires time.Time `json:"expires"`
	// Transitions counts how often the Lease changed holder.
	Transitions int32 `json:"transitions"`
}

// Info returns what the Lease knows.
func (l *Lease) Info() LeaseInfo {
	l.mu.Lock()
	defer l.mu.Unlock()
	return LeaseInfo{Name: l.store.LeaseName(), Holder: l.holder, Acquired: l.acquired, Renewed: l.renewed,
		Duration: l.duration, Expires: l.renewed.Add(l.duration), Transitions: l.transitions}
}

// String describes the Lease for logs.
func (l *Lease) String() string {
	i := l.Info()
	return fmt.Sprintf("lease %s/%s held by %q until %s", l.store.namespace, i.Name, i.Holder, i.Expires.UTC().Format(time.RFC3339))
}

// leaseSeconds rounds a duration up to whole seconds (the Lease's unit), at least one.
func leaseSeconds(d time.Duration) int32 {
	s := int32((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// view reads the holder fields of a Lease object.
func view(o *coordinationv1.Lease) (holder string, acquired, renewed time.Time, d time.Duration, transitions int32) {
	if o.Spec.HolderIdentity != nil {
		holder = *o.Spec.HolderIdentity
	}
	if o.Spec.AcquireTime != nil {
		acquired = o.Spec.AcquireTime.Time
	}
	renewed = acquired
	if o.Spec.RenewTime != nil {
		renewed = o.Spec.RenewTime.Time
	}
	if o.Spec.LeaseDurationSeconds != nil {
		d = time.Duration(*o.Spec.LeaseDurationSeconds) * time.Second
	}
	if o.Spec.LeaseTransitions != nil {
		transitions = *o.Spec.LeaseTransitions
	}
	return holder, acquired, renewed, d, transitions
}

func (l *Lease) load(o *coordinationv1.Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.holder, l.acquired, l.renewed, l.duration, l.transitions = view(o)
}

func (s *Store) getLease(ctx context.Context) (*coordinationv1.Lease, error) {
	var o *coordinationv1.Lease
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		o, err = s.client.CoordinationV1().Leases(s.namespace).Get(ctx, s.LeaseName(), metav1.GetOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get lease %s/%s: %w", s.namespace, s.LeaseName(), s.denied(err, "get", "leases.coordination.k8s.io"))
	}
	return o, err
}

func (s *Store) updateLease(ctx context.Context, o *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	var out *coordinationv1.Lease
	err := s.call(ctx, func(ctx context.Context) error {
		var err error
		out, err = s.client.CoordinationV1().Leases(s.namespace).Update(ctx, o, metav1.UpdateOptions{FieldManager: s.fieldManager})
		return err
	})
	if err != nil && !apierrors.IsConflict(err) {
		return nil, fmt.Errorf("update lease %s/%s: %w", s.namespace, o.Name, s.denied(err, "update", "leases.coordination.k8s.io"))
	}
	return out, err
}

// TryAcquire tries to take the cluster's run Lease for holder (an invocation's unique ID) for d
// (rounded up to whole seconds). acquired is false, with a nil error, when another holder's Lease
// has not expired: the cluster is already being worked on. A Lease whose holder stopped renewing
// is taken over once Renewed + Duration has passed by the Store's clock; a free (released) Lease
// is taken at once; holder's own Lease is renewed. Of concurrent callers at most one acquires.
func (s *Store) TryAcquire(ctx context.Context, holder string, d time.Duration) (_ *Lease, acquired bool, _ error) {
	if holder == "" {
		return nil, false, errors.New("acquire lease: empty holder")
	}
	if d <= 0 {
		return nil, false, fmt.Errorf("acquire lease: duration %s must be positive", d)
	}
	secs := leaseSeconds(d)
	for range maxConflicts {
		o, err := s.getLease(ctx)
		now := metav1.NewMicroTime(s.clock.Now())
		if apierrors.IsNotFound(err) {
			zero := int32(0)
			o = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: s.LeaseName(), Namespace: s.namespace, Labels: s.labels("lease")},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &secs,
					AcquireTime: &now, RenewTime: &now, LeaseTransitions: &zero},
			}
			var created *coordinationv1.Lease
			err = s.create(ctx, "leases.coordination.k8s.io", o.Name, func(ctx context.Context) error {
				var err error
				created, err = s.client.CoordinationV1().Leases(s.namespace).Create(ctx, o, metav1.CreateOptions{FieldManager: s.fieldManager})
				return err
			})
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return nil, false, err
			}
			l := &Lease{store: s, me: holder}
			l.load(created)
			return l, true, nil
		}
		if err != nil {
			return nil, false, err
		}
		cur, _, renewed, dur, transitions := view(o)
		if cur != "" && cur != holder && !s.clock.Now().After(renewed.Add(dur)) {
			l := &Lease{store: s}
			l.load(o)
			return l, false, nil
		}
		o = o.DeepCopy()
		if cur != holder {
			o.Spec.AcquireTime = &now
			if cur != "" {
				transitions++
			}
			o.Spec.LeaseTransitions = &transitions
		}
		o.Spec.HolderIdentity, o.Spec.RenewTime, o.Spec.LeaseDurationSeconds = &holder, &now, &secs
		updated, err := s.updateLease(ctx, o)
		if apierrors.IsConflict(err) {
			continue // another caller moved first: judge its Lease
		}
		if err != nil {
			return nil, false, err
		}
		l := &Lease{store: s, me: holder}
		l.load(updated)
		return l, true, nil
	}
	return nil, false, fmt.Errorf("acquire lease %s/%s: still conflicting after %d attempts", s.namespace, s.LeaseName(), maxConflicts)
}

// Renew extends an acquired Lease by its duration from now. It returns an error wrapping
// ErrLeaseLost when another holder took the Lease over: the caller must stop working.
func (l *Lease) Renew(ctx context.Context) error {
	s, holder := l.store, l.me
	if holder == "" {
		return fmt.Errorf("renew lease %s/%s: %w: held by %q, not acquired by this caller", s.namespace, s.LeaseName(), ErrLeaseLost, l.Info().Holder)
	}
	for range maxConflicts {
		o, err := s.getLease(ctx)
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("renew lease %s/%s: %w: it was deleted", s.namespace, s.LeaseName(), ErrLeaseLost)
		}
		if err != nil {
			return err
		}
		if cur, _, _, _, _ := view(o); cur != holder {
			l.load(o)
			return fmt.Errorf("renew lease %s/%s: %w: now held by %q", s.namespace, s.LeaseName(), ErrLeaseLost, cur)
		}
		o = o.DeepCopy()
		now := metav1.NewMicroTime(s.clock.Now())
		o.Spec.RenewTime = &now
		updated, err := s.updateLease(ctx, o)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return err
		}
		l.load(updated)
		return nil
	}
	return fmt.Errorf("renew lease %s/%s: still conflicting after %d attempts", s.namespace, s.LeaseName(), maxConflicts)
}

// Release frees an acquired Lease so that the next invocation need not wait for it to expire. It
// does nothing when another holder has taken the Lease over meanwhile.
func (l *Lease) Release(ctx context.Context) error {
	s, holder := l.store, l.me
	if holder == "" {
		return fmt.Errorf("release lease %s/%s: %w: held by %q, not acquired by this caller", s.namespace, s.LeaseName(), ErrLeaseLost, l.Info().Holder)
	}
	for range maxConflicts {
		o, err := s.getLease(ctx)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return err
		}
		if cur, _, _, _, _ := view(o); cur != holder {
			return nil
		}
		o = o.DeepCopy()
		o.Spec.HolderIdentity = nil
		updated, err := s.updateLease(ctx, o)
		if apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return err
		}
		l.load(updated)
		return nil
	}
	return fmt.Errorf("release lease %s/%s: still conflicting after %d attempts", s.namespace, s.LeaseName(), maxConflicts)
}

// CurrentLease returns the cluster's run Lease as it stands, for status displays: found is false
// when there is none. The holder is running a job only while Expires is in the future and Holder
// is not empty (a released Lease has no holder).
func (s *Store) CurrentLease(ctx context.Context) (info LeaseInfo, found bool, err error) {
	o, err := s.getLease(ctx)
	if apierrors.IsNotFound(err) {
		return LeaseInfo{Name: s.LeaseName()}, false, nil
	}
	if err != nil {
		return LeaseInfo{}, false, err
	}
	holder, acquired, renewed, d, transitions := view(o)
	return LeaseInfo{Name: s.LeaseName(), Holder: holder, Acquired: acquired, Renewed: renewed, Duration: d,
		Expires: renewed.Add(d), Transitions: transitions}, true, nil
}
